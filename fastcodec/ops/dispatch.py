"""Which implementation runs each op: the one table, and the one function every caller asks.

TABLE[op][backend] says what a backend takes for that op: its dtypes and a limit on shapes (a
reason it cannot take a call, or None); `_backend.status` says whether the backend runs on a
device at all. `choose()` answers every call:

- a named backend (the argument, or FASTCODEC_BACKEND when the argument is 'auto') runs or raises
  BackendUnavailable with the reason: it never silently becomes another;
- 'auto' takes the first usable backend in the device's static order (cpp on the CPU, Triton on a
  GPU, the torch reference where neither takes the call), unless the call has a tuning key and
  `tuning` knows (or, measuring this call, finds) a faster one for it, among the usable backends
  and their VARIANTS ("cpp:gemm": what a call's `run` receives, to run that variant).

Adding a backend or an op touches this table and the kernel.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from . import _backend, tuning
from ._backend import BackendUnavailable


@dataclasses.dataclass(frozen=True)
class Impl:
    """What one backend takes for one op."""
    dtypes: tuple | None = None    # None: whatever PyTorch takes
    limit: Callable | None = None  # limit(**shape) -> why it cannot take this call, or None


def _triton_search_limit(D=None, dtype=None, **_):
    """The Triton search keeps a row in registers: D is bounded per dtype."""
    from .triton.vq import unsupported_reason

    return None if D is None else unsupported_reason(D, dtype)


def _few_rows(N=None, **_):
    from .triton.vq import SPLIT_MAX_ROWS

    return N is not None and N <= SPLIT_MAX_ROWS


def _no_grad(grad=False, **_):
    return "the native stream step has no backward" if grad else None


F32, F64, F16, BF16 = torch.float32, torch.float64, torch.float16, torch.bfloat16
_ANY = Impl()
_CONV = {"torch": _ANY, "cpp": Impl((F32, F64)), "cuda": Impl((F32, F64, F16, BF16)), "triton": Impl((F32, F16, BF16))}
_SEARCH = dict(_CONV, triton=Impl((F32, F16, BF16), _triton_search_limit))

TABLE = {
    "causal_conv1d": _CONV,
    "causal_conv_transpose1d": _CONV,
    "vq_nearest": _SEARCH,
    "rvq_encode": _SEARCH,
    "rvq_residuals": _SEARCH,
    "rvq_decode": _CONV,
    # The training critics' grouped conv: the C++ kernels on the CPU, cuDNN/oneDNN through torch.
    "grouped_conv1d": {"torch": _ANY, "cpp": Impl((F32,))},
    # A stream's step: the cpp backend's native kernels (conv1d_window, conv_transpose1d_stream),
    # fp32 and without a backward; on any other backend a stream composes the op above.
    "causal_conv1d_stream": {"cpp": Impl((F32,), _no_grad)},
    "causal_conv_transpose1d_stream": {"cpp": Impl((F32,), _no_grad)},
}

# Internal variants of a backend that a rule chooses between inside the kernel: the measured
# 'auto' times each as a candidate of its own, named "backend:variant" (the bare name is the rule).
# The CPU fp32 transposed conv runs as `stride` phase convs or as one GEMM (csrc/cpu/conv.h),
# except for inputs of up to 16 frames, which take the stream step whatever the setting.
# The Triton searches can split each stage over codes, for calls with too few rows to fill a GPU
# (fastcodec/ops/triton/vq.py: code_split).
VARIANTS = {  # (op, backend) -> (dtypes, variant names, applies(**shape))
    ("causal_conv_transpose1d", "cpp"): ((F32,), ("phases", "gemm"), lambda T=None, **_: T is None or T > 16),
    **{(op, "triton"): ((F32, F16, BF16), ("split",), _few_rows)
       for op in ("vq_nearest", "rvq_encode", "rvq_residuals")},
}

ORDER = {  # auto's static preference per device type, before the torch reference
    "cpu": ("cpp",),
    "cuda": ("triton", "cuda") if _backend.CUDA_KERNELS_VERIFIED_ON_GPU else ("triton",),
}


def _dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def refusal(op: str, backend: str, device_type: str, dtype, shape=None) -> str | None:
    """Why `backend` cannot run `op` on these tensors, or None when it can."""
    impl = TABLE[op].get(backend)
    if impl is None:
        return f"{op} has no {backend} implementation"
    ok, why = _backend.status(backend, device_type)
    if not ok:
        return why
    if impl.dtypes is not None and dtype not in impl.dtypes:
        return f"supports {', '.join(_dtype_name(d) for d in impl.dtypes)}; got {_dtype_name(dtype)}"
    return impl.limit(dtype=dtype, **(shape or {})) if impl.limit is not None else None


def usable(op: str, device_type: str, dtype, shape=None) -> list:
    """The backends 'auto' may take for this call, its static choice first: the device's ORDER,
    then the torch reference. (A backend outside ORDER runs only when named: the Triton
    interpreter on CPU tensors, the C++ CUDA kernels until a GPU run has verified them.)"""
    order = [b for b in ORDER.get(device_type, ()) + ("torch",) if b in TABLE[op]]
    return [b for b in order if refusal(op, b, device_type, dtype, shape) is None]


def variants(op: str, candidates, dtype, shape=None) -> list:
    """The "backend:variant" candidates the measured 'auto' adds for the usable backends."""
    out = []
    for backend in candidates:
        entry = VARIANTS.get((op, backend))
        if entry is not None and dtype in entry[0] and entry[2](**(shape or {})):
            out += [f"{backend}:{v}" for v in entry[1]]
    return out


def requested(backend: str) -> tuple[str, str]:
    """(backend asked for, how it was asked): the argument, or FASTCODEC_BACKEND for 'auto'."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        env = _backend.env(_backend.ENV_VAR).strip()
        if env and env != "auto":
            return env, f"{_backend.ENV_VAR}={env}"
        return "auto", "auto"
    return backend, f"backend={backend!r}"


def choose(op: str, backend: str, device: torch.device, dtype, shape=None, key=None, run=None, args=()) -> str:
    """The backend that runs this call of `op`.

    shape: the keywords the table's limits read (D=..., grad=...). key: a function giving the
    call's shape bucket, a tuple (None: never measured), called only when tuning is on and no
    trace is being made; run(backend, *args) runs the call on a backend, for the tuner to time. A
    settled choice is kept per (op, device, threads, dtype, key): a warm call costs a lookup.
    """
    name, source = requested(backend)
    if name != "auto":
        if name not in _backend.BACKENDS:
            raise ValueError(f"{source}: unknown backend; expected 'auto' or one of {', '.join(_backend.BACKENDS)}")
        why = refusal(op, name, device.type, dtype, shape)
        if why:
            raise BackendUnavailable(f"{source} cannot run here: {why}")
        return name
    # Under a torch.compile trace the static rule: a choice must not depend on a timing or a file
    # there, and the key (built from shapes) would specialise dynamic ones.
    tuned = key is not None and not torch.compiler.is_compiling() and tuning.enabled()
    if tuned:
        key = key()
        tuning.table()  # (a moved cache folder drops the settled choices)
        memo = (op, device.type, torch.get_num_threads(), dtype, key, tuning.tf32_tag(device, dtype))
        settled = _settled.get(memo)
        if settled is None and tuning.frozen():
            settled = _unmeasured.get(memo)
        if settled is not None:
            return settled
    candidates = usable(op, device.type, dtype, shape)
    if not candidates:
        raise BackendUnavailable(f"no backend runs {op} on {device.type} {_dtype_name(dtype)}")
    if not tuned:
        return candidates[0]
    candidates = candidates + variants(op, candidates, dtype, shape)
    if len(candidates) == 1:
        return candidates[0]
    chosen, settled = tuning.choose(op, device, tuning.key(op, device, dtype, key), candidates, run, args)
    if settled:
        _settled[memo] = chosen
    elif tuning.frozen():
        _unmeasured[memo] = chosen
    return chosen


# (op, device type, CPU threads, dtype, key, TF32 tag) -> the backend the tuning table gave: what a warm call
# reads. Cleared with the table (tuning.forget, tuning.share, a new cache path).
_settled: dict = {}
# The same keys -> the static choice a call took where it could not measure (a stream's frames):
# read only there, so a call outside a stream still measures the key.
_unmeasured: dict = {}
