"""A scope with torch.backends.cudnn.allow_tf32 set, restored after: the switch the fp32 convs follow
(cuDNN's, and the Triton and CUDA kernels', which read it per call)."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def cudnn_tf32(allowed: bool):
    import torch

    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved
