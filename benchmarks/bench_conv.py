"""Causal conv layers of the SoundStream-24k codec: the PyTorch reference chain (pad copy, conv,
bias, activation, residual add) against each fused kernel, side by side per shape.

SoundStream-24k (C=32): input conv k7 1->32; four encoder blocks at C*2^i channels (i = 0..3,
T = 24000, 12000, 3000, 600 per second of audio), each three residual units (k7 conv with
dilation 1, 3, 9 and ELU, then a 1x1 conv plus the skip) and a downsampling conv k=2*stride
(strides 2, 4, 5, 8) to twice the channels; an output conv k3 512->128 at 75 Hz. The decoder
mirrors it with causal transposed convs k=2*stride.

    pytest benchmarks/bench_conv.py [-k "4x1s and fwd"] --benchmark-json out.json
"""
import math

import pytest
import torch

from common import DEVICE, ON_GPU, implementations, run
from fastcodec import ops

C, STRIDES, RATE = 32, (2, 4, 5, 8), 24000


def encoder_layers():
    """(name, Cin, Cout, K, stride, dilation, T per second, activation, residual)."""
    layers = [("enc.in k7 1->32", 1, C, 7, 1, 1, RATE, None, False)]
    t, c = RATE, C
    for i, s in enumerate(STRIDES):
        for d in (1, 3, 9):
            layers.append((f"enc.b{i} ru k7 d{d} {c}", c, c, 7, 1, d, t, "elu", False))
        layers.append((f"enc.b{i} ru 1x1 {c} +res", c, c, 1, 1, 1, t, None, True))
        layers.append((f"enc.b{i} down k{2 * s} s{s} {c}->{2 * c}", c, 2 * c, 2 * s, s, 1, t, "elu", False))
        t, c = t // s, 2 * c
    layers.append((f"enc.out k3 {c}->128", c, 128, 3, 1, 1, t, None, False))
    return layers


def decoder_up_layers():
    """(name, Cin, Cout, K, stride, T_in per second): the transposed convs."""
    layers, t, c = [], RATE // math.prod(STRIDES), C * 2 ** len(STRIDES)
    for s in reversed(STRIDES):
        layers.append((f"dec up k{2 * s} s{s} {c}->{c // 2}", c, c // 2, 2 * s, s, t))
        t, c = t * s, c // 2
    return layers


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
@pytest.mark.parametrize("layer", encoder_layers(), ids=lambda l: l[0])
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
@pytest.mark.parametrize("layer", decoder_up_layers(), ids=lambda l: l[0])
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
