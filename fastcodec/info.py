"""`python -m fastcodec info`: versions, and which backends are built and usable here, and why not."""
from __future__ import annotations

import os
import platform
import sys

import torch

import fastcodec
from fastcodec.ops import _backend, _extension, dispatch, tuning


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except Exception as exc:
        return f"not importable ({type(exc).__name__})"
    return getattr(mod, "__version__", "?")


def report() -> str:
    lines = [
        f"fastcodec {fastcodec.__version__}",
        f"python    {platform.python_version()} ({sys.executable})",
        f"torch     {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"triton    {_version('triton')}",
        f"numpy     {_version('numpy')}",
        f"threads   {torch.get_num_threads()}",
    ]
    if torch.cuda.is_available():
        cap = torch.cuda.get_device_capability()
        lines.append(f"gpu       {torch.cuda.get_device_name()} (sm_{cap[0]}{cap[1]})")
    else:
        lines.append("gpu       none visible")
    loaded, why = _extension.extension_status()
    if loaded:
        archs = _extension.cuda_build_archs()
        cuda_part = f"CUDA kernels for sm_{',sm_'.join(archs)}" if archs else "no CUDA kernels"
        try:
            simd = _extension.cpu_simd_level()
        except RuntimeError as exc:
            simd = f"none: {exc}"
        lines.append(f"_C        loaded (C++ CPU kernels: {simd}; {cuda_part})")
    else:
        lines.append(f"_C        not loaded: {why}")
    lines.append("")
    lines.append(f"{'backend':8} {'device':7} {'usable':7} note")
    for device in ("cpu", "cuda"):
        for name in _backend.BACKENDS:
            if (name, device) in (("cpp", "cuda"), ("cuda", "cpu")):
                continue
            ok, note = _backend.status(name, device)
            lines.append(f"{name:8} {device:7} {'yes' if ok else 'no':7} {note}")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    picks = ", ".join(f"{d} -> {dispatch.usable('causal_conv1d', d, torch.float32)[0]}" for d in devices)
    lines += ["", f"auto picks for float32 by the static rule: {picks}"]
    lines.append(_tuning_report())
    env = _backend.ENV_VAR
    if os.environ.get(env):
        lines.append(f"{env}={os.environ[env]} overrides 'auto'")
    return "\n".join(lines)


def tuning_table(limit=None) -> list:
    """Lines describing the measured 'auto' choices this machine has cached."""
    path = tuning.cache_path()
    if not tuning.enabled():
        return [f"tuning: off (FASTCODEC_TUNE=0): 'auto' follows the static rules; cache {path}"]
    entries = tuning.table()
    lines = [f"tuning: {len(entries)} measured choices in {path}"]
    for key, e in sorted(entries.items())[:limit]:
        times = ", ".join(f"{b} {ms:.3g} ms" for b, ms in sorted(e["ms"].items(), key=lambda kv: kv[1]))
        moved = f"; the static rule's {e['static']}" if e.get("static", e["backend"]) != e["backend"] else ""
        lines.append(f"  {key} -> {e['backend']} ({times}{moved})")
    if limit is not None and len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more (python -m fastcodec tune --show lists them all)")
    return lines


def _tuning_report() -> str:
    return "\n".join(tuning_table(limit=20))


def main() -> int:
    print(report())
    return 0
