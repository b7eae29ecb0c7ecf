"""'auto' measured against the static rules and the PyTorch reference (issue #30's figures): every
SoundStream-24k layer (fastcodec/dev/shapes.py) and the RVQ search, at batch 1 x 10 s, 4 x 1 s and a
training step's 8 x 1 s, forward and forward+backward, side by side per shape:

- torch: the reference (backend='torch');
- static: backend='auto' with FASTCODEC_TUNE=0 (cpp on the CPU, Triton on a GPU);
- tuned: backend='auto' with tuning on; the shape is measured (tuning.py) before the timed calls,
  in a cache folder of this run's own, and extra_info says what it chose and what tuning took.

    pytest benchmarks/bench_auto.py --benchmark-json auto.json
    python benchmarks/summarize.py auto.json      # per shape x reference; geomean and worst per impl
"""
import math
import os
import tempfile
import time

import pytest
import torch

from common import DEVICE, run
from fastcodec import ops
from fastcodec.ops import tuning
from fastcodec.dev.shapes import CODE_DIM, RATE, STRIDES, decoder_up_layers, encoder_layers

# One cache for the session, empty at its start: 'tuned' is what a first run on this machine gets.
os.environ.setdefault("FASTCODEC_BENCH_TUNING_DIR", tempfile.mkdtemp(prefix="fastcodec-bench-tuning-"))
BATCHES = {"1x10s": (1, 10), "4x1s": (4, 1), "train8x1s": (8, 1)}
IMPLS = ["torch", "static", "tuned"]
FRAME_RATE = RATE // math.prod(STRIDES)


@pytest.fixture
def impl_env(request, monkeypatch):
    impl = request.param
    monkeypatch.setenv("FASTCODEC_CACHE_DIR", os.environ["FASTCODEC_BENCH_TUNING_DIR"])
    monkeypatch.setenv("FASTCODEC_TUNE", "1" if impl == "tuned" else "0")
    return impl


def _timed(benchmark, impl, call, leaves, mode, flops, nbytes, **info):
    def fn():
        for t in leaves:
            t.grad = None
        out = call("torch" if impl == "torch" else "auto")
        if mode != "fwd":
            out.backward(torch.ones_like(out))
        return out

    if impl == "tuned":
        t0 = time.perf_counter()
        n = len(tuning.table())
        fn()  # measures this shape (a no-op when an earlier case of the run already did)
        info.update(tuning_s=time.perf_counter() - t0 if len(tuning.table()) > n else 0.0,
                    chosen=sorted({e["backend"] for e in list(tuning.table().values())[n:]}) or "cached")
    run(benchmark, fn, flops=flops, bytes_moved=nbytes, impl=impl, **info)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("layer", encoder_layers(), ids=lambda layer: layer[0])
def test_conv1d(benchmark, layer, batch, mode, impl_env):
    name, cin, cout, k, stride, dil, t_per_s, act, res = layer
    B, secs = BATCHES[batch]
    T = t_per_s * secs
    Tout = -(-T // stride)
    benchmark.group = f"conv1d {name} {batch} {mode}"
    g = dict(device=DEVICE, requires_grad=mode != "fwd")
    x = torch.randn(B, cin, T, **g)
    w = (torch.randn(cout, cin, k, device=DEVICE) / math.sqrt(cin * k)).requires_grad_(mode != "fwd")
    b = torch.randn(cout, **g)
    r = torch.randn(B, cout, Tout, **g) if res else None
    call = lambda be: ops.causal_conv1d(x, w, b, stride=stride, dilation=dil, activation=act,  # noqa: E731
                                        residual=r, backend=be)
    flops = 2 * B * cout * cin * k * Tout * (3 if mode != "fwd" else 1)
    _timed(benchmark, impl_env, call, [t for t in (x, w, b, r) if t is not None], mode, flops,
           4 * (x.numel() + w.numel() + B * cout * Tout * (2 if res else 1)), layer=name)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("layer", decoder_up_layers(), ids=lambda layer: layer[0])
def test_conv_transpose1d(benchmark, layer, batch, mode, impl_env):
    name, cin, cout, k, stride, t_per_s = layer
    B, secs = BATCHES[batch]
    T = t_per_s * secs
    benchmark.group = f"convT {name} {batch} {mode}"
    g = dict(device=DEVICE, requires_grad=mode != "fwd")
    x = torch.randn(B, cin, T, **g)
    w = (torch.randn(cin, cout, k, device=DEVICE) / math.sqrt(cin * k)).requires_grad_(mode != "fwd")
    b = torch.randn(cout, **g)
    call = lambda be: ops.causal_conv_transpose1d(x, w, b, stride=stride, activation="elu", backend=be)  # noqa: E731
    flops = 2 * B * cin * cout * k * T * (3 if mode != "fwd" else 1)
    _timed(benchmark, impl_env, call, [x, w, b], mode, flops, 4 * (x.numel() + w.numel() + B * cout * T * stride),
           layer=name)


@pytest.mark.parametrize("impl_env", IMPLS, indirect=True)
@pytest.mark.parametrize("batch", list(BATCHES))
def test_rvq_encode(benchmark, batch, impl_env):
    B, secs = BATCHES[batch]
    N, Q, K, D = B * secs * FRAME_RATE, 8, 1024, CODE_DIM
    benchmark.group = f"rvq_encode N{N} Q{Q} K{K} D{D} {batch} fwd"
    x = torch.randn(N, D, device=DEVICE)
    cbs = torch.randn(Q, K, D, device=DEVICE) * (0.7 ** torch.arange(Q, device=DEVICE)).view(-1, 1, 1)
    _timed(benchmark, impl_env, lambda be: ops.rvq_encode(x, cbs, backend=be)[1], [], "fwd", 2 * N * K * D * Q,
           4 * (2 * N * D + Q * K * D) + 8 * N * Q, layer=f"rvq N{N}")
