"""Residual VQ encode: the reference loop (N x K distance matrix, argmin, gather, subtract per
stage) against the fused kernels, side by side per shape, with two other libraries' searches when
installed (each skipped otherwise): vector-quantize-pytorch's ResidualVQ in eval mode, and faiss's
exact IndexFlatL2, one index per stage, on the CPU.

On a GPU, triton-fast is the Triton kernel in fast mode (TF32 candidates, exact fp32 re-check).

Shapes: training (N = 16 x 75 = 1200 and 12000, Q=8, K=1024, D=128); factorized DAC-like
(N=12000, Q in {9, 32}, K=1024, D=8); a large inference batch (N=100,000 on CPU, 1,000,000 on GPU);
a stream's frame (N = 1 and 3).

Peak memory goes into extra_info (peak_mem_bytes): on the GPU from the allocator's statistics,
on the CPU from the profiler's memory timeline of one call (inputs and outputs included; not for
faiss, whose numpy arrays it does not see), beside
nk_bytes, what one N x K fp32 distance matrix takes: the fused paths must not allocate it.

    pytest benchmarks/bench_rvq.py --benchmark-json out.json
"""
import json
import os
import tempfile
import warnings

import pytest
import torch

from common import COMPACT, DEVICE, ON_GPU, implementations, run
from fastcodec import ops
from fastcodec.dev.shapes import RVQ_SHAPES, rvq_large

# A stream codes one frame (one row per item) per call: blocks of 1 and 3 live rows.
STREAM_SHAPES = [("stream N1 Q8 K1024 D128", 1, 8, 1024, 128), ("stream N3 Q8 K1024 D128", 3, 8, 1024, 128)]
# (The compact selection of gpu_suite.sh: the training and stream shapes, no other libraries.)
SHAPES = RVQ_SHAPES + ([] if COMPACT else [rvq_large(ON_GPU)]) + STREAM_SHAPES
BASELINES = [] if COMPACT else ["residualvq"] + ([] if ON_GPU else ["faiss"])
# Fast mode (TF32 candidates, exact re-check) exists only in the Triton kernels, so only on a GPU.
FAST = ["triton-fast"] if "triton" in implementations() else []


def _split_cases():
    """The Triton search split over codes (the "triton:split" variant) beside the others, at the
    shapes few enough in rows for the measured 'auto' to consider it."""
    if "triton" not in implementations():
        return []
    from fastcodec.ops.triton.vq import SPLIT_MAX_ROWS

    return [(s, "triton-split") for s in SHAPES if s[1] <= SPLIT_MAX_ROWS]


CASES = [(s, i) for s in SHAPES for i in implementations() + FAST + BASELINES] + _split_cases()


def _inputs(N, Q, K, D):
    torch.manual_seed(0)
    x = torch.randn(N, D, device=DEVICE)
    cbs = torch.randn(Q, K, D, device=DEVICE) * (0.7 ** torch.arange(Q, device=DEVICE)).view(-1, 1, 1)
    return x, cbs


def _residualvq(cbs):
    """vector-quantize-pytorch's ResidualVQ holding our codebooks: fn(x [N, D]) -> codes [N, Q]."""
    vqp = pytest.importorskip("vector_quantize_pytorch")
    Q, K, D = cbs.shape
    rvq = vqp.ResidualVQ(dim=D, num_quantizers=Q, codebook_size=K).to(cbs.device).eval()
    with torch.no_grad():
        for q, layer in enumerate(rvq.layers):
            layer._codebook.embed.copy_(cbs[q][None])
            layer._codebook.initted.fill_(True)

    def encode(x):
        with torch.no_grad():
            return rvq(x[None])[1][0]
    return encode


def _faiss(cbs):
    """One exact IndexFlatL2 per stage, searched in turn on the residual: fn(x [N, D]) -> codes [N, Q]."""
    faiss = pytest.importorskip("faiss")
    faiss.omp_set_num_threads(torch.get_num_threads())
    books = [cb.contiguous().numpy() for cb in cbs]
    indexes = []
    for cb in books:
        index = faiss.IndexFlatL2(cb.shape[1])
        index.add(cb)
        indexes.append(index)

    def encode(x):
        r = x.numpy().copy()
        codes = []
        for index, cb in zip(indexes, books):
            _, idx = index.search(r, 1)
            r -= cb[idx[:, 0]]
            codes.append(idx[:, 0])
        return codes
    return encode


def _cpu_peak_bytes(fn):
    """The highest total of live torch allocations during one call of fn, inputs included, from
    the profiler's memory timeline; None where this torch does not have it."""
    from torch.profiler import ProfilerActivity, profile

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of a CUDA-only API; still the CPU's one
        try:
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                         with_stack=True) as prof:
                fn()
            path = os.path.join(tmp, "timeline.json")
            prof.export_memory_timeline(path, device="cpu")
        except (AttributeError, RuntimeError, ValueError):
            return None
        with open(path) as f:
            _, sizes = json.load(f)
    return max((sum(s) for s in sizes), default=0)


@pytest.mark.parametrize("shape,impl", CASES, ids=[f"{s[0]}-{i}" for s, i in CASES])
def test_rvq_encode(benchmark, shape, impl):
    name, N, Q, K, D = shape
    benchmark.group = f"rvq_encode {name}"
    x, cbs = _inputs(N, Q, K, D)
    if impl == "residualvq":
        fn = _residualvq(cbs)
        # The first stage only: later ones sit on residuals near rounding level (0.7^q codebooks),
        # where near-ties cascade into other, equally good codes.
        agree = (fn(x[:2000])[:, 0] == ops.rvq_encode_ref(x[:2000], cbs)[0][:, 0]).float().mean().item()
        assert agree > 0.99, f"ResidualVQ agrees with the reference on only {agree:.1%} of first-stage codes"
    elif impl == "faiss":
        fn = _faiss(cbs)
    elif impl == "triton-fast":
        def fn():
            return ops.rvq_encode(x, cbs, backend="triton", mode="fast")
        exact = ops.rvq_encode(x[:20000], cbs, backend="triton")[0][:, 0]
        agree = (fn()[0][:20000, 0] == exact).float().mean().item()
        assert agree > 0.999, f"fast mode agrees with exact mode on only {agree:.2%} of first-stage codes"
    elif impl == "triton-split":
        from fastcodec.ops.triton.vq import code_split

        def fn():
            with code_split():
                return ops.rvq_encode(x, cbs, backend="triton")
        assert torch.equal(fn()[0], ops.rvq_encode(x, cbs, backend="triton")[0]), "split codes differ from one launch"
    elif name.startswith("stream"):
        def fn():
            return ops.rvq_encode(x, cbs, backend=impl)
        with ops.weight_cache():  # as a stream runs: codebooks packed once, kept between calls
            run(benchmark, fn, flops=2 * N * K * D * Q, bytes_moved=4 * (N * D * 2 + Q * K * D) + 8 * N * Q,
                impl=impl, shape=name)
        return
    else:
        def fn():
            return ops.rvq_encode(x, cbs, backend=impl)
    call = (lambda: fn(x)) if impl in BASELINES else fn
    flops = 2 * N * K * D * Q  # the cross terms; the search is a GEMM's worth per stage
    bytes_moved = 4 * (N * D * 2 + Q * K * D) + 8 * N * Q
    if ON_GPU:
        torch.cuda.reset_peak_memory_stats()
    run(benchmark, call, flops=flops, bytes_moved=bytes_moved, impl=impl, shape=name)
    if ON_GPU:
        peak = torch.cuda.max_memory_allocated()
    else:  # faiss allocates through numpy, which the profiler does not see
        peak = None if impl == "faiss" else _cpu_peak_bytes(call)
    benchmark.extra_info.update(peak_mem_bytes=peak, nk_bytes=4 * N * K)
