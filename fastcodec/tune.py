"""`python -m fastcodec tune`: measure 'auto's choices for the shapes a preset trains and codes at,
and keep them in the tuning cache ($FASTCODEC_CACHE_DIR), so later runs on this machine start with
them (see fastcodec.ops.tuning).

    python -m fastcodec tune --preset soundstream-24k --batch-size 16
    python -m fastcodec tune --show                 # what is cached, nothing measured
"""
from __future__ import annotations

import time

import torch


def main(args) -> int:
    from .info import tuning_table
    from .nn import SoundStream, preset
    from .nn.tuning import tune_model
    from .ops import tuning

    if args.show:
        print("\n".join(tuning_table()))
        return 0
    if not tuning.enabled():
        print("fastcodec: error: FASTCODEC_TUNE=0 turns measured choices off; unset it to tune")
        return 1
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = preset(args.preset)
    torch.manual_seed(0)
    model = SoundStream(cfg).to(device)
    if args.fresh:
        # A key's second field is where it was measured: "cpu 2t", "cuda NVIDIA H100 ...".
        stale = [k for k in tuning.table() if k.split("|")[1].split(" ")[0] == device.type]
        for k in stale:
            del tuning.table()[k]
    start = time.perf_counter()
    new = tune_model(model, args.batch_size, round(args.segment_seconds * cfg.sample_rate))
    took = time.perf_counter() - start
    print(f"{args.preset} on {device}: {len(new)} call shapes measured in {took:.1f} s "
          f"(training step {args.batch_size} x {args.segment_seconds:g} s, coding 1 x 10 s and 4 x 1 s, a stream's "
          f"frame); saved to {tuning.cache_path()}")
    for key, e in sorted(new.items()):
        times = ", ".join(f"{b} {ms:.3g} ms" for b, ms in sorted(e["ms"].items(), key=lambda kv: kv[1]))
        moved = f"; the static rule's {e['static']}" if e.get("static", e["backend"]) != e["backend"] else ""
        print(f"  {key} -> {e['backend']} ({times}{moved})")
    return 0


def add_arguments(p):
    p.add_argument("--preset", default="soundstream-24k")
    p.add_argument("--batch-size", type=int, default=8, help="the training run's, per process")
    p.add_argument("--segment-seconds", type=float, default=1.0, help="the training run's crop length")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when a GPU is visible")
    p.add_argument("--fresh", action="store_true", help="measure again the shapes already cached for this device")
    p.add_argument("--show", action="store_true", help="print the cached choices; measure nothing")
