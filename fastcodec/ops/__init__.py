"""fastcodec's ops: every op, its semantics and its backends on one screen.

| op                        | shapes                                              | backends                   |
|---------------------------|-----------------------------------------------------|----------------------------|
| causal_conv1d             | x [B,Cin,T], w [Cout,Cin,K] -> [B,Cout,ceil(T/s)]   | torch, cpp, cuda, triton   |
| causal_conv_transpose1d   | x [B,Cin,T], w [Cin,Cout,K] -> [B,Cout,T*s]         | torch, cpp, cuda, triton   |
| vq_nearest                | x [N,D], codebook [K,D] -> index [N], sqdist [N]    | torch, cpp, cuda, triton   |
| rvq_encode                | x [N,D], codebooks [Q,K,D] -> codes [N,n_q], q [N,D]| torch, cpp, cuda, triton   |
| rvq_decode                | codes [N,n_q], codebooks [Q,K,D] -> [N,D]           | torch, cpp, cuda, triton   |
| grouped_conv1d            | x [B,Cin,T], w [Cout,Cin/g,K] -> [B,Cout,T']        | torch, cpp (fp32)          |

Each op has a `*_ref` twin in `reference.py` (the spec). `backend` is 'auto' | 'torch' | 'cpp' |
'cuda' | 'triton'; 'auto' defers to FASTCODEC_BACKEND, then takes the fastest backend measured for
the call's shape on this machine, or the static rule for the device (dispatch.py, tuning.py).
Codes are int64 (torch.long) everywhere, so they index tensors directly.

Searches (vq_nearest, rvq_encode, rvq_residuals) take mode='exact' (default) or 'fast'. Exact
ranks codes by fp32 distances. Fast may rank by lower-precision products first and re-check the
close ones in fp32, with the same guarantee: each chosen code is the nearest, or within 1e-5
(relative) of it. Only the Triton kernels on fp32 inputs (Triton >= 3.2) have a fast path (TF32
candidates on tensor cores, see triton/vq.py); elsewhere 'fast' runs the exact search, already the
fastest there is (AVX2 has no lower-precision FMA; 16-bit inputs use tensor cores exactly; the
CUDA C++ kernels have no fast path yet). Exact stays the default until a GPU run has timed fast
mode and confirmed the accumulator assumption its error bound makes.

grouped_conv1d is not the codec's: it is the training critics' plain (zero-padded, non-causal)
grouped conv, T' = (T + 2*padding - K) // stride + 1. oneDNN runs those at a fraction of its
ungrouped rate on the CPU; on a GPU cuDNN's is what runs.

Gradients: the convs are differentiable in x, weight, bias, residual and snake alpha on every
backend; rvq_decode is differentiable in the codebooks; vq_nearest and rvq_encode are searches and
return no gradient (straight-through estimation belongs to the quantizer module).
"""
from __future__ import annotations

import torch

from . import _checks, dispatch, tuning
from . import _extension  # noqa: F401  (loads fastcodec._C; registers its fake kernels and autograd)
from ._backend import BACKENDS, BackendUnavailable
from .reference import (
    ACTIVATIONS,
    DEFAULT_NEGATIVE_SLOPE,
    causal_conv1d_ref,
    causal_conv_transpose1d_ref,
    grouped_conv1d_ref,
    rvq_decode_ref,
    rvq_encode_ref,
    rvq_residuals_ref,
    vq_nearest_ref,
)

__all__ = [
    "ACTIVATIONS", "BACKENDS", "BackendUnavailable",
    "causal_conv1d", "causal_conv_transpose1d", "vq_nearest", "rvq_encode", "rvq_decode",
    "causal_conv1d_ref", "causal_conv_transpose1d_ref", "vq_nearest_ref", "rvq_encode_ref", "rvq_decode_ref",
    "rvq_residuals", "rvq_residuals_ref", "grouped_conv1d", "grouped_conv1d_ref",
    "resolve_backend", "SEARCH_MODES",
]

SEARCH_MODES = _checks.SEARCH_MODES


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """The backend a causal conv on `tensor` (its device and dtype) would use when asked for
    `backend`, by the static rule; BackendUnavailable when a named one cannot run there."""
    return dispatch.choose("causal_conv1d", backend, tensor.device, tensor.dtype)


def _compiled(name: str, backend: str):
    """The compiled implementation of op `name`: the C++ library dispatches cpp/cuda by device."""
    if backend == "triton":
        from .triton import OPS

        return OPS[name]
    return getattr(torch.ops.fastcodec, name)


def _grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


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
                   residual is not None, x.shape[0], _B(x.shape[2]), _grad(x, weight, bias, alpha, residual))
    be = dispatch.choose("causal_conv1d", backend, x.device, x.dtype, key=key, run=_conv1d_on, args=args)
    return _conv1d_on(be, *args)


def _conv1d_on(be, x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual):
    if be == "torch":
        return causal_conv1d_ref(x, weight, bias, stride=stride, dilation=dilation, activation=activation,
                                 residual=residual, negative_slope=negative_slope, alpha=alpha)
    return _compiled("causal_conv1d", be)(x, weight, bias, stride, dilation, activation or "none",
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
                   _B(x.shape[2]), _grad(x, weight, bias, alpha))
    be = dispatch.choose("causal_conv_transpose1d", backend, x.device, x.dtype, key=key, run=_conv_transpose1d_on,
                         args=args)
    return _conv_transpose1d_on(be, *args)


def _conv_transpose1d_on(be, x, weight, bias, stride, activation, negative_slope, alpha):
    if be == "torch":
        return causal_conv_transpose1d_ref(x, weight, bias, stride=stride, activation=activation,
                                           negative_slope=negative_slope, alpha=alpha)
    return _compiled("causal_conv_transpose1d", be)(x, weight, bias, stride, activation or "none",
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
                   _B(x.shape[2]), _grad(x, weight, bias))
    be = dispatch.choose("grouped_conv1d", backend, x.device, x.dtype, key=key, run=_grouped_conv1d_on, args=args)
    return _grouped_conv1d_on(be, *args)


def _grouped_conv1d_on(be, x, weight, bias, stride, padding, groups):
    if be == "torch":
        return grouped_conv1d_ref(x, weight, bias, stride=stride, padding=padding, groups=groups)
    return _compiled("grouped_conv1d", be)(x, weight, bias, stride, padding, groups)


def vq_nearest(x, codebook, *, backend="auto", mode="exact"):
    """Nearest codeword by squared L2: x [N, D], codebook [K, D] -> (index [N] int64, sqdist [N]).

    Ties go to the lowest index. mode: 'exact' | 'fast' (see the module's docstring). No gradient
    flows through the result.
    """
    _checks.vq(x, codebook)
    _checks.search_mode(mode)
    args = (x, codebook, mode)
    be = dispatch.choose("vq_nearest", backend, x.device, x.dtype, shape={"D": x.shape[1]},
                         key=lambda: (_B(x.shape[0]), codebook.shape[0], x.shape[1], mode), run=_vq_nearest_on,
                         args=args)
    return _vq_nearest_on(be, *args)


def _vq_nearest_on(be, x, codebook, mode):
    if be == "torch":
        with torch.no_grad():
            return vq_nearest_ref(x, codebook)
    return _search_op("vq_nearest", be, mode, x.dtype)(x, codebook)


def _search_op(name, backend, mode, dtype):
    """The compiled search: the fast variant where the backend has one for this dtype."""
    if mode == "fast" and backend == "triton" and dtype == torch.float32:
        from .triton.vq import fast_available

        if fast_available():
            return _compiled(name + "_fast", backend)
    return _compiled(name, backend)


def rvq_encode(x, codebooks, n_q=None, *, backend="auto", mode="exact"):
    """Residual VQ: x [N, D], codebooks [Q, K, D] -> (codes [N, n_q] int64, quantized [N, D]).

    Stage i quantizes what stages < i left; quantized is the stage-ordered sum of the chosen
    codewords (rvq_decode(codes) reproduces it exactly). n_q (default Q) sets the bitrate.
    mode: 'exact' | 'fast' (see the module's docstring). No gradient flows through the result.
    """
    return _rvq_search("rvq_encode", x, codebooks, n_q, backend, mode)


def rvq_residuals(x, codebooks, n_q=None, *, backend="auto", mode="exact"):
    """rvq_encode's search, returning the residual each stage searched and the one left after the
    last: x [N, D], codebooks [Q, K, D] -> (codes [N, n_q] int64, residuals [N, n_q + 1, D]).

    residuals[:, 0] is x and residuals[:, i + 1] the error after i + 1 stages, so a training step
    gets its commitment loss, EMA statistics and the quantized value at any n_q <= n_q
    (x - residuals[:, n]) from one search. Codes equal rvq_encode's in the same mode. No gradient
    flows through the result.
    """
    return _rvq_search("rvq_residuals", x, codebooks, n_q, backend, mode)


_RVQ_REFS = {"rvq_encode": rvq_encode_ref, "rvq_residuals": rvq_residuals_ref}


def _rvq_search(name, x, codebooks, n_q, backend, mode):
    """The checks and backend choice both RVQ searches share."""
    n_q = _checks.rvq(x, codebooks, n_q)
    _checks.search_mode(mode)
    args = (name, x, codebooks, n_q, mode)
    be = dispatch.choose(name, backend, x.device, x.dtype, shape={"D": x.shape[1]},
                         key=lambda: (_B(x.shape[0]), n_q, codebooks.shape[1], x.shape[1], mode), run=_rvq_search_on,
                         args=args)
    return _rvq_search_on(be, *args)


def _rvq_search_on(be, name, x, codebooks, n_q, mode):
    if be == "torch":
        with torch.no_grad():
            return _RVQ_REFS[name](x, codebooks, n_q)
    return _search_op(name, be, mode, x.dtype)(x, codebooks, n_q)


def rvq_decode(codes, codebooks, *, backend="auto"):
    """Sum of the chosen codewords: codes [N, n_q] (any integer dtype, n_q <= Q), codebooks [Q, K, D] -> [N, D].

    Differentiable in the codebooks. Codes outside [0, K) raise ValueError.
    """
    _checks.rvq_decode(codes, codebooks)
    codes = codes.long()
    be = dispatch.choose("rvq_decode", backend, codebooks.device, codebooks.dtype,
                         key=lambda: (_B(codes.shape[0]), codes.shape[1], codebooks.shape[2], _grad(codebooks)),
                         run=_rvq_decode_on, args=(codes, codebooks))
    return _rvq_decode_on(be, codes, codebooks)


def _rvq_decode_on(be, codes, codebooks):
    if be == "torch":
        return rvq_decode_ref(codes, codebooks)
    return _compiled("rvq_decode", be)(codes, codebooks)


# Streaming forms (chunked input, state in and out); defined on top of the ops above.
from .streaming import (  # noqa: E402
    CausalConv1dStream,
    CausalConvTranspose1dStream,
    StreamChain,
    causal_conv1d_stream,
    causal_conv_transpose1d_stream,
)

__all__ += ["causal_conv1d_stream", "causal_conv_transpose1d_stream", "CausalConv1dStream",
            "CausalConvTranspose1dStream", "StreamChain"]

# Inference: keep packed conv weights between calls (streaming); see weight_cache.py.
from .weight_cache import weight_cache  # noqa: E402

__all__ += ["weight_cache"]

# Training support for the quantizer (straight-through, commitment, EMA codebooks, k-means init).
from . import vq_training  # noqa: E402,F401
