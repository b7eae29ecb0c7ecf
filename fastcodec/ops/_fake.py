"""Fake (meta) kernels: output shapes and dtypes only, so torch.compile traces the ops without
graph breaks. Registered for every op namespace that implements the op schemas (the C++ library
'fastcodec' and the Triton library 'fastcodec_triton')."""
from __future__ import annotations

import torch


def _conv1d(x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual):
    return x.new_empty(x.shape[0], weight.shape[0], (x.shape[2] + stride - 1) // stride)


def _conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha):
    return x.new_empty(x.shape[0], weight.shape[1], x.shape[2] * stride)


def _vq_nearest(x, codebook):
    return x.new_empty(x.shape[0], dtype=torch.int64), x.new_empty(x.shape[0])


def _rvq_encode(x, codebooks, n_q):
    return x.new_empty(x.shape[0], n_q, dtype=torch.int64), torch.empty_like(x)


def _rvq_residuals(x, codebooks, n_q):
    return x.new_empty(x.shape[0], n_q, dtype=torch.int64), x.new_empty(x.shape[0], n_q + 1, x.shape[1])


def _rvq_decode(codes, codebooks):
    return codebooks.new_empty(codes.shape[0], codebooks.shape[2])


FAKES = {
    "causal_conv1d": _conv1d,
    "causal_conv_transpose1d": _conv_transpose1d,
    "vq_nearest": _vq_nearest,
    "rvq_encode": _rvq_encode,
    "rvq_residuals": _rvq_residuals,
    "rvq_decode": _rvq_decode,
    # The Triton library's fast-mode searches (fp32 only; see triton/vq.py): same schemas.
    "vq_nearest_fast": _vq_nearest,
    "rvq_encode_fast": _rvq_encode,
    "rvq_residuals_fast": _rvq_residuals,
}


def conv1d_window(x, weight, bias, stride, dilation, pad, out_len, activation, negative_slope, alpha, residual):
    """The C++ library's CPU-only streaming kernel (not in FAKES: the Triton library lacks it)."""
    return x.new_empty(x.shape[0], weight.shape[0], out_len)


def conv_transpose1d_stream(x, weight, bias, tail, stride, activation, negative_slope, alpha):
    """The C++ library's CPU-only streaming step of a transposed conv (not in FAKES either)."""
    B, Cout, K = x.shape[0], weight.shape[1], weight.shape[2]
    return x.new_empty(B, Cout, x.shape[2] * stride), x.new_empty(B, Cout, max(K - stride, 0))


def grouped_conv1d(x, weight, bias, stride, padding, groups):
    """The C++ library's CPU-only grouped conv for the critics, and its two gradients (not in FAKES)."""
    return x.new_empty(x.shape[0], weight.shape[0], (x.shape[2] + 2 * padding - weight.shape[2]) // stride + 1)


def grouped_conv1d_input_grad(gy, weight, T, stride, padding, groups):
    return gy.new_empty(gy.shape[0], weight.shape[1] * groups, T)


def grouped_conv1d_weight_grad(gy, x, K, stride, padding, groups):
    return gy.new_empty(gy.shape[1], x.shape[1] // groups, K)


def conv1d_weight_grad(gz, x, K, dilation, pad):
    """The C++ library's CPU-only weight gradient of a stride-1 conv (not in FAKES)."""
    return gz.new_empty(gz.shape[1], x.shape[1], K)


def register(namespace: str, ops=None):
    lib = getattr(torch.ops, namespace)
    for name, fn in FAKES.items():
        if (ops is None or name in ops) and hasattr(lib, name):  # (the fast searches are Triton's only)
            torch.library.register_fake(f"{namespace}::{name}")(fn)
