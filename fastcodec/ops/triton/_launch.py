"""What the Triton launchers share."""
import contextlib

import torch


def precision_for(dtype: torch.dtype) -> str:
    """tl.dot's input_precision for the searches. fp32 inputs use exact fp32 products ('ieee'): a
    code must not depend on TF32 rounding (fast mode is the search's TF32 path). fp16/bf16 products
    are exact in the fp32 accumulator and run on tensor cores whatever this says."""
    return "ieee" if dtype == torch.float32 else "tf32"


def conv_precision(dtype: torch.dtype) -> str:
    """tl.dot's input_precision for the convs: fp32 follows torch.backends.cudnn.allow_tf32 (on by
    default), the flag under which PyTorch's own convs run fp32 on TF32 tensor cores."""
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"


def needs_int64(*extents) -> bool:
    """Whether offsets within one batch item can pass int32: extents are (size, stride) pairs of
    the dimensions a kernel indexes inside an item (the batch offset is int64 already)."""
    return sum((size - 1) * abs(stride) for size, stride in extents if size > 0) >= 2 ** 31 - 1


def device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device; make it the tensor's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def triton_version() -> tuple:
    """(major, minor) of the installed Triton."""
    import triton

    return tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:2])
