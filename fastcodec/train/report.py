"""What training writes besides checkpoints: CSV metrics (and TensorBoard when installed),
spectrogram PNGs and decoded wav files. No plotting or audio library is needed: PNG and WAV are
written with the standard library (zlib, wave)."""
from __future__ import annotations

import csv
import io
import struct
import wave
import zlib
from pathlib import Path

import numpy as np

from ..checkpoint import atomic_write


class CSVLog:
    """Rows of fixed columns appended to a CSV file. Opening at `resume_step` drops rows logged
    after it (they belong to steps that will be trained again), atomically."""

    def __init__(self, path, columns, resume_step=None):
        self.path, self.columns = Path(path), list(columns)
        rows = []
        if resume_step is not None and self.path.exists():
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                old = reader.fieldnames or []
                if "step" in old and set(old) <= set(self.columns):  # an older layout: columns added since stay blank
                    rows = [r for r in reader if int(float(r["step"])) <= resume_step]
                else:  # another layout: kept aside, never lost
                    self.path.replace(_unused(self.path.with_suffix(".old.csv")))
        buf = io.StringIO()
        w = csv.DictWriter(buf, self.columns)
        w.writeheader()
        w.writerows(rows)
        atomic_write(self.path, lambda f: f.write(buf.getvalue().encode()))

    def write(self, row: dict):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({c: _fmt(row.get(c, "")) for c in self.columns})


def _unused(path: Path) -> Path:
    """path, or path with .1, .2, ... before its suffix: the first name not taken."""
    k, candidate = 0, path
    while candidate.exists():
        k += 1
        candidate = path.with_name(f"{path.stem}.{k}{path.suffix}")
    return candidate


def _fmt(v):
    return f"{v:.6g}" if isinstance(v, float) else v


def tensorboard_writer(log_dir):
    """A SummaryWriter when tensorboard is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _png_bytes(rgb: np.ndarray) -> bytes:
    """rgb: [H, W, 3] uint8 -> PNG file bytes."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _colormap(v: np.ndarray) -> np.ndarray:
    """v in [0, 1] -> uint8 RGB on a dark-blue to yellow ramp (perceptually ordered, like 'magma')."""
    stops = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104], [254, 159, 109], [252, 253, 191]],
                     dtype=np.float64)
    x = np.clip(v, 0, 1) * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def spectrogram_png(path, panels, floor_db=-80.0):
    """Stack log-magnitude spectrograms ([freq, frames] arrays, low frequencies at the bottom) into
    one PNG, separated by a white line, on a shared dB scale."""
    dbs = [20 * np.log10(np.maximum(p, 1e-10)) for p in panels]
    top = max(float(d.max()) for d in dbs)
    rows = []
    for d in dbs:
        rows.append(_colormap((d[::-1] - (top + floor_db)) / -floor_db))
        rows.append(np.full((2, d.shape[1], 3), 255, np.uint8))
    img = np.concatenate(rows[:-1], axis=0)
    atomic_write(path, lambda f: f.write(_png_bytes(img)))


def write_wav(path, audio: np.ndarray, sample_rate: int):
    """Mono float audio [T] -> 16-bit PCM wav (clipped to [-1, 1])."""
    pcm = (np.clip(audio, -1, 1) * 32767).round().astype("<i2")

    def write(f):
        with wave.open(f, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(int(sample_rate))
            w.writeframes(pcm.tobytes())
    atomic_write(path, write)
