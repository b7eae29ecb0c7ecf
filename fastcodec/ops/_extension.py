"""Loads fastcodec._C (the C++/CUDA kernels) and says why, when it cannot.

Importing fastcodec never fails because of the extension: a missing or mismatched build leaves the
'cpp' and 'cuda' backends unavailable with a reason, and naming one of them raises that reason
together with how to rebuild.
"""
from __future__ import annotations

import contextlib
import os

import torch

REBUILD_HINT = ("rebuild it against the installed torch: `pip install --no-build-isolation -e .` "
                "in the fastcodec checkout")

_C = None
_load_error = None
try:
    from fastcodec import _C  # noqa: F811  (importing it registers torch.ops.fastcodec.*)
except Exception as exc:  # ImportError, OSError (undefined symbols, missing libs), anything a broken .so raises
    _load_error = f"{type(exc).__name__}: {exc}"

# The op schemas and classes csrc/fastcodec.cpp registers (its kApiVersion): a build from another
# checkout would lack ops or take other arguments, so it is not used at all.
API_VERSION = 2

if _C is not None and _C.torch_version != torch.__version__:
    # Loaded, but compiled against another torch: the C++ ABI may differ in ways that only show as
    # a crash later, so the kernels are not used.
    _load_error = f"built against torch {_C.torch_version}, running torch {torch.__version__}"
    _C = None
elif _C is not None and getattr(_C, "api_version", 0) != API_VERSION:
    _load_error = (f"built from another fastcodec checkout (its ops are version {getattr(_C, 'api_version', 0)}, "
                   f"this one's {API_VERSION})")
    _C = None


def extension_status() -> tuple[bool, str]:
    """(loaded, reason): whether fastcodec._C is usable, and why not."""
    if _C is None:
        return False, f"fastcodec._C did not load ({_load_error}); {REBUILD_HINT}"
    return True, ""


def native_class(name: str):
    """torch.classes.fastcodec.<name> when the loaded extension registers it, else None (no
    extension, or one built before that class existed)."""
    if _C is None:
        return None
    try:
        return getattr(torch.classes.fastcodec, name)
    except (AttributeError, RuntimeError):  # torch raises RuntimeError for an unregistered class
        return None


def build_id() -> str | None:
    """Names this build of fastcodec._C (its file's size and time): a rebuild re-measures tuning."""
    if _C is None:
        return None
    st = os.stat(_C.__file__)
    return f"{st.st_size}-{st.st_mtime_ns}"


def cuda_build_archs() -> list[str]:
    """The SM architectures the CUDA kernels were compiled for, e.g. ['80', '90']; [] if none."""
    if _C is None or not _C.with_cuda:
        return []
    return [a for a in _C.cuda_archs.split(",") if a]


def cpu_simd_level() -> str | None:
    """The C++ CPU kernels' instruction set in this process: 'avx512', 'avx2' or 'portable' (the
    host's widest, capped by FASTCODEC_CPU_SIMD); None without the extension. Raises RuntimeError
    when FASTCODEC_CPU_SIMD names no level."""
    if _C is None:
        return None
    return _C.cpu_simd()


def cpp_status() -> tuple[bool, str]:
    ok, why = extension_status()
    return ok, ("C++ CPU kernels" if ok else why)


def cuda_status() -> tuple[bool, str]:
    """(usable, reason) for the C++/CUDA kernels on this machine's current GPU."""
    ok, why = extension_status()
    if not ok:
        return False, why
    archs = cuda_build_archs()
    if not archs:
        return False, f"fastcodec._C was built without CUDA ({_C.cuda_skip_reason}); {REBUILD_HINT}"
    built = f"built for sm_{',sm_'.join(archs)}"
    if not torch.cuda.is_available():
        return False, f"{built}; no GPU visible"
    major, minor = torch.cuda.get_device_capability()
    cap = major * 10 + minor
    # A listed arch runs natively; a newer GPU runs the PTX of the newest listed arch.
    if str(cap) not in archs and cap < max(int(a) for a in archs):
        return False, f"{built}; this GPU is sm_{cap} (set FASTCODEC_CUDA_ARCHS to include {cap} and rebuild)"
    return True, built


def register():
    """Fake kernels (for torch.compile / meta tensors) and autograd for the C++ ops."""
    if _C is None:
        return
    from fastcodec.ops import _autograd, _fake

    _fake.register("fastcodec")
    # CPU-only kernels: streaming, the critics' grouped conv, a stride-1 conv's weight gradient
    for name in ("conv1d_window", "conv_transpose1d_stream", "grouped_conv1d", "grouped_conv1d_input_grad",
                 "grouped_conv1d_weight_grad", "conv1d_weight_grad"):
        torch.library.register_fake(f"fastcodec::{name}")(getattr(_fake, name))
    _autograd.register("fastcodec")


register()


TRANSPOSED_VARIANTS = {"phases": 1, "gemm": 2}  # csrc/cpu/conv.h: set_transposed_variant


@contextlib.contextmanager
def transposed_variant(name: str):
    """This thread's fp32 C++ transposed convs run as `name` ('phases' | 'gemm') in the block,
    instead of by the kernel's rule."""
    previous = _C.set_transposed_variant(TRANSPOSED_VARIANTS[name])
    try:
        yield
    finally:
        _C.set_transposed_variant(previous)
