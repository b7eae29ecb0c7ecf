"""Which backends run on this machine at all ('torch' | 'cpp' | 'cuda' | 'triton'), and why not.

What each backend takes per op, and the choice for a call, are in dispatch.py.
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
def env(name: str) -> str:
    """An environment variable ('' if unset). Under torch.compile it is read once, when the graph
    is traced (torch 2.4's dynamo cannot trace os.environ itself)."""
    return os.environ.get(name, "")


def triton_interpreted() -> bool:
    """True when Triton runs kernels on CPU tensors through its interpreter (TRITON_INTERPRET=1)."""
    return env("TRITON_INTERPRET") not in ("", "0")


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
