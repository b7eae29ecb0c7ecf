"""The codec as nn.Modules built only from `fastcodec.ops`, so every backend runs the same network;
the one package that calls the ops (the codec and the trainer use these modules and names).

- CausalConv1d, CausalConvTranspose1d: the fused ops with parameters (layers.py)
- ResidualUnit, Encoder, Decoder: the SoundStream encoder/decoder (blocks.py)
- EncoderStream, DecoderStream, StreamChain and the per-layer streams: prepared streams that run
  the layers chunk by chunk with their state, equal to the offline result (streams.py;
  `encoder.stream()`, `decoder.stream()`); frame() is the scope a stream's call runs in
- ResidualVQ: quantizer dropout, EMA codebooks, straight-through (quantizer.py; codebook learning
  in codebooks.py)
- SoundStream: the whole codec; CodecConfig and PRESETS describe it as data (config.py)
- CriticInputConv1d, CriticGroupedConv1d, CriticInputConv2d: the training critics' convs that run
  on fastcodec's kernels (critic_convs.py)
- full_precision(), autocast_dtype(): precision under autocast (precision.py); tuning: measured
  'auto' for a model (tuning.py)
- set_backend(module, backend), resolve_backend, BACKENDS, BackendUnavailable: choosing backends
"""
from __future__ import annotations

from torch import nn

from ..ops import BACKENDS, BackendUnavailable, resolve_backend
from .blocks import Decoder, DecoderBlock, Encoder, EncoderBlock, ResidualUnit
from .config import PRESETS, CodecConfig, preset
from .critic_convs import CriticGroupedConv1d, CriticInputConv1d, CriticInputConv2d, _FastcodecConvMixin
from .layers import CausalConv1d, CausalConvTranspose1d
from .precision import autocast_dtype, full_precision
from .quantizer import QuantizerOutput, ResidualVQ
from .soundstream import CodecOutput, SoundStream
from .streams import (
    CausalConv1dStream,
    CausalConvTranspose1dStream,
    DecoderStream,
    EncoderStream,
    StreamChain,
    frame,
    layer_stream,
)

__all__ = [
    "CausalConv1d", "CausalConvTranspose1d", "ResidualUnit", "EncoderBlock", "DecoderBlock", "Encoder", "Decoder",
    "EncoderStream", "DecoderStream", "StreamChain", "CausalConv1dStream", "CausalConvTranspose1dStream",
    "layer_stream", "frame",
    "ResidualVQ", "QuantizerOutput", "SoundStream", "CodecOutput", "CodecConfig", "PRESETS", "preset",
    "CriticInputConv1d", "CriticGroupedConv1d", "CriticInputConv2d",
    "autocast_dtype", "full_precision",
    "set_backend", "resolve_backend", "BACKENDS", "BackendUnavailable",
]


def set_backend(module: nn.Module, backend: str) -> nn.Module:
    """Run every fastcodec layer in `module` (the codec's layers and quantizer, the critics' convs)
    on `backend` ('auto' | 'torch' | 'cpp' | 'cuda' | 'triton')."""
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {', '.join(BACKENDS)}")
    for m in module.modules():
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d, ResidualVQ, _FastcodecConvMixin)):
            m.backend = backend
    return module
