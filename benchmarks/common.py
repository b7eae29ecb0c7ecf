"""What the benchmark suites share: which implementations run on this machine, and a timed call
that synchronizes the GPU, adapts its round count to the op's cost, and records FLOPs and bytes.

FASTCODEC_BENCH_COMPACT=1 selects the representative subset that benchmarks/gpu_suite.sh times in
its one lent run; FASTCODEC_BENCH_PLAN=gpu collects as on a GPU (with the GPU's backends) on a
machine without one, so that the suite's selection can be counted there (gpu_suite.sh plan)."""
import functools
import os
import time

import torch

from fastcodec.dev.tf32 import cudnn_tf32
from fastcodec.ops import _backend

PLAN_GPU = os.environ.get("FASTCODEC_BENCH_PLAN") == "gpu"
ON_GPU = torch.cuda.is_available() or PLAN_GPU
DEVICE = "cuda" if ON_GPU else "cpu"
COMPACT = os.environ.get("FASTCODEC_BENCH_COMPACT") == "1"
# Per measured op, roughly this many seconds of timed calls (at least 3 rounds, at most 200).
BUDGET_S = float(os.environ.get("FASTCODEC_BENCH_SECONDS", "1.0"))


def implementations():
    """'torch' (the reference chain) plus every compiled backend usable on this device."""
    if PLAN_GPU:
        return ["torch", "cuda", "triton"]
    names = ["torch"] + [b for b in ("cpp", "cuda", "triton") if _backend.status(b, DEVICE)[0]]
    # The interpreter is a correctness tool, not something to time.
    if not ON_GPU and "triton" in names:
        names.remove("triton")
    return names


def tf32_variants(impls):
    """On a GPU, "<impl>+tf32" beside each conv implementation: fp32 with
    torch.backends.cudnn.allow_tf32 on (cuDNN's and the kernels' TF32 paths), the bare name with
    it off (exact fp32), so the torch reference is shown both ways."""
    return [f"{i}+tf32" for i in impls if i in ("torch", "cuda", "triton")] if ON_GPU else []


def backend_of(impl: str) -> str:
    return impl.removesuffix("+tf32")


def with_precision(impl: str, fn):
    """fn, called with TF32 allowed for fp32 convs exactly when impl asks for it."""
    @functools.wraps(fn)
    def call(*args, **kwargs):
        with cudnn_tf32(impl.endswith("+tf32")):
            return fn(*args, **kwargs)
    return call


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
