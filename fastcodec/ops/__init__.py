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

from . import _checks, dispatch, tuning  # noqa: F401  (tuning: the measured choices, public)
from . import _extension  # noqa: F401  (loads fastcodec._C; registers its fake kernels and autograd)
from ._backend import BACKENDS, BackendUnavailable
from .conv import causal_conv1d, causal_conv_transpose1d, grouped_conv1d
from ._run import wants_grad
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
from .search import rvq_decode, rvq_encode, rvq_residuals, vq_nearest
from .streaming import (
    causal_conv1d_stream,
    causal_conv_transpose1d_stream,
    conv1d_window,
    conv_transpose1d_step,
    native_stream_chain,
    stream_kernel_fits,
)
from .weight_cache import weight_cache

__all__ = [
    "ACTIVATIONS", "BACKENDS", "BackendUnavailable", "DEFAULT_NEGATIVE_SLOPE", "SEARCH_MODES",
    "causal_conv1d", "causal_conv_transpose1d", "vq_nearest", "rvq_encode", "rvq_decode",
    "causal_conv1d_ref", "causal_conv_transpose1d_ref", "vq_nearest_ref", "rvq_encode_ref", "rvq_decode_ref",
    "rvq_residuals", "rvq_residuals_ref", "grouped_conv1d", "grouped_conv1d_ref",
    "causal_conv1d_stream", "causal_conv_transpose1d_stream",
    "stream_kernel_fits", "conv1d_window", "conv_transpose1d_step", "native_stream_chain", "wants_grad",
    "resolve_backend", "weight_cache", "tuning",
]

SEARCH_MODES = _checks.SEARCH_MODES


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """The backend a causal conv on `tensor` (its device and dtype) would use when asked for
    `backend`, by the static rule; BackendUnavailable when a named one cannot run there."""
    return dispatch.choose("causal_conv1d", backend, tensor.device, tensor.dtype)
