"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with torch.save and read
with torch.load(weights_only=True), which refuses anything else. It is written atomically
(fastcodec.atomic), so a crash or Ctrl-C mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..atomic import atomic_output

FORMAT = "fastcodec-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable fastcodec checkpoint."""


def atomic_write(path, write):
    """Call write(file_object) on a temporary file beside `path`, then rename it into place."""
    with atomic_output(path) as f:
        write(f)


def save(path, state: dict):
    state = dict(state, format=FORMAT, version=VERSION)
    atomic_write(path, lambda f: torch.save(state, f))


def load(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastcodec checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state['version']} is newer than this fastcodec "
                              f"reads ({VERSION}); upgrade fastcodec")
    return state


def state_sha256(*modules, extra: bytes = b"") -> str:
    """sha256 (hex) over `extra` and every parameter and buffer of `modules`, by name: equal exactly
    when the states are bit-identical (replica checks, model fingerprints)."""
    h = hashlib.sha256(extra)
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            if t.numel():
                h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
