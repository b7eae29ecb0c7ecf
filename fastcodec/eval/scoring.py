"""Scoring a trained codec on a folder of audio: each file coded once at full depth, decoded at each
asked number of stages, and compared to the input at the codec's rate.

Categories come from a manifest (a CSV with `path` and `category` columns, paths relative to the
manifest's folder; scripts/make_corpus.py writes one) or else from each file's first folder name.
PESQ is only defined for speech, so it is scored on the categories matching the speech patterns.
"""
from __future__ import annotations

import csv
import dataclasses
import fnmatch
import math
from pathlib import Path

import numpy as np
import torch

from ..audio_files import AUDIO_SUFFIXES, audio_files
from ..codec.errors import AudioError
from ..codec.files import soundfile
from . import metrics as m
from .spectral import MultiScaleMel, mel_distance

METRICS = ("si_sdr", "mel", "stoi", "pesq")
FILE_COLUMNS = ["file", "category", "seconds", "n_q", "kbps", "si_sdr", "mel", "stoi", "pesq"]
TOP_LEVEL = "(top level)"  # the category of files directly in the folder, without a manifest


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says why."""


@dataclasses.dataclass(frozen=True)
class Item:
    path: str      # relative to the audio folder
    category: str


def find_items(root, manifest=None) -> list[Item]:
    """The files to score, sorted by path: those of the manifest (default: root/manifest.csv when
    there is one) that lie in root, else every audio file under root."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"{root}: no such folder")
    if manifest is not None and not Path(manifest).is_file():
        raise EvalError(f"{manifest}: no such manifest file")
    manifest = Path(manifest) if manifest is not None else root / "manifest.csv"
    if manifest.is_file():
        return _from_manifest(root, manifest)
    paths = audio_files(root)
    if not paths:
        raise EvalError(f"{root}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in it or below it")
    items = []
    for p in paths:
        rel = p.relative_to(root)
        items.append(Item(rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else TOP_LEVEL))
    return items


def _from_manifest(root: Path, manifest: Path) -> list[Item]:
    """The manifest's rows (paths relative to the manifest's own folder) whose files lie in root."""
    try:
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EvalError(f"{manifest}: unreadable ({exc})") from None
    if not rows or not {"path", "category"} <= set(rows[0]):
        raise EvalError(f"{manifest}: a manifest needs `path` and `category` columns and at least one row")
    base, top = manifest.parent.resolve(), root.resolve()
    items = {}
    for line, r in enumerate(rows, start=2):
        path, category = (r.get("path") or "").strip(), (r.get("category") or "").strip()
        if not path or not category:
            raise EvalError(f"{manifest}, line {line}: empty path or category")
        full = (base / path).resolve()
        if full.is_relative_to(top):
            items[full.relative_to(top).as_posix()] = Item(full.relative_to(top).as_posix(), category)
    if not items:
        raise EvalError(f"{manifest}: none of its files lies in {root}")
    return sorted(items.values(), key=lambda it: it.path)


def speech_categories(categories, patterns) -> set:
    return {c for c in categories if any(fnmatch.fnmatchcase(c, p) for p in patterns)}


def read_mono(path, sample_rate: int, max_seconds: float | None) -> np.ndarray:
    """path -> float64 [T] at sample_rate (channel mean; soxr), at most max_seconds from the start.
    AudioError when it cannot be read, holds no audio or non-finite samples."""
    sf = soundfile()
    try:
        info = sf.info(str(path))
        frames = info.frames if not max_seconds else min(info.frames, int(round(max_seconds * info.samplerate)))
        x, rate = sf.read(str(path), frames=frames, dtype="float64", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: not a readable audio file ({type(exc).__name__}: {str(exc)[:160]})") from None
    if x.shape[0] == 0:
        raise AudioError(f"{path}: holds no audio")
    if not np.isfinite(x).all():
        raise AudioError(f"{path}: holds NaN or Inf samples")
    x = x.mean(1)
    if rate != sample_rate:
        import soxr

        x = soxr.resample(x, rate, sample_rate)
    if x.shape[0] == 0:
        raise AudioError(f"{path}: too short to resample to {sample_rate} Hz ({frames} samples at {rate} Hz)")
    return x


class Scorer:
    """Scores files with one codec. metrics: a subset of METRICS (PESQ on speech files only)."""

    def __init__(self, codec, n_qs, metrics=METRICS, max_seconds: float | None = 30.0):
        self.codec, self.n_qs, self.metrics, self.max_seconds = codec, sorted(set(n_qs)), tuple(metrics), max_seconds
        for n in self.n_qs:
            codec.model.quantizer.check_n_q(n)
        self.mel = MultiScaleMel(codec.sample_rate)
        self.Q = codec.cfg.n_q

    @torch.no_grad()
    def score(self, path, item: Item, speech: bool):
        """-> (rows: one per n_q with FILE_COLUMNS, code counts [Q, K] at full depth)."""
        codec, sr = self.codec, self.codec.sample_rate
        x = read_mono(path, sr, self.max_seconds)
        ref = torch.from_numpy(x).float()
        enc = codec.encode(ref, sr, n_q=self.Q)
        counts = m.code_counts(enc.codes[0, 0], codec.cfg.codebook_size)
        rows = []
        for n in self.n_qs:
            y = codec.decode(dataclasses.replace(enc, codes=enc.codes[:, :, :n].contiguous(), n_q=n))[0, 0].cpu()
            row = {"file": item.path, "category": item.category, "seconds": len(x) / sr, "n_q": n,
                   "kbps": codec.bitrate(n) / 1000}
            if "si_sdr" in self.metrics:
                row["si_sdr"] = float(m.si_sdr(y[None, None], ref[None, None])[0])
            if "mel" in self.metrics:
                row["mel"] = float(mel_distance(self.mel(y[None, None]), self.mel(ref[None, None])))
            if "stoi" in self.metrics:
                row["stoi"] = m.stoi(x, y.double().numpy(), sr)
            if "pesq" in self.metrics and speech:
                row["pesq"] = m.pesq_wb(x, y.double().numpy(), sr)
            rows.append(row)
        return rows, counts


def summarize(file_rows, counts_by_category):
    """Means per (category, n_q) and over all files, and codebook usage per category and stage.

    -> (summary rows: category, n_q, kbps, files, seconds, and each metric's mean over the files
    that have it, with `<metric>_files` counting them; usage rows: category, stage, perplexity, dead_pct)."""
    groups = {}
    for r in file_rows:
        for cat in (r["category"], "all"):
            groups.setdefault((cat, r["n_q"]), []).append(r)
    cats = sorted({r["category"] for r in file_rows})
    order = cats + (["all"] if len(cats) > 1 else [])
    summary = []
    for cat in order:
        for n in sorted({n for c, n in groups if c == cat}):
            rows = groups[(cat, n)]
            s = {"category": cat, "n_q": n, "kbps": rows[0]["kbps"], "files": len(rows),
                 "seconds": sum(r["seconds"] for r in rows)}
            for k in METRICS:
                vals = [r[k] for r in rows if k in r and not math.isnan(r[k])]
                s[k] = float(np.mean(vals)) if vals else math.nan
                s[f"{k}_files"] = len(vals)
            summary.append(s)
    usage = []
    total = None
    for cat in cats:
        counts = counts_by_category[cat]
        total = counts.clone() if total is None else total + counts
        usage += _usage_rows(cat, counts)
    if len(cats) > 1:
        usage += _usage_rows("all", total)
    return summary, usage


def _usage_rows(category, counts):
    perplexity, dead = m.codebook_usage(counts)
    return [{"category": category, "stage": q + 1, "perplexity": float(perplexity[q]), "dead_pct": 100 * float(dead[q])}
            for q in range(counts.shape[0])]
