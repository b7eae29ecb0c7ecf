"""The codec: causal encoder -> residual VQ -> causal decoder. x [B, 1, T] at cfg.sample_rate."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .blocks import Decoder, Encoder
from .config import CodecConfig
from .quantizer import QuantizerOutput, ResidualVQ


@dataclasses.dataclass
class CodecOutput:
    audio: torch.Tensor               # [B, 1, T] reconstruction, trimmed to the input length
    quantizer: QuantizerOutput
    stages: list | None               # decoder activations [B, C_i, T_i] when asked for


class SoundStream(nn.Module):
    """Works on any length T >= 1: the encoder gives ceil(T / hop) frames (the last one covers the
    causal tail), the decoder hop samples per frame, and the output is trimmed back to T."""

    def __init__(self, cfg: CodecConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = ResidualVQ(cfg)
        self.decoder = Decoder(cfg)

    @staticmethod
    def _check_audio(x):
        if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[1] != 1:
            shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"audio must be a tensor [B, 1, T] (mono), got {shape}")
        if x.shape[2] == 0:
            raise ValueError("audio is empty (T = 0)")

    def forward(self, x, n_q=None, return_stages=False, generator=None, quantize=True) -> CodecOutput:
        """x [B, 1, T] -> CodecOutput. In training the quantizer draws n_q per example (dropout).
        quantize=False passes the latent straight to the decoder (an autoencoder warm-up before the
        codebooks are initialised from latents that mean something)."""
        self._check_audio(x)
        z = self.encoder(x)
        if quantize:
            qo = self.quantizer(z, n_q=n_q, generator=generator)
        else:
            B, _, F = z.shape
            qo = QuantizerOutput(z, z.new_zeros(B, 0, F, dtype=torch.long), z.new_zeros(B, dtype=torch.long),
                                 z.new_zeros((), dtype=torch.float32), None)
        out = self.decoder(qo.quantized, return_stages=return_stages)
        y, stages = out if return_stages else (out, None)
        return CodecOutput(y[..., : x.shape[2]], qo, stages)

    @torch.no_grad()
    def encode(self, x, n_q=None):
        """x [B, 1, T] -> codes [B, n_q, ceil(T / hop)] int64."""
        self._check_audio(x)
        return self.quantizer.encode(self.encoder(x), n_q)

    @torch.no_grad()
    def decode(self, codes, length=None):
        """codes [B, n_q, F] -> audio [B, 1, F * hop], cut to `length` samples when given."""
        y = self.decoder(self.quantizer.decode(codes))
        return y if length is None else y[..., :length]
