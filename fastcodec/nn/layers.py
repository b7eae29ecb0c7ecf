"""Causal conv layers: nn.Module wrappers of the fused ops, with their parameters and backend choice.

Each layer calls `fastcodec.ops` only, so the same network runs on every backend; `backend` is an
attribute (set it on a whole model with `fastcodec.nn.set_backend`). Shapes: x [B, C, T].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops


def autocast_dtype(x: torch.Tensor):
    """The dtype autocast would run a conv in on x's device, or None when autocast is off there.

    The fused ops are custom ops, which autocast does not cast; layers cast for it so a model under
    `torch.autocast` computes its convs in the low-precision dtype as nn.Conv1d would.
    """
    dev = x.device.type
    if dev not in ("cpu", "cuda"):
        return None
    if _AUTOCAST_BY_DEVICE:
        return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
    if dev == "cpu":  # torch < 2.4 spelling
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


try:  # torch >= 2.4 takes a device type
    torch.is_autocast_enabled("cpu")
    _AUTOCAST_BY_DEVICE = True
except TypeError:
    _AUTOCAST_BY_DEVICE = False


def _cast(x, *tensors):
    """x and the layer's parameters in the autocast dtype (when autocast is on), else as they are."""
    dt = autocast_dtype(x)
    if dt is None:
        dt = x.dtype
    return [None if t is None else t.to(dt) for t in (x,) + tensors]


def _init_conv(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: float, activation):
    # Signal-preserving (He) initialisation: variance 2/fan_in before an activation, 1/fan_in for a
    # linear layer, zero bias. PyTorch's default conv init shrinks the variance about 3x per layer,
    # and through the codec's ~10 non-residual layers the initial output is the biases alone: the
    # model then sits for hundreds of steps on the "output silence" plateau (measured on the tiny
    # preset: with this init the waveform loss leaves it in ~400 steps, with the default not in 800).
    gain = math.sqrt(2.0) if activation else 1.0
    nn.init.normal_(weight, 0.0, gain / math.sqrt(max(fan_in, 1.0)))
    if bias is not None:
        nn.init.zeros_(bias)


class CausalConv1d(nn.Module):
    """y = act(causal_conv(x) + bias) + residual. x: [B, Cin, T] -> [B, Cout, ceil(T/stride)]."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, dilation=1, activation=None,
                 negative_slope=ops.DEFAULT_NEGATIVE_SLOPE, bias=True, backend="auto"):
        super().__init__()
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation must be one of {ops.ACTIVATIONS}, got {activation!r}")
        self.stride, self.dilation, self.activation = stride, dilation, activation
        self.negative_slope, self.backend = negative_slope, backend
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.alpha = nn.Parameter(torch.ones(out_channels)) if activation == "snake" else None
        _init_conv(self.weight, self.bias, in_channels * kernel_size, activation)

    def forward(self, x, residual=None):
        x, w, b, alpha, residual = _cast(x, self.weight, self.bias, self.alpha, residual)
        return ops.causal_conv1d(x, w, b, stride=self.stride, dilation=self.dilation, activation=self.activation,
                                 residual=residual, negative_slope=self.negative_slope, alpha=alpha,
                                 backend=self.backend)

    def stream(self, x, state=None, residual=None):
        """One chunk of a stream: (y, state); see ops.causal_conv1d_stream."""
        x, w, b, alpha, residual = _cast(x, self.weight, self.bias, self.alpha, residual)
        return ops.causal_conv1d_stream(x, w, b, state=state, stride=self.stride, dilation=self.dilation,
                                        activation=self.activation, residual=residual,
                                        negative_slope=self.negative_slope, alpha=alpha, backend=self.backend)

    def streamer(self) -> ops.CausalConv1dStream:
        """A prepared stream of this layer holding its own state (in the parameters' dtype)."""
        return ops.CausalConv1dStream(self.weight, self.bias, stride=self.stride, dilation=self.dilation,
                                      activation=self.activation, backend=self.backend,
                                      negative_slope=self.negative_slope, alpha=self.alpha)

    def extra_repr(self):
        cout, cin, k = self.weight.shape
        return (f"{cin}, {cout}, kernel_size={k}, stride={self.stride}, dilation={self.dilation}, "
                f"activation={self.activation}")


class CausalConvTranspose1d(nn.Module):
    """Causal upsampling: x [B, Cin, T] -> act(...) [B, Cout, T*stride]; weight [Cin, Cout, K]."""

    def __init__(self, in_channels, out_channels, kernel_size, *, stride, activation=None,
                 negative_slope=ops.DEFAULT_NEGATIVE_SLOPE, bias=True, backend="auto"):
        super().__init__()
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"activation must be one of {ops.ACTIVATIONS}, got {activation!r}")
        self.stride, self.activation = stride, activation
        self.negative_slope, self.backend = negative_slope, backend
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.alpha = nn.Parameter(torch.ones(out_channels)) if activation == "snake" else None
        # Each output sample sums in_channels * kernel_size / stride taps.
        _init_conv(self.weight, self.bias, in_channels * kernel_size / stride, activation)

    def forward(self, x):
        x, w, b, alpha = _cast(x, self.weight, self.bias, self.alpha)
        return ops.causal_conv_transpose1d(x, w, b, stride=self.stride, activation=self.activation,
                                           negative_slope=self.negative_slope, alpha=alpha, backend=self.backend)

    def stream(self, x, state=None):
        """One chunk of a stream: (y [B, Cout, T*stride], state); see ops.causal_conv_transpose1d_stream."""
        x, w, b, alpha = _cast(x, self.weight, self.bias, self.alpha)
        return ops.causal_conv_transpose1d_stream(x, w, b, state=state, stride=self.stride,
                                                  activation=self.activation, negative_slope=self.negative_slope,
                                                  alpha=alpha, backend=self.backend)

    def streamer(self) -> ops.CausalConvTranspose1dStream:
        """A prepared stream of this layer holding its own state (in the parameters' dtype)."""
        return ops.CausalConvTranspose1dStream(self.weight, self.bias, stride=self.stride, activation=self.activation,
                                               backend=self.backend, negative_slope=self.negative_slope,
                                               alpha=self.alpha)

    def extra_repr(self):
        cin, cout, k = self.weight.shape
        return f"{cin}, {cout}, kernel_size={k}, stride={self.stride}, activation={self.activation}"
