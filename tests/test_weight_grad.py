"""conv1d_weight_grad, the C++ weight gradient of a stride-1 conv (csrc/cpu/weight_grad.cpp),
against the float64 reference: every row and column remainder of its 4 x 3 (AVX2, portable) and
4 x 6 (AVX-512) tiles, time lengths around its 8- and 16-sample vectors (masked tails) and its
1024-sample chunks, dilations, outputs shorter than the padding, padding longer than a chunk
(several chunks read a zero-filled window), short items summed 16 to a pass (19 items: a pass of
16 and one of 3); the causal conv's backward that uses it; and its
argument checks. test_cpu_portable checks it again capped at avx2 and at the portable loops."""
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_close_to_reference, noncontiguous, require_backend
from fastcodec import ops


def _ref(gz, x, K, dilation, pad):
    w = torch.zeros(gz.shape[1], x.shape[1], K, dtype=x.dtype, requires_grad=True)
    y = F.conv1d(F.pad(x, (pad, 0)), w, dilation=dilation)[..., :gz.shape[2]]
    y.backward(gz)
    return w.grad


# (B, Cin, Cout, K, dilation, T)
SHAPES = [(2, 3, 5, 7, 3, 37), (1, 1, 4, 7, 1, 9), (3, 7, 2, 1, 1, 20), (2, 4, 6, 3, 9, 5), (1, 2, 7, 5, 1, 1024),
          (2, 5, 3, 2, 2, 1031), (1, 6, 9, 7, 9, 2100), (2, 1, 1, 4, 1, 8), (1, 2, 3, 4, 1, 1039),
          (2, 5, 4, 1, 1, 33), (1, 3, 2, 3, 700, 2500), (19, 2, 5, 3, 2, 50), (17, 3, 4, 1, 1, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape):
    require_backend("cpp", "cpu")
    B, Cin, Cout, K, d, T = shape
    pad = (K - 1) * d
    x, gz = torch.randn(B, Cin, T, dtype=torch.float64), torch.randn(B, Cout, T, dtype=torch.float64)
    out = torch.ops.fastcodec.conv1d_weight_grad(gz.float(), x.float(), K, d, pad)
    assert_close_to_reference(out, _ref(gz.float(), x.float(), K, d, pad), _ref(gz, x, K, d, pad))


def test_noncontiguous_and_explicit_padding():
    """x read at t - pad + k*dilation with pad below the causal one (a window read ahead)."""
    require_backend("cpp", "cpu")
    x, gz = torch.randn(2, 4, 50, dtype=torch.float64), torch.randn(2, 3, 50, dtype=torch.float64)
    out = torch.ops.fastcodec.conv1d_weight_grad(noncontiguous(gz.float()), noncontiguous(x.float()), 5, 2, 3)
    ref = torch.zeros(3, 4, 5, dtype=torch.float64, requires_grad=True)
    F.conv1d(F.pad(x, (3, 5)), ref, dilation=2)[..., :50].backward(gz)
    same = torch.zeros(3, 4, 5, requires_grad=True)
    F.conv1d(F.pad(x.float(), (3, 5)), same, dilation=2)[..., :50].backward(gz.float())
    assert_close_to_reference(out, same.grad, ref.grad)


def test_causal_conv_backward_uses_it():
    """causal_conv1d's weight gradient on cpp (stride 1, where this kernel serves) still matches."""
    require_backend("cpp", "cpu")
    x, w = torch.randn(2, 6, 300, dtype=torch.float64), torch.randn(5, 6, 7, dtype=torch.float64) / 6
    grads = {}
    for name, (xx, ww, be) in {"cpp": (x.float(), w.float(), "cpp"), "same": (x.float(), w.float(), "torch"),
                               "ref": (x, w, "torch")}.items():
        ww = ww.clone().requires_grad_(True)
        y = ops.causal_conv1d(xx, ww, dilation=3, activation="elu", backend=be)
        y.backward(torch.ones_like(y))
        grads[name] = ww.grad
    assert_close_to_reference(grads["cpp"], grads["same"], grads["ref"])


def test_checks():
    require_backend("cpp", "cpu")
    lib = torch.ops.fastcodec
    with pytest.raises(RuntimeError, match="fp32 only"):
        lib.conv1d_weight_grad(torch.randn(1, 2, 5).double(), torch.randn(1, 3, 5).double(), 3, 1, 2)
    with pytest.raises(RuntimeError, match="items"):
        lib.conv1d_weight_grad(torch.randn(2, 2, 5), torch.randn(1, 3, 5), 3, 1, 2)
    with pytest.raises(RuntimeError, match="dilation >= 1"):
        lib.conv1d_weight_grad(torch.randn(1, 2, 5), torch.randn(1, 3, 5), 3, 0, 2)
