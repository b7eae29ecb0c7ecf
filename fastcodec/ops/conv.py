"""The causal convs (the codec's layers) and the critics' grouped conv, each dispatching its
backend through dispatch.choose. Shapes and semantics: the package docstring and each function's."""
from __future__ import annotations

import contextlib

from . import _checks, _extension, dispatch, tuning
from ._run import compiled, wants_grad
from .reference import (
    DEFAULT_NEGATIVE_SLOPE,
    causal_conv1d_ref,
    causal_conv_transpose1d_ref,
    grouped_conv1d_ref,
)

_B = tuning.size_bucket


def causal_conv1d(x, weight, bias=None, *, stride=1, dilation=1, activation=None, residual=None,
                  backend="auto", negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """Causal conv with a fused epilogue: y = act(conv(pad_left(x, (K-1)*dilation)) + bias) + residual.

    x: [B, Cin, T], weight: [Cout, Cin, K], bias: [Cout] -> y: [B, Cout, ceil(T/stride)];
    y[..., t] depends on x[..., :t*stride+1] only. activation: None | 'elu' | 'leaky_relu'
    (negative_slope, 0.3 by default) | 'silu' | 'snake' (alpha: [Cout]); residual:
    [B, Cout, ceil(T/stride)], added after the activation. Non-contiguous inputs are accepted.
    """
    _checks.conv1d(x, weight, bias, stride, dilation, activation, residual, negative_slope, alpha)
    args = (x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual)
    key = lambda: (x.shape[1], weight.shape[0], weight.shape[2], stride, dilation, activation,  # noqa: E731
                   residual is not None, x.shape[0], _B(x.shape[2]), wants_grad(x, weight, bias, alpha, residual))
    be = dispatch.choose("causal_conv1d", backend, x.device, x.dtype, key=key, run=_conv1d_on, args=args)
    return _conv1d_on(be, *args)


def _conv1d_on(be, x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual):
    if be == "torch":
        return causal_conv1d_ref(x, weight, bias, stride=stride, dilation=dilation, activation=activation,
                                 residual=residual, negative_slope=negative_slope, alpha=alpha)
    return compiled("causal_conv1d", be)(x, weight, bias, stride, dilation, activation or "none",
                                          float(negative_slope), alpha, residual)


def causal_conv_transpose1d(x, weight, bias=None, *, stride, activation=None, backend="auto",
                            negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """Causal transposed conv (upsampling) with a fused activation.

    x: [B, Cin, T], weight: [Cin, Cout, K] (PyTorch's layout), bias: [Cout] -> y: [B, Cout, T*stride]:
    the full transposed conv with its last K-stride samples trimmed, so no output depends on input
    that has not arrived. activation as in causal_conv1d.
    """
    _checks.conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha)
    args = (x, weight, bias, stride, activation, negative_slope, alpha)
    key = lambda: (x.shape[1], weight.shape[1], weight.shape[2], stride, activation, x.shape[0],  # noqa: E731
                   _B(x.shape[2]), wants_grad(x, weight, bias, alpha))
    be = dispatch.choose("causal_conv_transpose1d", backend, x.device, x.dtype, shape={"T": x.shape[2]}, key=key,
                         run=_conv_transpose1d_on, args=args)
    return _conv_transpose1d_on(be, *args)


def _conv_transpose1d_on(be, x, weight, bias, stride, activation, negative_slope, alpha):
    if be == "torch":
        return causal_conv_transpose1d_ref(x, weight, bias, stride=stride, activation=activation,
                                           negative_slope=negative_slope, alpha=alpha)
    be, _, variant = be.partition(":")  # "cpp:gemm": a variant the measured 'auto' chose (dispatch.VARIANTS)
    with _extension.transposed_variant(variant) if variant else contextlib.nullcontext():
        return compiled("causal_conv_transpose1d", be)(x, weight, bias, stride, activation or "none",
                                                        float(negative_slope), alpha)


def grouped_conv1d(x, weight, bias=None, *, stride=1, padding=0, groups=1, backend="auto"):
    """A plain grouped conv zero-padded by `padding` on both sides (F.conv1d's semantics, no
    dilation): the training critics' layers. x: [B, Cin, T], weight: [Cout, Cin/groups, K],
    bias: [Cout] -> y: [B, Cout, (T + 2*padding - K) // stride + 1]. Differentiable in x, weight
    and bias. Backends: torch, and cpp for fp32 CPU tensors (the static choice there; the
    measured one per shape: see benchmarks/RESULTS.md for where oneDNN wins).
    """
    _checks.grouped_conv1d(x, weight, bias, stride, padding, groups)
    args = (x, weight, bias, stride, padding, groups)
    key = lambda: (x.shape[1], weight.shape[0], groups, weight.shape[2], stride, padding, x.shape[0],  # noqa: E731
                   _B(x.shape[2]), wants_grad(x, weight, bias))
    be = dispatch.choose("grouped_conv1d", backend, x.device, x.dtype, key=key, run=_grouped_conv1d_on, args=args)
    return _grouped_conv1d_on(be, *args)


def _grouped_conv1d_on(be, x, weight, bias, stride, padding, groups):
    if be == "torch":
        return grouped_conv1d_ref(x, weight, bias, stride=stride, padding=padding, groups=groups)
    return compiled("grouped_conv1d", be)(x, weight, bias, stride, padding, groups)
