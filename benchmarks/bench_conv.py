"""Causal conv layers of the SoundStream-24k codec (listed in fastcodec/dev/shapes.py): the PyTorch
reference chain (pad copy, conv, bias, activation, residual add) against each fused kernel, side
by side per shape.

    pytest benchmarks/bench_conv.py [-k "4x1s and fwd"] --benchmark-json out.json
"""
import math

import pytest
import torch

from common import DEVICE, ON_GPU, implementations, run
from fastcodec import ops
from fastcodec.dev.shapes import decoder_up_layers, encoder_layers

BATCHES = {"4x1s": (4, 1), "1x10s": (1, 10)}
DTYPES = [torch.bfloat16, torch.float32] if ON_GPU else [torch.float32]
IMPLS = implementations()


def _fwd_bwd(fn, inputs, mode):
    if mode == "fwd":
        return fn
    leaves = [t for t in inputs if t is not None and t.is_floating_point()]

    def step():
        for t in leaves:
            t.grad = None
        out = fn()
        out.backward(torch.ones_like(out))
        return out
    return step


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("layer", encoder_layers(), ids=lambda layer: layer[0])
def test_conv1d(benchmark, layer, batch, dtype, impl, mode):
    name, cin, cout, k, stride, dil, t_per_s, act, res = layer
    B, secs = BATCHES[batch]
    T = t_per_s * secs
    Tout = -(-T // stride)
    benchmark.group = f"conv1d {name} {batch} {str(dtype)[6:]} {mode}"
    g = dict(device=DEVICE, dtype=dtype, requires_grad=mode != "fwd")
    x = torch.randn(B, cin, T, **g)
    w = (torch.randn(cout, cin, k, device=DEVICE, dtype=dtype) / math.sqrt(cin * k)).requires_grad_(mode != "fwd")
    b = torch.randn(cout, **g)
    r = torch.randn(B, cout, Tout, **g) if res else None
    fn = lambda: ops.causal_conv1d(x, w, b, stride=stride, dilation=dil, activation=act, residual=r,  # noqa: E731
                                   backend=impl)
    flops = 2 * B * cout * cin * k * Tout * (3 if mode != "fwd" else 1)
    elem = x.element_size()
    bytes_moved = elem * (x.numel() + w.numel() + B * cout * Tout * (2 if res else 1))
    run(benchmark, _fwd_bwd(fn, [x, w, b, r], mode), flops=flops, bytes_moved=bytes_moved, impl=impl, layer=name)


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("layer", decoder_up_layers(), ids=lambda layer: layer[0])
def test_conv_transpose1d(benchmark, layer, batch, dtype, impl, mode):
    name, cin, cout, k, stride, t_per_s = layer
    B, secs = BATCHES[batch]
    T = t_per_s * secs
    benchmark.group = f"convT {name} {batch} {str(dtype)[6:]} {mode}"
    g = dict(device=DEVICE, dtype=dtype, requires_grad=mode != "fwd")
    x = torch.randn(B, cin, T, **g)
    w = (torch.randn(cin, cout, k, device=DEVICE, dtype=dtype) / math.sqrt(cin * k)).requires_grad_(mode != "fwd")
    b = torch.randn(cout, **g)
    fn = lambda: ops.causal_conv_transpose1d(x, w, b, stride=stride, activation="elu", backend=impl)  # noqa: E731
    flops = 2 * B * cin * cout * k * T * (3 if mode != "fwd" else 1)
    bytes_moved = x.element_size() * (x.numel() + w.numel() + B * cout * T * stride)
    run(benchmark, _fwd_bwd(fn, [x, w, b], mode), flops=flops, bytes_moved=bytes_moved, impl=impl, layer=name)
