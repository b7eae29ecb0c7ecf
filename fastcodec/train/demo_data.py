"""The built-in demo set: procedurally generated audio, so training runs with nothing downloaded.

Three kinds of sound, each clip a random mix of a few events:
- speech-like: a glottal-pulse-rich harmonic source whose pitch glides, shaped by three formants
  that glide between vowel-like targets;
- harmonic notes: a few partials with an attack-decay envelope (plucked or bowed);
- percussive noise: filtered noise bursts with exponential decay.
Every clip is a pure function of (seed, index), so the corpus is identical on every rank and run.
"""
from __future__ import annotations

import numpy as np

# (F1, F2, F3) in Hz of a few vowels, the targets the formant glides move between.
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
                   dtype=np.float64)
_GAIN_HOP = 32  # at most this many samples between the points where speech harmonics' gains are computed


def _speech(rng, n, sr):
    t = np.arange(n) / sr
    f0 = rng.uniform(90, 260) * np.exp(np.cumsum(rng.normal(0, 0.6, n)) / sr * 2)  # slow random pitch glide
    f0 = np.clip(f0, 60, 400)
    a, b = _VOWELS[rng.integers(len(_VOWELS), size=2)]
    mix = 0.5 - 0.5 * np.cos(np.pi * np.clip(t / max(t[-1], 1e-9), 0, 1))
    formants = a[None] * (1 - mix[:, None]) + b[None] * mix[:, None]               # [n, 3]
    phase = 2 * np.pi * np.cumsum(f0) / sr
    # Each harmonic's gain (its distance to the three formants) moves slowly, so it is computed
    # every _GAIN_HOP samples and interpolated, and the harmonics come from a complex rotation
    # rather than np.sin: per-sample Gaussians and sines made the demo set take ~18 s to build.
    # Harmonics that never come near a formant (gain < 1e-6 of the loudest, far below a 16-bit
    # LSB) are left out.
    hop = max(1, min(_GAIN_HOP, n // 256))  # short clips glide fast: a finer grid
    blocks = -(-n // hop)
    grid = np.minimum(np.arange(blocks + 1) * hop, n - 1)                            # [m]
    ramp = np.arange(hop) / hop
    k = np.arange(1, int(sr / 2 / f0.min()) + 1)[:, None]                           # [K, 1]
    fk = k * f0[grid]                                                                # [K, m]
    gain = np.zeros_like(fk)
    for j in range(3):  # formant j: bandwidth 60 + 40 j Hz, weight 1 / (j + 1)
        gain += np.exp(-0.5 * ((fk - formants[grid, j]) / (60 + 40 * j)) ** 2) / (j + 1)
    gain *= (fk < sr / 2) / np.sqrt(k)
    audible = gain.max(1) > 1e-6 * gain.max()
    first, last = np.flatnonzero(audible)[[0, -1]]
    out = np.zeros(n)
    step = np.exp(1j * phase)
    harmonic = np.exp(1j * (first + 1) * phase)                                     # e^{i k phase}
    for i in range(first, last + 1):
        if audible[i]:
            g = gain[i]
            out += (g[:-1, None] + (g[1:] - g[:-1])[:, None] * ramp).reshape(-1)[:n] * harmonic.imag
        harmonic *= step
    syllables = 0.5 - 0.5 * np.cos(2 * np.pi * t * rng.uniform(2, 5))             # syllable-rate envelope
    return out * syllables


def _note(rng, n, sr):
    t = np.arange(n) / sr
    f0 = 440.0 * 2 ** ((rng.integers(-24, 13)) / 12)
    out = np.zeros(n)
    for k in range(1, 9):
        if k * f0 >= sr / 2:
            break
        out += rng.uniform(0.2, 1.0) / k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    attack = rng.uniform(0.002, 0.1)
    env = np.minimum(t / attack, 1.0) * np.exp(-t * rng.uniform(1.0, 8.0))
    return out * env


def _hit(rng, n, sr):
    t = np.arange(n) / sr
    # Noise through a one-pole response sets the brightness: drum-like (low-passed) or
    # cymbal-like (high-passed); applied in the frequency domain.
    spec = np.fft.rfft(rng.normal(0, 1, n))
    f = np.fft.rfftfreq(n, 1 / sr)
    corner = rng.uniform(200, 6000)
    low = 1 / np.sqrt(1 + (f / corner) ** 2)
    shape = low if rng.random() < 0.5 else np.sqrt(np.clip(1 - low ** 2, 0, None))
    return np.fft.irfft(spec * shape, n) * np.exp(-t * rng.uniform(8, 40))


def demo_clip(seed: int, index: int, sample_rate: int, seconds: float) -> np.ndarray:
    """One demo clip [T] float32 at about -12 dBFS peak."""
    rng = np.random.default_rng([seed, index])
    n = int(round(seconds * sample_rate))
    out = np.zeros(n)
    for _ in range(rng.integers(1, 4)):
        kind = rng.choice(3, p=[0.45, 0.35, 0.2])
        start = int(rng.uniform(0, 0.6) * n)
        length = n - start
        ev = (_speech, _note, _hit)[kind](rng, length, sample_rate)
        out[start:] += ev / (np.abs(ev).max() + 1e-9) * rng.uniform(0.3, 1.0)
    out = out / (np.abs(out).max() + 1e-9) * 0.25
    return out.astype(np.float32)


def demo_corpus(seed: int, count: int, sample_rate: int, seconds: float) -> np.ndarray:
    """[count, T] float32 clips; the training set and the held-out set use different seeds."""
    return np.stack([demo_clip(seed, i, sample_rate, seconds) for i in range(count)])
