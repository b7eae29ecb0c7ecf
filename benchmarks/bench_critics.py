"""The training critics' 1-D layers that fastcodec runs on its own kernels (grouped_conv1d): the
waveform critic's input conv and its grouped strided convs, at the default critic width (8) over
8 x 1 s of 16 kHz audio (the tiny preset's training batch), every scale. torch (nn.Conv1d, oneDNN)
against cpp, side by side per layer; forward, and forward + backward (x, weight and bias).

    pytest benchmarks/bench_critics.py --benchmark-json out.json
"""
import math

import pytest
import torch

from common import DEVICE, implementations, run
from fastcodec import ops

WIDTH, SAMPLE_RATE, BATCH, SCALES, DEPTH = 8, 16000, 8, 3, 4
IMPLS = [i for i in implementations() if i in ("torch", "cpp")]


def critic_layers():
    """(name, Cin, Cout, K, stride, padding, groups, T): as discriminators._WaveCritic builds them."""
    layers, T = [], SAMPLE_RATE
    for s in range(SCALES):
        if s:
            T = (T + 2 - 4) // 2 + 1  # avg_pool1d(4, stride 2, padding 1)
        layers.append((f"scale{s}.in", 1, WIDTH, 15, 1, 7, 1, T))
        c, t = WIDTH, T
        for i in range(DEPTH):
            out = min(4 * c, 64 * WIDTH)
            layers.append((f"scale{s}.grouped{i}", c, out, 41, 4, 20, max(1, c // 4), t))
            c, t = out, (t + 40 - 41) // 4 + 1
    return layers


@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layer", critic_layers(), ids=lambda layer: layer[0])
def test_critic_conv(benchmark, layer, impl, mode):
    if DEVICE != "cpu":
        pytest.skip("the critics' kernels are CPU kernels; on a GPU cuDNN runs these layers")
    name, cin, cout, k, stride, padding, groups, T = layer
    benchmark.group = f"critic conv {name} {mode}"
    grad = mode != "fwd"
    x = torch.randn(BATCH, cin, T, requires_grad=grad)
    w = (torch.randn(cout, cin // groups, k) / math.sqrt(cin // groups * k)).requires_grad_(grad)
    b = torch.randn(cout, requires_grad=grad)

    def fwd():
        return ops.grouped_conv1d(x, w, b, stride=stride, padding=padding, groups=groups, backend=impl)

    fn = fwd
    if grad:
        def fn():
            x.grad = w.grad = b.grad = None
            y = fwd()
            y.backward(torch.ones_like(y))
            return y
    Tout = (T + 2 * padding - k) // stride + 1
    flops = 2 * BATCH * cout * Tout * (cin // groups) * k * (3 if grad else 1)
    bytes_moved = 4 * (x.numel() + w.numel() + BATCH * cout * Tout) * (3 if grad else 1)
    run(benchmark, fn, flops=flops, bytes_moved=bytes_moved, impl=impl, layer=name)
