"""The Triton backend: kernels in conv.py and vq.py, registered here as torch custom ops
(namespace 'fastcodec_triton', same schemas as the C++ ops) with the shared fake kernels and
autograd, so torch.compile and training treat every backend alike.

Importing this module imports triton; fastcodec.ops only does so when the triton backend is used.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _autograd, _fake
from . import conv, vq

_NS = "fastcodec_triton"


@torch.library.custom_op(f"{_NS}::causal_conv1d", mutates_args=())
def _causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, dilation: int, activation: str,
                   negative_slope: float, alpha: Optional[Tensor], residual: Optional[Tensor]) -> Tensor:
    return conv.causal_conv1d(x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual)


@torch.library.custom_op(f"{_NS}::causal_conv_transpose1d", mutates_args=())
def _causal_conv_transpose1d(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: int, activation: str,
                             negative_slope: float, alpha: Optional[Tensor]) -> Tensor:
    return conv.causal_conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha)


@torch.library.custom_op(f"{_NS}::vq_nearest", mutates_args=())
def _vq_nearest(x: Tensor, codebook: Tensor) -> Tuple[Tensor, Tensor]:
    return vq.vq_nearest(x, codebook)


@torch.library.custom_op(f"{_NS}::rvq_encode", mutates_args=())
def _rvq_encode(x: Tensor, codebooks: Tensor, n_q: int) -> Tuple[Tensor, Tensor]:
    return vq.rvq_encode(x, codebooks, n_q)


@torch.library.custom_op(f"{_NS}::rvq_residuals", mutates_args=())
def _rvq_residuals(x: Tensor, codebooks: Tensor, n_q: int) -> Tuple[Tensor, Tensor]:
    return vq.rvq_residuals(x, codebooks, n_q)


@torch.library.custom_op(f"{_NS}::vq_nearest_fast", mutates_args=())
def _vq_nearest_fast(x: Tensor, codebook: Tensor) -> Tuple[Tensor, Tensor]:
    return vq.vq_nearest(x, codebook, fast=True)


@torch.library.custom_op(f"{_NS}::rvq_encode_fast", mutates_args=())
def _rvq_encode_fast(x: Tensor, codebooks: Tensor, n_q: int) -> Tuple[Tensor, Tensor]:
    return vq.rvq_encode(x, codebooks, n_q, fast=True)


@torch.library.custom_op(f"{_NS}::rvq_residuals_fast", mutates_args=())
def _rvq_residuals_fast(x: Tensor, codebooks: Tensor, n_q: int) -> Tuple[Tensor, Tensor]:
    return vq.rvq_residuals(x, codebooks, n_q, fast=True)


@torch.library.custom_op(f"{_NS}::rvq_decode", mutates_args=())
def _rvq_decode(codes: Tensor, codebooks: Tensor) -> Tensor:
    return vq.rvq_decode(codes, codebooks)


_fake.register(_NS)
_autograd.register(_NS)

OPS = {name: getattr(torch.ops.fastcodec_triton, name) for name in _fake.FAKES}
