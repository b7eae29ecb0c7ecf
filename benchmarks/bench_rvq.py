"""Residual VQ encode: the reference loop (N x K distance matrix, argmin, gather, subtract per
stage) against the fused kernels, side by side per shape.

Shapes: training (N = 16 x 75 = 1200 and 12000, Q=8, K=1024, D=128); factorized DAC-like
(N=12000, Q in {9, 32}, K=1024, D=8); a large inference batch (N=100,000 on CPU, 1,000,000 on GPU).

    pytest benchmarks/bench_rvq.py --benchmark-json out.json
"""
import pytest
import torch

from common import DEVICE, ON_GPU, implementations, run
from fastcodec import ops

SHAPES = [
    ("train N1200 Q8 K1024 D128", 1200, 8, 1024, 128),
    ("train N12000 Q8 K1024 D128", 12000, 8, 1024, 128),
    ("dac N12000 Q9 K1024 D8", 12000, 9, 1024, 8),
    ("dac N12000 Q32 K1024 D8", 12000, 32, 1024, 8),
    (f"large N{1_000_000 if ON_GPU else 100_000} Q8 K1024 D128", 1_000_000 if ON_GPU else 100_000, 8, 1024, 128),
]


@pytest.mark.parametrize("impl", implementations())
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s[0])
def test_rvq_encode(benchmark, shape, impl):
    name, N, Q, K, D = shape
    benchmark.group = f"rvq_encode {name}"
    x = torch.randn(N, D, device=DEVICE)
    cbs = torch.randn(Q, K, D, device=DEVICE) * (0.7 ** torch.arange(Q, device=DEVICE)).view(-1, 1, 1)
    if ON_GPU:
        torch.cuda.reset_peak_memory_stats()
    flops = 2 * N * K * D * Q  # the cross terms; the search is a GEMM's worth per stage
    bytes_moved = 4 * (N * D * 2 + Q * K * D) + 8 * N * Q
    run(benchmark, lambda: ops.rvq_encode(x, cbs, backend=impl), flops=flops, bytes_moved=bytes_moved, impl=impl,
        shape=name)
    if ON_GPU:
        benchmark.extra_info["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
