"""What the ops share to run a call: the compiled implementation of an op on a backend, and
whether a call wants gradients."""
from __future__ import annotations

import torch


def compiled(name: str, backend: str):
    """The compiled implementation of op `name`: the C++ library dispatches cpp/cuda by device."""
    if backend == "triton":
        from .triton import OPS

        return OPS[name]
    return getattr(torch.ops.fastcodec, name)


def wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
