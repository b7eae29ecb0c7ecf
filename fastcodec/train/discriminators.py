"""Adversarial critics for training (not part of the codec, so they use torch.nn layers: 2-D and
non-causal convs). The waveform critic's first and grouped strided layers run on fastcodec's
grouped_conv1d when the critics' backend resolves to cpp (fp32 CPU tensors, no autocast): oneDNN's
grouped kernels run those at 6-45 GFLOP/s on 2 cores, the C++ kernels 2-9x faster (3x geometric
mean over the layers, forward and backward; benchmarks/RESULTS.md). Anything else
(a GPU, autocast, backend 'torch') runs them as plain nn.Conv1d.

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

from .. import ops
from ..nn.layers import autocast_dtype
from ..ops.vq_training import _fp32


class _InputGradByForwardConv(torch.autograd.Function):
    """A stride-1, ungrouped, undilated conv (1-D or 2-D) whose input gradient is the forward conv
    of the output gradient with the flipped, transposed kernel. Same arithmetic; it exists because
    oneDNN's backward-data is 3-5x slower than that forward on a critic's first layer, where the
    input has 1-2 channels (8 x 2 x 126 x 257, 7x7 kernel: 33 ms against 10 on 2 cores)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _CONV[weight.dim()](x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # Under autocast the forward ran in grad's dtype; the backward runs outside autocast, so cast here.
        xc, wc = x.to(grad.dtype), weight.to(grad.dtype)
        spatial = tuple(range(2, weight.dim()))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            pad = tuple(k - 1 - p for k, p in zip(weight.shape[2:], ctx.padding))
            grad_x = _CONV[weight.dim()](grad, wc.transpose(0, 1).flip(spatial), padding=pad).to(x.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            ones = [1] * len(spatial)
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, xc, wc, [weight.shape[0]], ones, list(ctx.padding), ones, False, [0] * len(spatial), 1,
                [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
            grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
            grad_b = grad_b.to(ctx.bias_dtype) if grad_b is not None else None
        return grad_x, grad_w, grad_b, None


_CONV = {3: F.conv1d, 4: F.conv2d}


class _InputConvMixin:
    """A critic's first layer (stride 1, zero 'same' padding); see _InputGradByForwardConv."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if (set(self.stride) | set(self.dilation)) != {1} or self.groups != 1 or self.padding_mode != "zeros" \
                or isinstance(self.padding, str):
            raise ValueError("an input conv must be stride 1, undilated, ungrouped, with numeric zero padding")

    def _conv_forward(self, x, weight, bias):
        return _InputGradByForwardConv.apply(x, weight, bias, self.padding)


class _FastcodecConvMixin:
    """A 1-D critic conv that runs on ops.grouped_conv1d where the critics' backend is cpp."""

    backend = "auto"  # set by Critics.set_backend

    def _conv_forward(self, x, weight, bias):
        if self.backend != "torch" and x.dtype == torch.float32 and autocast_dtype(x) is None \
                and ops.resolve_backend(self.backend, x) == "cpp":
            # The op's 'auto' picks between the C++ kernel and oneDNN per shape, measured.
            return ops.grouped_conv1d(x, weight, bias, stride=self.stride[0], padding=self.padding[0],
                                      groups=self.groups, backend=self.backend)
        return super()._conv_forward(x, weight, bias)


class _InputConv1d(_InputConvMixin, nn.Conv1d):
    pass


class _CriticInputConv1d(_FastcodecConvMixin, _InputConv1d):
    pass


class _GroupedConv1d(_FastcodecConvMixin, nn.Conv1d):
    pass


class _InputConv2d(_InputConvMixin, nn.Conv2d):
    pass


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
        layers = [weight_norm(_CriticInputConv1d(1, width, 15, padding=7))]
        c, cap = width, 64 * width
        for _ in range(depth):
            out = min(c * 4, cap)
            layers.append(weight_norm(_GroupedConv1d(c, out, 41, stride=4, padding=20, groups=max(1, c // 4))))
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
        layers = [weight_norm(_InputConv2d(2, chans[0], 7, padding=3))]
        for cin, cout, s in zip(chans[:-1], chans[1:], strides):
            layers.append(weight_norm(nn.Conv2d(cin, cout, (3, 4), stride=s, padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.logits = weight_norm(nn.Conv2d(chans[-1], 1, (3, 3), padding=1))

    def forward(self, audio):
        with _fp32():
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
        if backend != "auto" and backend not in ops.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {', '.join(ops.BACKENDS)}")
        for m in self.modules():
            if isinstance(m, _FastcodecConvMixin):
                m.backend = backend
        return self
