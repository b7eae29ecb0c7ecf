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
from fastcodec.shapes import RVQ_SHAPES, rvq_large

SHAPES = RVQ_SHAPES + [rvq_large(ON_GPU)]


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
