"""What the benchmark suites share: which implementations run on this machine, and a timed call
that synchronizes the GPU, adapts its round count to the op's cost, and records FLOPs and bytes."""
import os
import time

import torch

from fastcodec.ops import _backend

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
# Per measured op, roughly this many seconds of timed calls (at least 3 rounds, at most 200).
BUDGET_S = float(os.environ.get("FASTCODEC_BENCH_SECONDS", "1.0"))


def implementations():
    """'torch' (the reference chain) plus every compiled backend usable on this device."""
    names = ["torch"] + [b for b in ("cpp", "cuda", "triton") if _backend.status(b, DEVICE)[0]]
    # The interpreter is a correctness tool, not something to time.
    if not ON_GPU and "triton" in names:
        names.remove("triton")
    return names


def sync():
    if ON_GPU:
        torch.cuda.synchronize()


def run(benchmark, fn, *, flops, bytes_moved, **info):
    """Time fn() (synchronized) with pytest-benchmark and attach FLOPs, bytes and achieved rates."""
    def timed():
        out = fn()
        sync()
        return out

    timed()  # warm up: compile, caches, allocator
    t0 = time.perf_counter()
    timed()
    once = max(time.perf_counter() - t0, 1e-6)
    rounds = int(min(200, max(3, BUDGET_S / once)))
    benchmark.extra_info.update(flops=flops, bytes=bytes_moved, device=torch.cuda.get_device_name() if ON_GPU
                                else "cpu", threads=torch.get_num_threads(), **info)
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(gflops_per_s=flops / median / 1e9, gbytes_per_s=bytes_moved / median / 1e9)
