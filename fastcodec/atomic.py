"""Atomic output: a file appears under its name complete or not at all.

Shared by checkpoints, training logs and reports, and the codec's .fcdc/.wav/.npy outputs. The
data goes to a hidden `.NAME.partial` beside the target, is flushed to disk, and is renamed over
the target only when the block finishes. A failure or Ctrl-C leaves whatever was there before
untouched. The partial file's name is fixed, so a run killed outright (SIGKILL) leaves at most
one stray file per target, and the next attempt overwrites it.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path):
    """Yields a binary file object (w+b) that becomes `path` only if the block finishes."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give an output file name")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: its folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with open(tmp, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
