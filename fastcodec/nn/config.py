"""The codec's architecture as data: `CodecConfig` and the named presets.

A config is plain JSON-able values, saved beside every checkpoint, so a model is rebuilt from its
checkpoint alone.
"""
from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    sample_rate: int = 24000
    channels: int = 32                    # C: the encoder's blocks run at C, 2C, 4C, 8C channels
    strides: tuple = (2, 4, 5, 8)         # their product is the hop (samples per code frame)
    code_dim: int = 128                   # D: dimension of the quantized latent
    n_q: int = 8                          # Q: residual quantizer stages (the most the model can use)
    codebook_size: int = 1024             # K: codes per stage
    activation: str = "elu"               # 'elu' | 'leaky_relu' | 'silu' | 'snake'
    negative_slope: float = 0.3           # for leaky_relu
    dilations: tuple = (1, 3, 9)          # of the residual units in each block
    residual_kernel: int = 7
    residual_bottleneck: int = 1          # a residual unit's inner conv runs at channels / this (EnCodec: 2)
    # Quantizer training
    quantizer_dropout: float = 1.0        # fraction of training examples coded with a random n_q in 1..Q
    ema_decay: float = 0.99
    dead_code_patience: int = 20          # a code unchosen for this many codebook updates is re-seeded

    def __post_init__(self):
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        object.__setattr__(self, "dilations", tuple(int(d) for d in self.dilations))
        problems = []
        for name in ("sample_rate", "channels", "code_dim", "n_q", "codebook_size", "residual_kernel",
                     "residual_bottleneck"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be a positive int, got {v!r}")
        if not self.strides or any(s < 1 for s in self.strides):
            problems.append(f"strides must be positive ints, got {self.strides}")
        if self.activation not in ("elu", "leaky_relu", "silu", "snake"):
            problems.append(f"activation must be elu, leaky_relu, silu or snake, got {self.activation!r}")
        if not 0.0 <= self.quantizer_dropout <= 1.0:
            problems.append(f"quantizer_dropout must be in [0, 1], got {self.quantizer_dropout}")
        if not 0.0 < self.ema_decay < 1.0:
            problems.append(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if problems:
            raise ValueError("invalid CodecConfig: " + "; ".join(problems))

    @property
    def hop(self) -> int:
        """Samples per code frame."""
        return math.prod(self.strides)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    @property
    def bits_per_code(self) -> int:
        return max(1, math.ceil(math.log2(self.codebook_size)))

    def bitrate(self, n_q: int | None = None) -> float:
        """Bits per second with n_q stages (all Q by default)."""
        return (self.n_q if n_q is None else n_q) * self.bits_per_code * self.frame_rate

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["strides"], d["dilations"] = list(self.strides), list(self.dilations)
        # A field added later is written only where it changes the model, so a model made before it
        # keeps its config, and with it its fingerprint (which names it in .fcdc files).
        for name, old_behaviour in _ADDED_FIELDS.items():
            if d[name] == old_behaviour:
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CodecConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown CodecConfig fields {unknown} (a checkpoint from a newer fastcodec?)")
        return cls(**d)


# Fields added after the first release, with the value that reproduces the models made before them.
_ADDED_FIELDS = {"residual_bottleneck": 1}


PRESETS = {
    # SoundStream at 24 kHz: 75 frames/s, 8 x 10-bit codes -> 6 kbps; 1.5-6 kbps by n_q.
    "soundstream-24k": CodecConfig(),
    # The same codec with EnCodec's cheaper residual unit (kernel 3, inner conv at half the channels):
    # about 0.37x the arithmetic, so it codes faster than EnCodec 24 kHz on a CPU.
    "soundstream-24k-lite": CodecConfig(residual_kernel=3, residual_bottleneck=2),
    # The configuration this project grew from: 16 kHz, 50 frames/s, 15 stages of 256 codes.
    "seed-16k": CodecConfig(sample_rate=16000, channels=32, code_dim=128, n_q=15, codebook_size=256,
                            activation="leaky_relu", negative_slope=0.3),
    # Small enough to train visibly in minutes on two CPU cores (tests, the zero-argument demo). Half
    # of its examples train all 6 stages: in short runs full-rate quality gains, low rates lose little.
    "tiny": CodecConfig(sample_rate=16000, channels=8, code_dim=32, n_q=6, codebook_size=256,
                        quantizer_dropout=0.5),
}


def preset(name: str) -> CodecConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
    return PRESETS[name]
