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
    """Whether a call with these tensors (None allowed) builds a graph: the native stream steps
    and the C++ kernels without autograd cannot take it."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
