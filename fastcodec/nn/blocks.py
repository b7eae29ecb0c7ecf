"""Encoder and decoder of the codec, from causal conv layers only.

Encoder: x [B, 1, T] -> z [B, D, ceil(T / hop)]; frame k codes samples up to (k+1)*hop - 1, so the
codec's algorithmic latency is one hop and its output sample t never depends on input after the end
of t's frame. An input conv (k7, 1 -> C); per stride s_i a block
of residual units (dilations 1, 3, 9) at C*2^i channels followed by a strided conv (kernel 2*s_i) to
C*2^(i+1) channels; an output conv (k3) to the code dimension D.
Decoder mirrors it: input conv (k7, D -> C*2^n), per stride (reversed) a causal transposed conv
(kernel 2*s) halving the channels then the residual units; an output conv (k7, C -> 1).
Every conv is causal, so the codec works on any length and output t depends on input <= t only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CodecConfig
from .layers import CausalConv1d, CausalConvTranspose1d


def _act(cfg: CodecConfig):
    return {"activation": cfg.activation, "negative_slope": cfg.negative_slope}


class ResidualUnit(nn.Module):
    """y = conv1x1(act(conv_k(x, dilation))) + x, the skip fused into the 1x1 conv; the inner conv maps
    C to C / residual_bottleneck channels. x: [B, C, T]."""

    def __init__(self, channels, dilation, cfg: CodecConfig):
        super().__init__()
        hidden = max(1, channels // cfg.residual_bottleneck)
        self.conv = CausalConv1d(channels, hidden, cfg.residual_kernel, dilation=dilation, **_act(cfg))
        self.proj = CausalConv1d(hidden, channels, 1)
        with torch.no_grad():
            # Each unit starts close to the identity, so a dozen of them do not compound the variance.
            self.proj.weight.mul_(0.1)

    def forward(self, x):
        return self.proj(self.conv(x), residual=x)


class EncoderBlock(nn.Module):
    """Residual units at `channels`, then act(strided conv) to 2*channels: [B, C, T] -> [B, 2C, ceil(T/s)]."""

    def __init__(self, channels, stride, cfg: CodecConfig):
        super().__init__()
        self.units = nn.Sequential(*(ResidualUnit(channels, d, cfg) for d in cfg.dilations))
        self.down = CausalConv1d(channels, 2 * channels, 2 * stride, stride=stride, **_act(cfg))

    def forward(self, x):
        return self.down(self.units(x))


class DecoderBlock(nn.Module):
    """act(transposed conv) to channels/2, then residual units: [B, C, T] -> [B, C/2, T*s]."""

    def __init__(self, channels, stride, cfg: CodecConfig):
        super().__init__()
        self.up = CausalConvTranspose1d(channels, channels // 2, 2 * stride, stride=stride, **_act(cfg))
        self.units = nn.Sequential(*(ResidualUnit(channels // 2, d, cfg) for d in cfg.dilations))

    def forward(self, x):
        return self.units(self.up(x))


class Encoder(nn.Module):
    """x: [B, 1, T] -> z: [B, D, ceil(T / hop)]; frame k sees x[..., : (k+1)*hop] (one hop of latency)."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c = cfg.channels
        self.input = CausalConv1d(1, c, 7)
        blocks = []
        for s in cfg.strides:
            blocks.append(EncoderBlock(c, s, cfg))
            c *= 2
        self.blocks = nn.Sequential(*blocks)
        self.output = CausalConv1d(c, cfg.code_dim, 3)
        self.hop = cfg.hop

    def stream(self):
        """A chunked encoder holding its own state (streams.EncoderStream)."""
        from .streams import EncoderStream

        return EncoderStream(self)

    def history_samples(self) -> int:
        """How many samples before a frame's last one its code can depend on (the receptive field
        less one): encoding a window that starts that much before a frame, from a fresh start,
        gives that frame's code as encoding from the beginning does."""
        h, scale = 0, 1  # scale: input samples per step of the current layer's input
        for layer in flatten(self):
            conv = layer.conv if isinstance(layer, ResidualUnit) else layer
            h += (conv.weight.shape[2] - 1) * conv.dilation * scale
            scale *= conv.stride
        return h

    def forward(self, x):
        # The causal ops put output m's last tap at input m*stride, so frame k would see x up to
        # k*hop only, and the decoder would have to guess the hop - 1 samples after it. One zero in
        # front (its frame dropped) moves every frame's end to (k+1)*hop - 1; hop - 1 zeros behind
        # complete the last, partial frame.
        x = F.pad(x, (1, self.hop - 1))
        return self.output(self.blocks(self.input(x)))[..., 1:]


class Decoder(nn.Module):
    """z: [B, D, F] -> y: [B, 1, F * hop].

    forward(z, return_stages=True) also returns the activations after the input conv and after
    each block ([B, C_i, F * prod(strides so far)]), for the auxiliary loss on their channel means.
    """

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        c = cfg.channels * 2 ** len(cfg.strides)
        self.input = CausalConv1d(cfg.code_dim, c, 7, **_act(cfg))
        blocks = []
        for s in reversed(cfg.strides):
            blocks.append(DecoderBlock(c, s, cfg))
            c //= 2
        self.blocks = nn.ModuleList(blocks)
        self.output = CausalConv1d(c, 1, 7)

    def stream(self):
        """A chunked decoder holding its own state (streams.DecoderStream)."""
        from .streams import DecoderStream

        return DecoderStream(self)

    def history_frames(self) -> int:
        """How many frames before its own an output sample can depend on (an upper bound): decoding
        that many frames early with a fresh state gives the following audio as decoding from the
        start does, since every layer is a finite causal filter (what seeking in a file relies on)."""
        h = 0  # history in steps of the current layer's output, walking back from the audio
        for layer in reversed(flatten(self)):
            if isinstance(layer, ResidualUnit):
                h += (layer.conv.weight.shape[2] - 1) * layer.conv.dilation
            elif isinstance(layer, CausalConvTranspose1d):
                # Output m sums inputs j with j*s <= m <= j*s + K - 1.
                h = -(-(h + layer.weight.shape[2] - 1) // layer.stride)
            else:
                h += (layer.weight.shape[2] - 1) * layer.dilation
        return h

    def forward(self, z, return_stages=False):
        h = self.input(z)
        stages = [h]
        for block in self.blocks:
            h = block(h)
            stages.append(h)
        y = self.output(h)
        return (y, stages) if return_stages else y


def flatten(module):
    """The layers of an encoder or decoder in order, residual units kept whole."""
    out = []
    for m in module.children():
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d, ResidualUnit)):
            out.append(m)
        else:
            out.extend(flatten(m))
    return out
