"""Adversarial critics for training (not part of the codec, so they use torch.nn layers: 2-D and
non-causal convs). The waveform critic's first and grouped strided layers are fastcodec.nn's
critic convs, which run on fastcodec's kernels where the critics' backend resolves to cpp and as
plain nn.Conv1d elsewhere (nn/critic_convs.py).

- WaveDiscriminator: MelGAN's multi-scale waveform critic, one sub-critic per scale (the signal,
  then average-pooled by 2, 4...); grouped strided convs.
- STFTDiscriminator: SoundStream's critic on the complex STFT (real and imaginary parts as two
  channels) with 2-D convs striding over time and frequency; one per window size.
Every critic returns, per sub-critic, its list of feature maps, the last being the logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ..nn import full_precision, set_backend
from ..nn.critic_convs import CriticGroupedConv1d, CriticInputConv1d, CriticInputConv2d


def _features(layers, logits, x):
    """Every layer's LeakyReLU(0.2) output, then the logits: what the losses read of a critic."""
    feats = []
    for layer in layers:
        x = F.leaky_relu(layer(x), 0.2)
        feats.append(x)
    feats.append(logits(x))
    return feats


class _WaveCritic(nn.Module):
    def __init__(self, width: int, depth: int = 4):
        super().__init__()
        layers = [weight_norm(CriticInputConv1d(1, width, 15, padding=7))]
        c, cap = width, 64 * width
        for _ in range(depth):
            out = min(c * 4, cap)
            layers.append(weight_norm(CriticGroupedConv1d(c, out, 41, stride=4, padding=20, groups=max(1, c // 4))))
            c = out
        layers.append(weight_norm(nn.Conv1d(c, c, 5, padding=2)))
        self.layers = nn.ModuleList(layers)
        self.logits = weight_norm(nn.Conv1d(c, 1, 3, padding=1))

    def forward(self, x):
        return _features(self.layers, self.logits, x)


class WaveDiscriminator(nn.Module):
    """audio [B, 1, T] -> [[features..., logits] per scale]."""

    def __init__(self, width: int = 16, scales: int = 3):
        super().__init__()
        self.critics = nn.ModuleList(_WaveCritic(width) for _ in range(scales))

    def forward(self, x):
        out = []
        for i, critic in enumerate(self.critics):
            if i:
                x = F.avg_pool1d(x, 4, stride=2, padding=1, count_include_pad=False)
            out.append(critic(x))
        return out


class _STFTCritic(nn.Module):
    def __init__(self, win: int, width: int):
        super().__init__()
        self.win, self.hop = win, win // 4
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        chans = [width, 2 * width, 2 * width, 4 * width, 4 * width, 8 * width, 8 * width]
        strides = [(1, 2), (2, 2), (1, 2), (2, 2), (1, 2), (2, 2)]
        layers = [weight_norm(CriticInputConv2d(2, chans[0], 7, padding=3))]
        for cin, cout, s in zip(chans[:-1], chans[1:], strides):
            layers.append(weight_norm(nn.Conv2d(cin, cout, (3, 4), stride=s, padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.logits = weight_norm(nn.Conv2d(chans[-1], 1, (3, 3), padding=1))

    def forward(self, audio):
        with full_precision():
            spec = torch.stft(audio.float().squeeze(1), self.win, self.hop, window=self.window, center=True,
                              return_complex=True)                                  # [B, freq, frames]
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3).to(audio.dtype)  # [B, 2, frames, freq]
        return _features(self.layers, self.logits, x)


class STFTDiscriminator(nn.Module):
    """audio [B, 1, T] -> [[features..., logits] per window size]."""

    def __init__(self, width: int = 32, windows=(1024,)):
        super().__init__()
        self.critics = nn.ModuleList(_STFTCritic(w, width) for w in windows)

    def forward(self, x):
        return [critic(x) for critic in self.critics]


class Critics(nn.Module):
    """Both critics as one module (one optimizer, one DDP wrapper): audio -> list of outputs."""

    def __init__(self, wave_width: int, stft_width: int, stft_windows=(1024,)):
        super().__init__()
        self.wave = WaveDiscriminator(wave_width)
        self.stft = STFTDiscriminator(stft_width, stft_windows)

    def forward(self, x):
        return self.wave(x) + self.stft(x)

    def set_backend(self, backend: str) -> "Critics":
        """Run the layers fastcodec has kernels for on `backend` (the codec's): see the module's docstring."""
        return set_backend(self, backend)
