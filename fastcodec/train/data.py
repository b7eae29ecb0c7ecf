"""Training data: random fixed-length crops from the demo set or a folder of audio files.

- Folder scanning finds audio files (fastcodec.audio_files) recursively, reads each header with
  soundfile and checks the samples once (empty, unreadable, non-finite and silent files are
  skipped, with a warning and a count per reason); the results are cached in the run's folder so a
  restart does not rescan.
- Files are split into training and held-out sets by a hash of their relative path, so the split is
  stable as files are added.
- Batches are pure functions of (seed, step, rank): resuming continues the exact sequence, and under
  torch.distributed each rank draws from its own shard of every epoch's permutation.
Crops: [1, L] float32 at the model's rate, mono (channel mean), resampled with soxr when needed.
"""
from __future__ import annotations

import json
import math
import os
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from ..audio_files import AUDIO_SUFFIXES, audio_files
from .demo_data import demo_corpus

SILENCE_PEAK = 1e-4  # -80 dBFS: a file whose every sample is below this is silent
_SCAN_VERSION = 1


class DataError(ValueError):
    """The training data cannot be used (missing folder, no usable files...)."""


def _soundfile():
    try:
        import soundfile
    except Exception as exc:  # an OSError when libsndfile is missing
        raise DataError(f"reading audio files needs the soundfile package ({type(exc).__name__}: {exc})") from None
    return soundfile


def _check_file(sf, path: Path):
    """(frames, sample_rate, None) for a usable file, else (0, 0, reason)."""
    try:
        info = sf.info(str(path))
    except Exception as exc:
        return 0, 0, f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    if info.frames <= 0:
        return 0, 0, "empty"
    peak = 0.0
    try:
        for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32", always_2d=True):
            if not np.isfinite(block).all():
                return 0, 0, "non-finite samples"
            peak = max(peak, float(np.abs(block).max()) if block.size else 0.0)
    except Exception as exc:
        return 0, 0, f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    if peak < SILENCE_PEAK:
        return 0, 0, "silent"
    return int(info.frames), int(info.samplerate), None


def scan_folder(root, cache_path=None, log=print):
    """Usable audio files under `root`: [(relative path, frames, sample rate)], sorted, plus a Counter
    of skip reasons. Raises DataError when the folder is missing or holds no usable file."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"--data {root}: no such folder")
    if not root.is_dir():
        raise DataError(f"--data {root}: not a folder")
    paths = audio_files(root)
    if not paths:
        raise DataError(f"--data {root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) found in it or below it")
    cache = {}
    if cache_path is not None and Path(cache_path).exists():
        try:
            raw = json.loads(Path(cache_path).read_text())
            if raw.get("version") == _SCAN_VERSION and raw.get("root") == str(root.resolve()):
                cache = raw["files"]
        except (OSError, ValueError, KeyError, TypeError):
            cache = {}  # a damaged cache is only a lost shortcut
    sf = _soundfile()
    files, skipped, new_cache = [], Counter(), {}
    for p in paths:
        rel = str(p.relative_to(root))
        st = p.stat()
        key = [st.st_size, st.st_mtime_ns]
        hit = cache.get(rel)
        if hit and hit[0] == key:
            frames, rate, reason = hit[1]
        else:
            frames, rate, reason = _check_file(sf, p)
        new_cache[rel] = [key, [frames, rate, reason]]
        if reason:
            skipped[reason.split(" (")[0]] += 1
            warnings.warn(f"skipping {p}: {reason}", stacklevel=2)
        else:
            files.append((rel, frames, rate))
    if cache_path is not None:
        tmp = Path(str(cache_path) + ".tmp")
        tmp.write_text(json.dumps({"version": _SCAN_VERSION, "root": str(root.resolve()), "files": new_cache}))
        os.replace(tmp, cache_path)
    if skipped:
        log(f"data: skipped {sum(skipped.values())} of {len(paths)} files: "
            + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
    if not files:
        raise DataError(f"--data {root}: none of the {len(paths)} audio files is usable "
                        f"({', '.join(f'{n} {why}' for why, n in sorted(skipped.items()))})")
    return files, skipped


def split_files(files, holdout_fraction):
    """(train, held_out) by a stable hash of each relative path; both non-empty when there are >= 2
    files (with one file, it serves both and the caller is told)."""
    if len(files) == 1:
        return files, files
    held = [f for f in files if zlib.crc32(f[0].encode()) % 10_000 < holdout_fraction * 10_000]
    if not held:
        held = [min(files, key=lambda f: zlib.crc32(f[0].encode()))]
    if len(held) == len(files):
        held = held[:1]
    held_names = {f[0] for f in held}
    return [f for f in files if f[0] not in held_names], held


class FolderSource:
    """Crops from files on disk. Each crop reads only the samples it needs."""

    def __init__(self, root, files, sample_rate):
        self.root, self.files, self.sample_rate = Path(root), files, sample_rate

    def __len__(self):
        return len(self.files)

    def describe(self):
        seconds = sum(f[1] / f[2] for f in self.files)
        return f"{len(self.files)} files, {seconds / 3600:.2f} h"

    def crop(self, item, rng: np.random.Generator, length: int) -> np.ndarray:
        rel, frames, rate = self.files[item]
        need = int(math.ceil(length * rate / self.sample_rate)) + (16 if rate != self.sample_rate else 0)
        start = int(rng.integers(0, frames - need + 1)) if frames > need else 0
        sf = _soundfile()
        x, _ = sf.read(str(self.root / rel), start=start, frames=min(need, frames - start), dtype="float32",
                       always_2d=True)
        x = x.mean(axis=1)
        if rate != self.sample_rate:
            import soxr  # a polyphase resampler of high quality; no torchaudio needed

            x = soxr.resample(x, rate, self.sample_rate).astype(np.float32)
        x = np.nan_to_num(x[:length])
        return np.pad(x, (0, length - x.shape[0])) if x.shape[0] < length else x


class ArraySource:
    """Crops from clips held in memory ([n, T] float32), such as the demo set."""

    def __init__(self, clips: np.ndarray, name="demo set"):
        self.clips, self.name = clips, name

    def __len__(self):
        return self.clips.shape[0]

    def describe(self):
        return f"{self.name}: {self.clips.shape[0]} clips of {self.clips.shape[1]} samples"

    def crop(self, item, rng, length):
        clip = self.clips[item]
        if clip.shape[0] <= length:
            return np.pad(clip, (0, length - clip.shape[0]))
        start = int(rng.integers(0, clip.shape[0] - length + 1))
        return clip[start:start + length]


class CropDataset(torch.utils.data.Dataset):
    """Indexed by (item, crop seed) pairs from `StepBatches`; returns [1, length] float32."""

    def __init__(self, source, length):
        self.source, self.length = source, length

    def __len__(self):
        return len(self.source)

    def __getitem__(self, key):
        item, seed = key
        rng = np.random.default_rng(seed)
        try:
            x = self.source.crop(item, rng, self.length)
        except Exception as exc:  # a file changed or vanished after the scan: take the next one
            warnings.warn(f"could not read item {item} ({type(exc).__name__}: {exc}); using the next", stacklevel=2)
            x = self.source.crop((item + 1) % len(self.source), rng, self.length)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).unsqueeze(0)


class StepBatches(torch.utils.data.Sampler):
    """Batches of (item, crop seed) for steps start, start+1, ... of this rank.

    Position p = step * batch + j of rank r reads epoch p // per_rank, where each epoch is a seeded
    permutation of all items dealt round-robin to the ranks."""

    def __init__(self, n_items, batch_size, seed, start_step=0, rank=0, world=1, steps=None):
        self.n, self.batch, self.seed = n_items, batch_size, seed
        self.start, self.rank, self.world, self.steps = start_step, rank, world, steps
        self.per_rank = max(1, n_items // world)
        self._perm_epoch, self._perm = None, None

    def _item(self, p):
        epoch, k = divmod(p, self.per_rank)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[(self.rank + k * self.world) % self.n])

    def batch_for(self, step):
        base = step * self.batch
        return [(self._item(base + j), (self.seed, self.rank, base + j)) for j in range(self.batch)]

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            yield self.batch_for(step)
            step += 1

    def __len__(self):
        return max(0, self.steps - self.start) if self.steps is not None else 1 << 62


def build_sources(cfg, sample_rate, out_dir, log=print):
    """(train source, held-out source, description) for a TrainConfig. Raises DataError before any
    model is built when the data cannot be used."""
    if cfg.data is None:
        seconds = max(cfg.segment_seconds, cfg.eval_seconds) + 0.5
        train = ArraySource(demo_corpus(cfg.seed, cfg.demo_clips, sample_rate, seconds))
        n_eval = cfg.eval_clips
        held = ArraySource(demo_corpus(cfg.seed + 1_000_003, n_eval, sample_rate, cfg.eval_seconds), "demo held-out")
        return train, held
    files, _ = scan_folder(cfg.data, Path(out_dir) / "data_index.json", log=log)
    train_files, held_files = split_files(files, cfg.holdout_fraction)
    if train_files is held_files:
        log("data: only one usable file, so evaluation uses the training file")
    return FolderSource(cfg.data, train_files, sample_rate), FolderSource(cfg.data, held_files, sample_rate)


def eval_batch(source, count, length, seed):
    """A fixed held-out batch [count, 1, length]: the same crops at every evaluation."""
    ds = CropDataset(source, length)
    keys = [(i % len(source), (seed, 0xE5A1, i)) for i in range(count)]
    return torch.stack([ds[k] for k in keys])
