"""The codec as nn.Modules built only from `fastcodec.ops`, so every backend runs the same network.

- CausalConv1d, CausalConvTranspose1d: the fused ops with parameters (layers.py)
- ResidualUnit, Encoder, Decoder: the SoundStream encoder/decoder (blocks.py); `encoder.stream()`
  and `decoder.stream()` run them chunk by chunk with their state (equal to the offline result)
- ResidualVQ: quantizer dropout, EMA codebooks, straight-through (quantizer.py)
- SoundStream: the whole codec; CodecConfig and PRESETS describe it as data (config.py)
"""
from __future__ import annotations

from torch import nn

from .. import ops
from .blocks import Decoder, DecoderBlock, DecoderStream, Encoder, EncoderBlock, EncoderStream, ResidualUnit
from .config import PRESETS, CodecConfig, preset
from .layers import CausalConv1d, CausalConvTranspose1d
from .quantizer import QuantizerOutput, ResidualVQ
from .soundstream import CodecOutput, SoundStream

__all__ = [
    "CausalConv1d", "CausalConvTranspose1d", "ResidualUnit", "EncoderBlock", "DecoderBlock", "Encoder", "Decoder",
    "EncoderStream", "DecoderStream",
    "ResidualVQ", "QuantizerOutput", "SoundStream", "CodecOutput", "CodecConfig", "PRESETS", "preset",
    "set_backend",
]


def set_backend(module: nn.Module, backend: str) -> nn.Module:
    """Run every fastcodec layer in `module` on `backend` ('auto' | 'torch' | 'cpp' | 'cuda' | 'triton')."""
    if backend != "auto" and backend not in ops.BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {', '.join(ops.BACKENDS)}")
    for m in module.modules():
        if isinstance(m, (CausalConv1d, CausalConvTranspose1d, ResidualVQ)):
            m.backend = backend
    return module
