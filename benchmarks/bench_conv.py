"""Causal conv layers of the SoundStream-24k codec (listed in fastcodec/dev/shapes.py): the PyTorch
reference chain (pad copy, conv, bias, activation, residual add) against each fused kernel, side
by side per shape.

    pytest benchmarks/bench_conv.py [-k "4x1s and fwd"] --benchmark-json out.json
"""
import math

import pytest
import torch

from common import COMPACT, DEVICE, ON_GPU, backend_of, implementations, run, tf32_variants, with_precision
from fastcodec import ops
from fastcodec.dev.shapes import decoder_up_layers, encoder_layers

BATCHES = {"4x1s": (4, 1)} if COMPACT else {"4x1s": (4, 1), "1x10s": (1, 10)}
DTYPES = [torch.bfloat16, torch.float32] if ON_GPU else [torch.float32]
IMPLS = implementations() + tf32_variants(implementations())
MODES = ["fwd"] if COMPACT else ["fwd", "fwd+bwd"]
# The compact selection (gpu_suite.sh): each kind of layer once - the 1-channel input, a dilated
# residual conv at the widest rate and at the narrowest, a 1x1 with its residual, two
# downsamplers, the output conv; the widest and the narrowest upsampler.
COMPACT_LAYERS = {"enc.in k7 1->32", "enc.b0 ru k7 d1 32", "enc.b3 ru k7 d9 256", "enc.b2 ru 1x1 128 +res",
                  "enc.b0 down k4 s2 32->64", "enc.b3 down k16 s8 256->512", "enc.out k3 512->128",
                  "dec up k16 s8 512->256", "dec up k4 s2 64->32"}


def _layers(layers):
    return [layer for layer in layers if layer[0] in COMPACT_LAYERS] if COMPACT else layers


def _skip_unless_fp32(impl, dtype):
    if impl.endswith("+tf32") and dtype != torch.float32:
        pytest.skip("TF32 is a precision of fp32 inputs")


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


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("layer", _layers(encoder_layers()), ids=lambda layer: layer[0])
def test_conv1d(benchmark, layer, batch, dtype, impl, mode):
    name, cin, cout, k, stride, dil, t_per_s, act, res = layer
    _skip_unless_fp32(impl, dtype)
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
                                   backend=backend_of(impl))
    flops = 2 * B * cout * cin * k * Tout * (3 if mode != "fwd" else 1)
    elem = x.element_size()
    bytes_moved = elem * (x.numel() + w.numel() + B * cout * Tout * (2 if res else 1))
    run(benchmark, with_precision(impl, _fwd_bwd(fn, [x, w, b, r], mode)), flops=flops, bytes_moved=bytes_moved,
        impl=impl, layer=name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("batch", list(BATCHES))
@pytest.mark.parametrize("layer", _layers(decoder_up_layers()), ids=lambda layer: layer[0])
def test_conv_transpose1d(benchmark, layer, batch, dtype, impl, mode):
    name, cin, cout, k, stride, t_per_s = layer
    _skip_unless_fp32(impl, dtype)
    B, secs = BATCHES[batch]
    T = t_per_s * secs
    benchmark.group = f"convT {name} {batch} {str(dtype)[6:]} {mode}"
    g = dict(device=DEVICE, dtype=dtype, requires_grad=mode != "fwd")
    x = torch.randn(B, cin, T, **g)
    w = (torch.randn(cin, cout, k, device=DEVICE, dtype=dtype) / math.sqrt(cin * k)).requires_grad_(mode != "fwd")
    b = torch.randn(cout, **g)
    fn = lambda: ops.causal_conv_transpose1d(x, w, b, stride=stride, activation="elu",  # noqa: E731
                                             backend=backend_of(impl))
    flops = 2 * B * cin * cout * k * T * (3 if mode != "fwd" else 1)
    bytes_moved = x.element_size() * (x.numel() + w.numel() + B * cout * T * stride)
    run(benchmark, with_precision(impl, _fwd_bwd(fn, [x, w, b], mode)), flops=flops, bytes_moved=bytes_moved,
        impl=impl, layer=name)
