"""Conv weights in the layout the Triton kernels read: [K, Cout, Cin] contiguous, so that a weight
tile [BLOCK_CO, BLOCK_CI] is read along Cin with unit stride (coalesced, and K-major for the dot)
instead of every K-th element. Inside ops.weight_cache() a packed copy is kept while its weight is
alive and unchanged, under the rule the CPU weight cache follows (ops/weight_cache.py)."""
from __future__ import annotations

import weakref

import torch

from ..weight_cache import active as cache_active

_kept: dict = {}  # id(weight) -> (what the copy was made from, the copy)


def packed(weight: torch.Tensor, transposed: bool) -> torch.Tensor:
    """weight [Cout, Cin, K] (transposed: [Cin, Cout, K]) -> [K, Cout, Cin] contiguous."""
    if not cache_active():
        return _pack(weight, transposed)
    try:
        made_from = (weight._version, weight.data_ptr(), tuple(weight.shape), weight.stride(), weight.dtype,
                     weight.device, transposed)
    except RuntimeError:  # an inference-mode tensor has no version counter: nothing says it is unchanged
        return _pack(weight, transposed)
    kept = _kept.get(id(weight))
    if kept is not None and kept[0] == made_from:
        return kept[1]
    if kept is None:
        weakref.finalize(weight, _kept.pop, id(weight), None)
    copy = _pack(weight, transposed)
    _kept[id(weight)] = (made_from, copy)
    return copy


def _pack(weight, transposed):
    order = (2, 1, 0) if transposed else (2, 0, 1)
    return weight.detach().permute(*order).contiguous()
