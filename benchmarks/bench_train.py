"""Training-step throughput: the same Trainer step (generator forward/backward/update, codebook EMA
and, in the 'full' phase, the critics' step) with the codec on the torch backend and on the fastest
backend here, side by side per preset and phase. The spectral losses and the STFT critics are plain
torch in both; the waveform critic's input and grouped convs follow the backend (grouped_conv1d on
cpp), so the ratio is what fastcodec's kernels buy a whole training step. On a noisy machine,
ab_train.py times the same steps with the backends alternating.

    pytest benchmarks/bench_train.py --benchmark-json out.json
"""
import pytest
import torch
from common import COMPACT, DEVICE, ON_GPU, run

from fastcodec import ops
from fastcodec.train.config import TrainConfig
from fastcodec.train.loop import Trainer

# (preset, batch, seconds per crop, phase): 'gen' trains the codec alone (before disc_start), 'full'
# adds the critics' forward/backward/update. tiny B4 gen is tiny's default recipe.
CASES = ([("soundstream-24k", 16, 1.0, "gen"), ("soundstream-24k", 16, 1.0, "full"), ("tiny", 32, 1.0, "full")]
         if ON_GPU else
         [("tiny", 4, 1.0, "gen"), ("tiny", 8, 1.0, "gen"), ("tiny", 8, 1.0, "full"),
          ("soundstream-24k", 2, 0.5, "gen")])
if COMPACT:  # gpu_suite.sh: one training step of the codec alone
    CASES = CASES[:1]


def _fast():
    """What 'auto' runs the codec on here (cpp on a CPU, Triton on a GPU), or None if only torch."""
    be = ops.resolve_backend("auto", torch.empty(0, device=DEVICE))
    return None if be == "torch" else be


@pytest.mark.parametrize("impl", ["torch", "fast"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]} B{c[1]}x{c[2]}s {c[3]}")
def test_train_step(benchmark, tmp_path, case, impl):
    preset, batch, seconds, phase = case
    backend = "torch" if impl == "torch" else _fast()
    if backend is None:
        pytest.skip("no compiled backend usable here")
    benchmark.group = f"train step {preset} B{batch}x{seconds}s {phase}"
    cfg = TrainConfig(preset=preset, out=str(tmp_path / "run"), steps=10**6, batch_size=batch,
                      segment_seconds=seconds, demo_clips=4, eval_clips=1, eval_seconds=0.5, vq_start=0,
                      disc_start=0 if phase == "full" else 10**6, backend=backend)
    trainer = Trainer(cfg, progress=False, log=lambda *_: None)
    sr = trainer.codec_cfg.sample_rate
    x = (0.1 * torch.randn(batch, 1, int(seconds * sr))).to(DEVICE)
    trainer.train_step(x)  # k-means init happens on the first step; keep it out of the timing
    audio_s = batch * seconds
    run(benchmark, lambda: trainer.train_step(x), flops=0, bytes_moved=0, impl=backend, preset=preset,
        phase=phase, audio_seconds=audio_s)
    benchmark.extra_info["audio_seconds_per_s"] = audio_s / benchmark.stats.stats.median
