"""Atomic output: a file appears under its name complete or not at all.

Shared by checkpoints, training logs and reports, and the codec's .fcdc/.wav/.npy outputs. The
data goes to a hidden `.NAME.partial` beside the target, is flushed to disk, and is renamed over
the target only when the block finishes. A failure or Ctrl-C leaves whatever was there before
untouched. The partial file's name is fixed, so a run killed outright (SIGKILL) leaves at most
one stray file per target, and the next attempt overwrites it; a writer holds an exclusive lock on
it, so two outputs (in one process or several) never write through the same partial file.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path


class OutputBusy(ValueError):
    """Another writer (this process or another) is writing the same output now."""


def same_file(a, b) -> bool:
    """Whether paths a and b name one file: the same inode when both exist (through symlinks,
    hard links and `..`), else the same resolved path."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(inputs=(), outputs=()):
    """ValueError, before anything is written, if an output is one of the inputs or two outputs
    are one file (None entries are skipped)."""
    outputs = [o for o in outputs if o is not None]
    for o in outputs:
        for i in inputs:
            if i is not None and same_file(i, o):
                raise ValueError(f"{o}: is the input {i}; writing it would destroy the input, so choose "
                                 f"another output name")
    for k, o in enumerate(outputs):
        for other in outputs[k + 1:]:
            if same_file(o, other):
                raise ValueError(f"{o}: given as two outputs ({o} and {other}); give each its own name")


@contextlib.contextmanager
def atomic_output(path):
    """Yields a binary file object (w+b) that becomes `path` only if the block finishes."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give an output file name")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: its folder {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.partial")
    f = _locked_partial(tmp, path)
    with f:
        try:
            f.truncate(0)  # a stray from a killed run
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # while locked: no other writer can be holding this file
        except BaseException:
            with contextlib.suppress(OSError):  # only while the name is still our file (not renamed)
                if os.path.samestat(os.fstat(f.fileno()), os.stat(tmp)):
                    tmp.unlink()
            raise
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _locked_partial(tmp: Path, target: Path):
    """tmp opened (w+b, not yet truncated) under an exclusive lock; ValueError when another writer
    holds it."""
    while True:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):  # a filesystem without flock
                return os.fdopen(fd, "w+b")
            os.close(fd)
            raise OutputBusy(f"{target}: is being written by another output now (its temporary file {tmp.name} "
                             f"is in use); give each output its own name") from None
        try:  # the file locked must still be the one under tmp's name (not renamed by its last writer)
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return os.fdopen(fd, "w+b")
        except FileNotFoundError:
            pass
        os.close(fd)
