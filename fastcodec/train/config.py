"""Training settings as data (`TrainConfig`), saved as JSON beside the checkpoints.

Loss weights are curricula: piecewise-linear schedules over training progress, given as
[[progress, weight], ...] with progress the fraction of `steps` done (0..1), or of `time_budget`
when one is set; a bare number is a constant weight.
"""
from __future__ import annotations

import dataclasses
import math

from ..nn import PRESETS, CodecConfig, preset


def _default_weights():
    return {
        "mel": 1.0,
        # The mel loss is blind to phase; at 1.0 the tiny model's waveform stayed uncorrelated with
        # its input for 600 steps (SI-SDR -28 dB), at 5.0 it reached -13 dB with the same mel distance.
        "wave": 5.0,
        "commit": 1.0,
        # The coarse target first: the stage-mean loss leads early and fades to a small share.
        "aux": [[0.0, 1.0], [0.3, 0.1]],
        "adv": 1.0,
        "feat": 2.0,
    }


# Low rates for the real presets (the original design found high ones collapse to noise); the tiny
# model learns faster and is what the zero-argument demo must show progress on within minutes.
PRESET_LR = {"tiny": 2e-3, "soundstream-24k": 3e-4, "seed-16k": 3e-4}

# tiny's recipe is the one that won in short runs on two CPU cores (docs/QUALITY.md): more,
# smaller steps, and no critics (a critic step costs ~3.5x a step without, and at 30 minutes the
# time is better spent on reconstruction). The real presets keep the full SoundStream recipe.
PRESET_BATCH = {"tiny": 4}
DEFAULT_BATCH = 8
PRESET_DISC_START = {"tiny": None}  # None: no critics (the run's steps)
DEFAULT_DISC_START = 500
# With no critics to pull spectral detail in, the waveform term fades once the model is in phase.
PRESET_WEIGHTS = {"tiny": {"wave": [[0.0, 5.0], [0.3, 0.5]]}}

# A short autoencoder warm-up lets the tiny model's latents spread out before k-means places the
# codebooks; quantizing a freshly initialised encoder's near-constant output collapses onto a few codes.
PRESET_VQ_START = {"tiny": 100}

LOSS_NAMES = ("mel", "wave", "commit", "aux", "adv", "feat")


@dataclasses.dataclass
class TrainConfig:
    preset: str = "tiny"
    codec: dict = dataclasses.field(default_factory=dict)  # CodecConfig fields that replace the preset's
    data: str | None = None           # folder of audio; None: the built-in procedural demo set
    out: str = "runs/fastcodec"
    steps: int = 3000
    time_budget: float | None = None  # minutes: the run ends then, the schedules laid over it (budget.py)
    batch_size: int | None = None     # per process; None: the preset's (see PRESET_BATCH)
    segment_seconds: float = 1.0      # training crop length
    lr: float | None = None           # generator peak learning rate; None: the preset's (see PRESET_LR)
    disc_lr: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1         # cosine decay ends at lr * this
    betas: tuple = (0.5, 0.9)
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    vq_start: int | None = None       # autoencoder steps before quantizing (codebooks k-means-initialised
                                      # then); None: the preset's (see PRESET_VQ_START)
    disc_start: int | None = None     # steps of reconstruction-only training before the critics join
                                      # (from `steps` on: never); None: the preset's (PRESET_DISC_START)
    wave_disc_width: int = 8
    stft_disc_width: int = 8
    stft_disc_windows: tuple = (512, 1024)
    weights: dict = dataclasses.field(default_factory=dict)  # over the defaults and the preset's (PRESET_WEIGHTS)
    amp: str = "none"                 # 'none' | 'bf16'
    device: str = "auto"              # 'auto' (CUDA when present) | 'cuda' | 'cpu'
    backend: str = "auto"
    compile: bool = False
    seed: int = 0
    num_workers: int = 0
    dist_timeout: float = 1800.0      # seconds a rank waits in a collective before the run fails (torchrun)
    holdout_fraction: float = 0.05
    eval_every: int = 250
    eval_clips: int = 8
    eval_seconds: float = 2.0
    checkpoint_every: int = 250
    keep_checkpoints: int = 3
    log_every: int = 10
    max_bad_steps: int = 5            # consecutive non-finite steps before training stops
    demo_clips: int = 256

    def __post_init__(self):
        if self.lr is None:
            self.lr = PRESET_LR.get(self.preset, 3e-4)
        if self.vq_start is None:
            self.vq_start = PRESET_VQ_START.get(self.preset, 0)
        if self.batch_size is None:
            self.batch_size = PRESET_BATCH.get(self.preset, DEFAULT_BATCH)
        if self.disc_start is None:
            start = PRESET_DISC_START.get(self.preset, DEFAULT_DISC_START)
            self.disc_start = self.steps if start is None else start
        self.betas = tuple(float(b) for b in self.betas)
        self.stft_disc_windows = tuple(int(w) for w in self.stft_disc_windows)
        weights = _default_weights()
        weights.update(PRESET_WEIGHTS.get(self.preset, {}))
        if not isinstance(self.weights, dict):
            raise ValueError(f"weights must map loss names to weights, e.g. {{\"aux\": [[0, 1], [0.3, 0.1]]}}; "
                             f"got {self.weights!r}")
        unknown = sorted(set(self.weights) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss weights {unknown}; known: {', '.join(LOSS_NAMES)}")
        weights.update(self.weights)
        self.weights = weights
        problems = []
        for name in ("steps", "batch_size", "eval_every", "checkpoint_every", "log_every", "max_bad_steps",
                     "eval_clips", "keep_checkpoints", "wave_disc_width", "stft_disc_width", "demo_clips"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be a positive int, got {v!r}")
        for name in ("warmup_steps", "disc_start", "vq_start", "num_workers", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                problems.append(f"{name} must be a non-negative int, got {v!r}")
        for name in ("lr", "disc_lr", "segment_seconds", "eval_seconds", "grad_clip", "dist_timeout"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                problems.append(f"{name} must be a positive number, got {v!r}")
        tb = self.time_budget
        if tb is not None and (isinstance(tb, bool) or not isinstance(tb, (int, float)) or not math.isfinite(tb)
                               or tb <= 0):
            problems.append(f"time_budget must be a positive number of minutes, got {tb!r}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            problems.append(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if self.device not in ("auto", "cuda", "cpu"):
            problems.append(f"device must be 'auto', 'cuda' or 'cpu', got {self.device!r}")
        if self.amp not in ("none", "bf16"):
            problems.append(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        for name, spec in self.weights.items():
            try:
                check_schedule(spec)
            except (TypeError, ValueError) as exc:
                problems.append(f"weights[{name!r}]: {exc}")
        if self.preset not in PRESETS:
            problems.append(f"unknown preset {self.preset!r}; expected one of {', '.join(PRESETS)}")
        elif not problems:
            try:
                self.codec_config()
            except (TypeError, ValueError) as exc:
                problems.append(f"codec: {exc}")
        if problems:
            raise ValueError("invalid training config: " + "; ".join(problems))

    def codec_config(self) -> CodecConfig:
        """The model trained: the preset with the `codec` overrides."""
        if not isinstance(self.codec, dict):
            raise TypeError(f"codec overrides map CodecConfig fields to values, got {self.codec!r}")
        known = {f.name for f in dataclasses.fields(CodecConfig)}
        unknown = sorted(set(self.codec) - known)
        if unknown:
            raise ValueError(f"unknown model settings {unknown}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(preset(self.preset), **self.codec)

    def weight(self, name: str, step: float) -> float:
        """The loss weight at (schedule) step `step`; see budget.Clock.position for a timed run."""
        return schedule_value(self.weights[name], step / max(1, self.steps))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"], d["stft_disc_windows"] = list(self.betas), list(self.stft_disc_windows)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training settings {unknown}")
        return cls(**d)


def schedule_value(spec, progress: float) -> float:
    """A number, or [[progress, value], ...] (progress ascending) interpolated linearly and held flat
    beyond the first and last points."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return float(spec)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise TypeError(f"a weight is a number or a list of [progress, value] points, got {spec!r}")
    pts = []
    for p in spec:
        if not (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)):
            raise ValueError(f"schedule points are [progress, value] pairs, got {p!r}")
        pts.append((float(p[0]), float(p[1])))
    if any(b[0] < a[0] for a, b in zip(pts, pts[1:])):
        raise ValueError(f"schedule progress must be ascending, got {spec!r}")
    if progress <= pts[0][0]:
        return pts[0][1]
    for (p0, v0), (p1, v1) in zip(pts, pts[1:]):
        if progress <= p1:
            return v1 if p1 == p0 else v0 + (v1 - v0) * (progress - p0) / (p1 - p0)
    return pts[-1][1]


def check_schedule(spec):
    """Raises unless spec is a schedule schedule_value() reads with finite, non-negative weights
    (a negative weight would train the model to increase that loss)."""
    schedule_value(spec, 0.0)
    for progress, value in [(0.0, spec)] if isinstance(spec, (int, float)) else spec:
        if not (math.isfinite(progress) and math.isfinite(value) and value >= 0):
            raise ValueError(f"weights must be finite and non-negative at finite progress, got {spec!r}")


def lr_factor(step: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to min_ratio at `total` steps."""
    if warmup and step < warmup:
        return min(1.0, (step + 1) / warmup)  # a timed run's position is fractional
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
