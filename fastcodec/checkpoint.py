"""Checkpoints and model files: written atomically, verified on every load, read without
unpickling arbitrary objects.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts saved with torch.save and read
with torch.load(weights_only=True), which refuses anything else. It carries a sha256 digest of its
content (every tensor's dtype, shape and bytes and every other value, key by key), computed before
writing and checked on every load: torch.load does not check the zip's CRCs, so without it a
flipped bit in a weight loads silently. It is written atomically (fastcodec.atomic), so a crash or
Ctrl-C mid-write leaves the previous checkpoint intact. Training (`fastcodec.train`) and the codec
(`fastcodec.codec`) both read and write through this module.
"""
from __future__ import annotations

import hashlib
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .atomic import atomic_output

FORMAT = "fastcodec-checkpoint"
VERSION = 2  # 2: the content's sha256 digest under DIGEST_KEY; 1 had none
DIGEST_KEY = "sha256"


class CheckpointError(ValueError):
    """A file that is not a readable, intact fastcodec checkpoint; the message names it and says why.
    damaged: the file was one and its bytes changed since (a failed digest, a broken zip, NaN or
    Inf values), as opposed to a file that could not be read now, is not a checkpoint, or is newer
    than this fastcodec."""

    def __init__(self, message, damaged=False):
        super().__init__(message)
        self.damaged = damaged


class UnverifiedCheckpointWarning(UserWarning):
    """A checkpoint from before digests (version 1): loaded, but nothing could verify it."""


def atomic_write(path, write):
    """Call write(file_object) on a temporary file beside `path`, then rename it into place."""
    with atomic_output(path) as f:
        write(f)


def _feed(h, obj):
    """Everything a value holds, into hash h, in an order that does not depend on dict order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0]))):
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):  # a tuple may come back a list: the same content either way
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, float):
        h.update(f"F{obj.hex()}".encode())
    elif isinstance(obj, (str, bytes)):
        # surrogatepass: a path from a non-UTF-8 argv holds lone surrogates, which pickle keeps
        data = obj.encode("utf-8", "surrogatepass") if isinstance(obj, str) else obj
        h.update(f"{'S' if isinstance(obj, str) else 'Y'}{len(data)}:".encode() + data)
    else:  # bool, int, None and the like: their repr is their value
        h.update(f"{type(obj).__name__}:{obj!r}".encode())


def digest(state: dict) -> str:
    """sha256 (hex) of a checkpoint's content, its own digest entry left out."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def save(path, state: dict):
    state = dict(state, format=FORMAT, version=VERSION)
    state[DIGEST_KEY] = digest(state)
    atomic_write(path, lambda f: torch.save(state, f))


def _one_line(text: str, limit: int = 200) -> str:
    """text without terminal escapes or control characters, on one line, at most `limit` characters."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load(path) -> dict:
    """The checkpoint at path, its digest verified; CheckpointError naming the file and the reason
    otherwise. A version-1 checkpoint (no digest) loads with an UnverifiedCheckpointWarning."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, MemoryError) as exc:
        # torch's zip reader fails a truncated file with an OSError too; a complete zip whose read
        # failed is the machine's trouble (EIO, no memory), not the file's.
        if isinstance(exc, OSError) and not isinstance(exc, (PermissionError, FileNotFoundError)) \
                and not zipfile.is_zipfile(path):
            raise CheckpointError(f"{path}: not a readable checkpoint (not a complete zip archive: truncated?)",
                                  damaged=True) from None
        raise CheckpointError(f"{path}: cannot read it now ({type(exc).__name__}: {_one_line(str(exc))})") from None
    except Exception as exc:
        msg = str(exc)
        blocked = re.search(r"GLOBAL ([\w.]+)", msg)
        if blocked:
            raise CheckpointError(f"{path}: refused: it holds a pickled object that is not plain data "
                                  f"({blocked.group(1)}); fastcodec never unpickles objects from files") from None
        # torch's weights-only refusal is a paragraph of advice around the one line that matters.
        detail = re.search(r"WeightsUnpickler error:(.*?)(Check the documentation|$)", msg, re.DOTALL)
        msg = detail.group(1) if detail and detail.group(1).strip() else msg
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {_one_line(msg)})",
                              damaged=True) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fastcodec checkpoint")
    version = state.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this fastcodec reads ({VERSION}); "
                              f"upgrade fastcodec")
    if version >= 2:
        stored = state.get(DIGEST_KEY)
        if not isinstance(stored, str) or stored != digest(state):
            raise CheckpointError(f"{path}: failed verification: its content does not match the sha256 digest it was "
                                  f"written with (changed on disk since: a flipped bit, a partial copy or an edit)",
                                  damaged=True)
    else:
        warnings.warn(f"{path}: written by an older fastcodec without a digest; loaded unverified",
                      UnverifiedCheckpointWarning, stacklevel=2)
    return state


def verified(state: dict) -> str:
    """What load() verified of a loaded state, for messages."""
    return "sha256 verified" if DIGEST_KEY in state else "unverified: written before checkpoints had digests"


def check_finite(path, state: dict, *keys):
    """CheckpointError unless every floating-point tensor under state[key] (for each key) is finite."""
    for key in keys:
        for name, t in _tensors(state.get(key), key):
            if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                raise CheckpointError(f"{path}: holds NaN or Inf values ({name}); it cannot be trained on or decoded "
                                      f"with", damaged=True)


def _tensors(obj, prefix):
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


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
