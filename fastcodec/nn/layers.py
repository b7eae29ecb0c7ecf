"""Causal conv layers: nn.Module wrappers of the fused ops, with their parameters and backend choice.

Each layer calls `fastcodec.ops` only, so the same network runs on every backend; `backend` is an
attribute (set it on a whole model with `fastcodec.nn.set_backend`). Shapes: x [B, C, T].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .. import ops
from .precision import cast_for_autocast as _cast


def _init_conv(weight: torch.Tensor, bias: torch.Tensor | None, fan_in: float, activation):
    # Signal-preserving (He) initialisation: variance 2/fan_in before an activation, 1/fan_in for a
    # linear layer, zero bias. PyTorch's default conv init shrinks the variance about 3x per layer,
    # so through the codec's ~10 non-residual layers the initial output is the biases alone and
    # training sits on an "output silence" plateau for hundreds of steps (benchmarks/RESULTS.md,
    # "Where the code's rules come from").
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

    def extra_repr(self):
        cin, cout, k = self.weight.shape
        return f"{cin}, {cout}, kernel_size={k}, stride={self.stride}, activation={self.activation}"
