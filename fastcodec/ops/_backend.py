"""Which backend runs an op: 'torch' | 'cpp' | 'cuda' | 'triton', or 'auto'.

Order of say: the `backend=` argument, then the FASTCODEC_BACKEND environment variable (consulted
only when the argument is 'auto'), then the automatic pick for the tensor's device and dtype.
A backend that was named and cannot run raises BackendUnavailable with the reason; only 'auto'
ever chooses, and it never silently swaps a named backend for another.
"""
from __future__ import annotations

import os

import torch

from . import _extension

BACKENDS = ("torch", "cpp", "cuda", "triton")
ENV_VAR = "FASTCODEC_BACKEND"

# The C++ CUDA kernels compile in CI but have not yet run on a GPU; until a GPU run of
# benchmarks/gpu_suite.sh verifies them, 'auto' on a GPU prefers Triton (proven on CPU by the
# interpreter) and otherwise the torch reference. Flip this only with that evidence in RESULTS.md.
CUDA_KERNELS_VERIFIED_ON_GPU = False

_DTYPES = {
    "torch": None,  # anything PyTorch itself supports
    "cpp": (torch.float32, torch.float64),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "triton": (torch.float32, torch.float16, torch.bfloat16),
}


class BackendUnavailable(RuntimeError):
    """A named backend cannot run here (not built, no device, unsupported dtype...)."""


_triton_probe: list = []  # [error or None] once probed; a plain cache that torch.compile traces cleanly


def _triton_import_error() -> str | None:
    if not _triton_probe:
        try:
            import triton  # noqa: F401

            _triton_probe.append(None)
        except Exception as exc:
            _triton_probe.append(f"triton is not importable ({type(exc).__name__}: {exc})")
    return _triton_probe[0]


@torch.compiler.assume_constant_result
def _env(name: str) -> str:
    """An environment variable ('' if unset). Under torch.compile it is read once, when the graph
    is traced (torch 2.4's dynamo cannot trace os.environ itself)."""
    return os.environ.get(name, "")


def triton_interpreted() -> bool:
    """True when Triton runs kernels on CPU tensors through its interpreter (TRITON_INTERPRET=1)."""
    return _env("TRITON_INTERPRET") not in ("", "0")


def status(backend: str, device_type: str) -> tuple[bool, str]:
    """(usable, reason) of a backend for tensors on `device_type` ('cpu' or 'cuda')."""
    if backend == "torch":
        if device_type == "cuda" and not torch.cuda.is_available():
            return False, "no GPU visible"
        return True, "PyTorch reference"
    if backend == "cpp":
        if device_type != "cpu":
            return False, f"the cpp backend runs on CPU tensors, these are on {device_type}"
        return _extension.cpp_status()
    if backend == "cuda":
        if device_type != "cuda":
            return False, f"the cuda backend runs on CUDA tensors, these are on {device_type}"
        return _extension.cuda_status()
    if backend == "triton":
        err = _triton_import_error()
        if err:
            return False, err
        if device_type == "cuda":
            return (True, "") if torch.cuda.is_available() else (False, "no GPU visible")
        if device_type == "cpu":
            if triton_interpreted():
                return True, "TRITON_INTERPRET=1 (interpreter, slow: for tests)"
            return False, "Triton runs on CUDA tensors; CPU tensors only under TRITON_INTERPRET=1"
        return False, f"Triton does not run on {device_type} tensors"
    raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKENDS}")


def _supports_dtype(backend: str, dtype: torch.dtype) -> bool:
    allowed = _DTYPES[backend]
    return allowed is None or dtype in allowed


def _auto(device_type: str, dtype: torch.dtype, limits=None) -> str:
    if device_type == "cpu":
        order = ("cpp",)
    elif device_type == "cuda":
        order = ("triton", "cuda") if CUDA_KERNELS_VERIFIED_ON_GPU else ("triton",)
    else:
        order = ()
    for name in order:
        if _supports_dtype(name, dtype) and status(name, device_type)[0] and not (limits is not None and limits(name)):
            return name
    return "torch"


def resolve(backend: str, device: torch.device, dtype: torch.dtype, limits=None) -> str:
    """The backend that will run an op on tensors of `device` and `dtype`.

    limits(backend) -> reason or None says when a backend cannot take this call's shapes: 'auto'
    passes over it, and naming it raises the reason.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    requested = backend
    if requested == "auto":
        requested = _env(ENV_VAR).strip() or "auto"
        source = f"{ENV_VAR}={requested}"
    else:
        source = f"backend={requested!r}"
    if requested == "auto":
        return _auto(device.type, dtype, limits)
    if requested not in BACKENDS:
        raise ValueError(f"{source}: unknown backend; expected 'auto' or one of {', '.join(BACKENDS)}")
    ok, why = status(requested, device.type)
    if not ok:
        raise BackendUnavailable(f"{source} cannot run here: {why}")
    if not _supports_dtype(requested, dtype):
        names = ", ".join(str(d).removeprefix("torch.") for d in _DTYPES[requested])
        raise BackendUnavailable(f"{source} supports {names}; got {str(dtype).removeprefix('torch.')}")
    why = limits(requested) if limits is not None else None  # (torch 2.4 cannot compile `if limits`)
    if why:
        raise BackendUnavailable(f"{source} cannot take this call: {why}")
    return requested
