"""What the Triton launchers share."""
import contextlib

import torch


def precision_for(dtype: torch.dtype) -> str:
    """tl.dot's input_precision. fp32 inputs use exact fp32 products ('ieee'): Triton's default,
    TF32, would miss the fp32 tolerance. fp16/bf16 products are exact in the fp32 accumulator and
    run on tensor cores whatever this says."""
    return "ieee" if dtype == torch.float32 else "tf32"


def device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device; make it the tensor's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def triton_version() -> tuple:
    """(major, minor) of the installed Triton."""
    import triton

    return tuple(int(p) for p in triton.__version__.split("+")[0].split(".")[:2])
