"""Spectral features for training losses and quality evaluation: mel filterbanks and multi-scale mel spectrograms.

Computed in fp32 with autocast off (STFTs in half precision lose the quiet bands that the log-mel
loss is there to see). Shapes: audio [B, 1, T] or [B, T]; mel [B, n_mels, frames].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..nn import full_precision


def hz_to_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None):
    """Triangular filters on the HTK mel scale, area-normalised: [n_mels, n_fft // 2 + 1]."""
    fmax = sample_rate / 2 if fmax is None else fmax
    mels = torch.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (bins[None] - lo) / (mid - lo)
    down = (hi - bins[None]) / (hi - mid)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (hi - lo))  # equal area, so wide high bands do not dominate the loss
    return fb.float()


class MelSpectrogram(nn.Module):
    """|STFT| (Hann window, hop = win/4) -> mel. audio [B, 1, T] -> [B, n_mels, frames]."""

    def __init__(self, sample_rate: int, win: int, n_mels: int):
        super().__init__()
        self.win, self.hop = win, win // 4
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        self.register_buffer("fb", mel_filterbank(win, n_mels, sample_rate), persistent=False)

    def forward(self, audio):
        with full_precision():
            x = audio.float().reshape(-1, audio.shape[-1])
            spec = torch.stft(x, self.win, self.hop, window=self.window, center=True, pad_mode="reflect"
                              if x.shape[-1] > self.win // 2 else "constant", return_complex=True).abs()
            return torch.matmul(self.fb, spec)


def default_mel_bands(win: int) -> int:
    # About 8 FFT bins per band at the finest scale up to 128 bands at the coarsest: more bands than
    # bins would leave empty filters.
    return max(8, min(128, win // 8))


class MultiScaleMel(nn.Module):
    """Mel spectrograms at several window sizes (64 .. 2048 by default)."""

    def __init__(self, sample_rate: int, windows=(64, 128, 256, 512, 1024, 2048)):
        super().__init__()
        self.scales = nn.ModuleList(MelSpectrogram(sample_rate, w, default_mel_bands(w)) for w in windows)

    def forward(self, audio):
        return [s(audio) for s in self.scales]


def mel_distance(mels_a, mels_b, eps=1e-5):
    """Mean over scales of L1(mel) + L1(log mel): the reconstruction loss, and the eval metric."""
    total = 0.0
    for a, b in zip(mels_a, mels_b):
        total = total + (a - b).abs().mean() + ((a + eps).log() - (b + eps).log()).abs().mean()
    return total / len(mels_a)
