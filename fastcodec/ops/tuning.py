"""Measured 'auto': the fastest correct backend per (op, device, dtype, shape bucket), timed here.

The first 'auto' call with a tuning key that no cache knows runs each usable backend on the call's
own arguments (copies, so nothing the caller holds is touched; with the backward when gradients
are wanted), interleaved over rounds, and keeps the winner. The static choice (dispatch.ORDER)
stays unless a challenger is faster by MARGIN in the median and in most rounds: these machines
vary 1.5-3x between runs, so a close call keeps the default.

Choices persist in $FASTCODEC_CACHE_DIR (default ~/.cache/fastcodec)/tuning-<machine>.json, one
file per machine and software versions (CPU model, SIMD level, torch, Triton, fastcodec), so a new
version re-measures; a GPU's name and the CPU's thread count are in each entry's key. The file is
read once per process; a corrupt or foreign one is ignored with a warning; writes merge with what
other processes wrote, under a lock, atomically. Candidates are timed with autocast off, at the
call's dtype (the layers cast for autocast before calling an op).

Never measured: with FASTCODEC_TUNE=0 (the static rules, deterministic; the test suite's default),
inside a torch.compile trace (the static rules there), inside a CUDA graph capture, under
torch.distributed with more than one rank (a collective at an arbitrary call site could deadlock:
`share()` hands rank 0's table to the others at a point all ranks reach), in a stream's calls
(no_measuring(): a frame must never stall), and a shape whose measurement raised (out of memory,
say) is not tried again in the process. Outside a trace, those take a cached choice when there is
one (not with FASTCODEC_TUNE=0), else the static.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

FORMAT, VERSION = "fastcodec-tuning", 1
MARGIN = 0.05        # a challenger must be this much faster (median), and faster in all rounds but one
ROUNDS = 5           # interleaved rounds (3 for a call that takes over SLOW seconds)
SLOW = 0.2
ROUND_SECONDS = 0.005  # a round repeats a call until it takes at least this long

_table = None        # key -> {"backend": name, "static": name, "ms": {backend: median ms}}, once loaded
_table_settings = None  # the _settings() it was read under
_failed = set()      # keys whose measurement raised in this process: not tried again
_scope = threading.local()  # .forced: inside measuring(); .frozen: inside no_measuring()


class TuningWarning(UserWarning):
    """The tuning cache could not be read or written; the static rules or a fresh measurement stand in."""


def enabled() -> bool:
    """Whether 'auto' may use measured choices (FASTCODEC_TUNE=0 turns them off)."""
    return os.environ.get("FASTCODEC_TUNE", "1").strip() not in ("0", "false", "no", "off")


def _may_measure() -> bool:
    if torch.compiler.is_compiling():
        return False
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        return False
    if frozen():
        return False
    if getattr(_scope, "forced", False):
        return True
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)


def key(op: str, device: torch.device, dtype, bucket: tuple) -> str:
    """A call's tuning key in the cache: the op, the device (the CPU's thread count, or the GPU's
    name), the dtype and the shape bucket."""
    where = (f"cuda {torch.cuda.get_device_name(device)}" if device.type == "cuda"
             else f"{device.type} {torch.get_num_threads()}t")
    return f"{op}|{where}{tf32_tag(device, dtype)}|{str(dtype).removeprefix('torch.')}|{' '.join(map(str, bucket))}"


def tf32_tag(device: torch.device, dtype) -> str:
    """' tf32=<cudnn><matmul>' for fp32 on CUDA: whether TF32 is allowed changes every fp32 candidate
    there (PyTorch's own and the Triton convs follow the flags)."""
    if device.type != "cuda" or dtype != torch.float32:
        return ""
    return f" tf32={int(torch.backends.cudnn.allow_tf32)}{int(torch.backends.cuda.matmul.allow_tf32)}"


def size_bucket(n: int) -> int:
    """n rounded up to a power of two: calls within 2x of each other share a measurement."""
    return 1 << max(0, int(n) - 1).bit_length()


@functools.lru_cache(maxsize=None)
def _fixed_versions() -> tuple:
    """The parts of versions() that cannot change while the process runs, read once."""
    from .. import __version__
    from . import _extension

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import triton

        triton_version = triton.__version__
    except Exception:
        triton_version = None
    # (A GPU's name goes into the keys of its calls, not here: asking for it would start CUDA in
    # every process on a GPU machine, CPU-only ones included.)
    return (("cpu", cpu), ("cores", os.cpu_count()), ("torch", torch.__version__), ("triton", triton_version),
            ("fastcodec", __version__), ("extension", _extension.build_id()))


def versions() -> dict:
    """What a measurement depends on besides the shapes: the machine and the software."""
    from . import _extension

    return dict(_fixed_versions(), simd=_extension.cpu_simd_level())


_paths: dict = {}  # (cache folder settings, versions) -> cache_path(): a warm call is a lookup


def cache_path() -> Path:
    v = versions()
    settings = (os.environ.get("FASTCODEC_CACHE_DIR"), os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"),
                tuple(sorted(v.items(), key=lambda kv: kv[0])))
    path = _paths.get(settings)
    if path is None:
        home = os.path.expanduser("~")
        root = os.environ.get("FASTCODEC_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.join(home if home != "~" else tempfile.gettempdir(),
                                                             ".cache"), "fastcodec")
        tag = hashlib.sha256(json.dumps(v, sort_keys=True).encode()).hexdigest()[:12]
        path = _paths[settings] = Path(root) / f"tuning-{tag}.json"
    return path


def _read(path: Path) -> dict:
    """The entries of the cache file at path ({} when there is none); a file that is not ours or
    was written for other versions is ignored with a warning."""
    try:
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        warnings.warn(f"{path}: ignored, not a readable tuning cache ({type(exc).__name__}); choices will be "
                      f"measured again", TuningWarning, stacklevel=3)
        return {}
    ok = (isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == VERSION
          and data.get("versions") == versions() and isinstance(data.get("entries"), dict))
    if not ok:
        warnings.warn(f"{path}: ignored, not a tuning cache of this machine and these versions", TuningWarning,
                      stacklevel=3)
        return {}
    return {k: v for k, v in data["entries"].items()
            if isinstance(v, dict) and isinstance(v.get("backend"), str) and isinstance(v.get("ms"), dict)
            and all(isinstance(b, str) and isinstance(t, (int, float)) for b, t in v["ms"].items())}


def _settings() -> tuple:
    """What can move the cache file within a process: the folder settings and the SIMD cap."""
    env = os.environ
    return env.get("FASTCODEC_CACHE_DIR"), env.get("XDG_CACHE_HOME"), env.get("HOME"), env.get("FASTCODEC_CPU_SIMD")


def table() -> dict:
    """The measured choices known to this process (the cache file's, read once per cache
    location, and new ones)."""
    global _table, _table_settings
    settings = _settings()
    if _table is None or settings != _table_settings:
        _table, _table_settings = _read(cache_path()), settings
        _forget_settled()
    return _table


def _write(new: dict):
    """Merge `new` entries into the cache file (other processes' entries kept), atomically."""
    from ..atomic import atomic_output

    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # the read-merge-write of concurrent processes
            except OSError:  # a filesystem without flock: merge unlocked (a lost entry is measured again)
                pass
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TuningWarning)  # said when it was first read
                entries = _read(path)
            entries.update(new)
            data = {"format": FORMAT, "version": VERSION, "versions": versions(), "entries": entries}
            with atomic_output(path) as f:
                f.write(json.dumps(data, indent=1, sort_keys=True).encode())
    except (OSError, ValueError) as exc:
        warnings.warn(f"could not save tuning choices to {path} ({exc}); they hold for this process",
                      TuningWarning, stacklevel=3)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fresh(args):
    """Copies of the call's tensors, wanting gradients where the call does (grad mode on and the
    tensor requiring them), so timing never touches what the caller holds or its graph."""
    grad = torch.is_grad_enabled()
    return [a.detach().clone().requires_grad_(grad and a.requires_grad) if isinstance(a, torch.Tensor) else a
            for a in args]


def _timed(run, backend, args, device, repeat):
    """Seconds per call of run(backend, *args), with the backward when args want gradients."""
    grads = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        # Identity saved-tensor hooks: the caller's (save_on_cpu, checkpointing) must not fire here.
        # Autocast off: every candidate runs at the key's dtype (nn casts for autocast before the op).
        with torch.enable_grad() if grads else torch.no_grad(), \
                torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t), \
                torch.autocast(device.type, enabled=False):
            out = run(backend, *args)
            if grads:
                outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,))
                        if isinstance(o, torch.Tensor) and o.requires_grad]
                if outs:
                    torch.autograd.grad(outs, grads, [torch.ones_like(o) for o in outs], allow_unused=True)
    _sync(device)
    return (time.perf_counter() - start) / repeat


def measure(run, candidates, args, device) -> dict:
    """{backend: [seconds per call, one per round]}: the candidates interleaved, round by round."""
    args = _fresh(args)
    for b in candidates:  # warm-up: packing, JIT compiles, library initialisation
        _timed(run, b, args, device, 1)
    first = {b: _timed(run, b, args, device, 1) for b in candidates}
    fastest = max(min(first.values()), 1e-9)
    repeat = max(1, min(1000, int(ROUND_SECONDS / fastest)))
    times = {b: [] for b in candidates}
    for r in range(ROUNDS if fastest < SLOW else 3):
        for b in (candidates if r % 2 == 0 else candidates[::-1]):
            times[b].append(_timed(run, b, args, device, repeat))
    return times


def decide(times: dict, default: str) -> str:
    """The default, unless a challenger's median beats it by MARGIN and it is faster in all rounds
    but at most one."""
    base = statistics.median(times[default])
    best, best_t = default, base
    for b, ts in times.items():
        t = statistics.median(ts)
        won = sum(x < y for x, y in zip(ts, times[default]))
        if b != default and t * (1 + MARGIN) < base and won >= len(ts) - 1 and t < best_t:
            best, best_t = b, t
    return best


def choose(op, device, key, candidates, run, args) -> tuple:
    """(backend, settled) for a keyed 'auto' call: candidates[0] (the static choice) unless the
    table says or a measurement finds another. settled: the table decided (a caller may keep it)."""
    if not enabled():
        return candidates[0], False
    known = table().get(key)
    if known is not None and known["backend"] in candidates:
        return known["backend"], True
    if run is None or key in _failed or not _may_measure():
        return candidates[0], False
    try:
        times = measure(run, candidates, args, device)
    except Exception as exc:  # e.g. out of memory with the copies: the call itself runs as it would have
        _failed.add(key)
        warnings.warn(f"could not time {key} ({type(exc).__name__}: {str(exc)[:160]}); it keeps the static "
                      f"choice {candidates[0]}", TuningWarning, stacklevel=4)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return candidates[0], False
    winner = decide(times, candidates[0])
    entry = {"backend": winner, "static": candidates[0],
             "ms": {b: round(1e3 * statistics.median(t), 4) for b, t in times.items()}}
    table()[key] = entry
    _write({key: entry})
    return winner, True


def share():
    """Under torch.distributed: every rank takes rank 0's table (call it where all ranks are)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    box = [dict(table()) if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    table().clear()
    table().update(box[0])
    _forget_settled()


@contextlib.contextmanager
def _flag(name):
    saved = getattr(_scope, name, False)
    setattr(_scope, name, True)
    try:
        yield
    finally:
        setattr(_scope, name, saved)


def measuring():
    """Measure keyed 'auto' calls in this block even under torch.distributed (pre-tuning on rank 0
    before `share()`). FASTCODEC_TUNE=0 still wins."""
    return _flag("forced")


def no_measuring():
    """Take cached or static choices in this block, never time anything: a live stream's frames
    must not stall (a stream's shapes are tuned by `python -m fastcodec tune`)."""
    return _flag("frozen")


def frozen() -> bool:
    """Whether this thread is inside no_measuring()."""
    return getattr(_scope, "frozen", False)


def forget():
    """Drop this process's table (the next call rereads the cache file) and its failed keys: for
    tests and `tune`."""
    global _table
    _table = None
    _failed.clear()
    _forget_settled()


def _forget_settled():
    from . import dispatch

    dispatch._settled.clear()
    dispatch._unmeasured.clear()
