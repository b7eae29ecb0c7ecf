"""Paired training-step timing: the same Trainer step on the torch backend and on the fastest
compiled one, alternating round by round in one process, so a noisy machine's drift hits both
equally (bench_train.py times each side in its own block of rounds).

    python benchmarks/ab_train.py [preset batch seconds gen|full rounds]   # default: tiny 8 1.0 full 8
"""
import statistics
import sys
import tempfile
import time

import torch

from fastcodec import ops
from fastcodec.train.config import TrainConfig
from fastcodec.train.loop import Trainer


def main(preset="tiny", batch="8", seconds="1.0", phase="full", rounds="8"):
    batch, seconds, rounds = int(batch), float(seconds), int(rounds)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    fast = ops.resolve_backend("auto", torch.empty(0, device=device))
    if fast == "torch":
        sys.exit("no compiled backend usable here")
    trainers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("torch", fast):
            cfg = TrainConfig(preset=preset, out=f"{tmp}/{backend}", steps=10**6, batch_size=batch,
                              segment_seconds=seconds, demo_clips=4, eval_clips=1, eval_seconds=0.5, vq_start=0,
                              disc_start=0 if phase == "full" else 10**6, backend=backend)
            trainers[backend] = Trainer(cfg, progress=False, log=lambda *_: None)
        x = (0.1 * torch.randn(batch, 1, int(seconds * trainers["torch"].codec_cfg.sample_rate))).to(device)
        for t in trainers.values():  # k-means init and warm caches, untimed
            t.train_step(x)
            t.train_step(x)
        times = {b: [] for b in trainers}
        for _ in range(rounds):
            for backend, t in trainers.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                t.train_step(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                times[backend].append(time.perf_counter() - t0)
    med = {b: statistics.median(v) * 1e3 for b, v in times.items()}
    paired = sorted(a / b for a, b in zip(times["torch"], times[fast]))
    print(f"{preset} {batch} x {seconds} s {phase}, {torch.get_num_threads()} threads: torch {med['torch']:.0f} ms, "
          f"{fast} {med[fast]:.0f} ms, ratio of medians {med['torch'] / med[fast]:.2f}x; paired ratios "
          f"min {paired[0]:.2f} median {statistics.median(paired):.2f} max {paired[-1]:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
