"""The C++ CPU kernels behind fast streaming: conv1d_window (explicit padding, so a stream computes
only the outputs its chunk completes) and conv_transpose1d_stream (one chunk with its carried tail;
its results are checked through the prepared streams in test_streaming.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_to_reference, require_backend

from fastcodec import ops


@pytest.fixture(autouse=True)
def _cpp():
    require_backend("cpp", "cpu")


def _window_ref(x, w, b, stride, dilation, pad, out_len, activation, alpha, residual):
    """y[t] = act(b + sum w[k] x[t*stride - pad + k*dilation]) + residual, x zero outside [0, T)."""
    K = w.shape[2]
    need = (out_len - 1) * stride - pad + (K - 1) * dilation + 1  # x index past the last tap, +1
    left = max(pad, 0)
    xx = F.pad(x, (left, max(need - x.shape[2], 0)))[:, :, max(-pad, 0):]
    y = F.conv1d(xx, w, b, stride=stride, dilation=dilation)[:, :, :out_len]
    y = ops.reference.activation_ref(y, activation, alpha=alpha)
    return y if residual is None else y + residual


# (B, Cin, Cout, T, K, stride, dilation, pad, out_len): a stream's calls (pad <= 0), the causal
# case, reads past the right end, out_len around the few-outputs threshold without the weight cache
# (8), and with it the skinny product's row groups (one group up to 8 rows, groups of 6 or 8
# beyond) and panel counts (Cout = 20, 43: whole tiles plus leftover panels); the engine past
# skinny_max_rows() (64 with AVX-512, else 512). test_skinny_product_tiles covers every tile.
CASES = [
    (1, 3, 5, 13, 7, 1, 1, 0, 7),
    (2, 8, 6, 62, 7, 1, 9, 0, 8),
    (1, 4, 7, 23, 16, 8, 1, -7, 1),
    (2, 5, 3, 40, 4, 2, 1, -1, 19),
    (1, 6, 9, 30, 7, 1, 3, 18, 30),
    (3, 7, 11, 10, 3, 2, 2, 4, 12),
    (1, 33, 20, 140, 7, 1, 1, 0, 134),
    (2, 9, 43, 80, 7, 1, 9, -54, 26),
    (1, 12, 43, 70, 3, 1, 1, 2, 64),
    (2, 10, 20, 55, 5, 2, 1, 4, 27),
    (1, 5, 43, 60, 7, 1, 2, 0, 13),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("activation", ["elu", "snake", None])
@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "weight_cache"])
def test_conv1d_window_matches_reference(case, activation, cached):
    """Inside ops.weight_cache() up to 64 outputs take the skinny product on packed panels;
    outside, up to 8 take sgemm. Both against the reference."""
    B, Cin, Cout, T, K, stride, dilation, pad, out_len = case
    x = torch.randn(B, Cin, T, dtype=torch.float64)
    w = torch.randn(Cout, Cin, K, dtype=torch.float64) / math.sqrt(Cin * K)
    b = 0.1 * torch.randn(Cout, dtype=torch.float64)
    alpha = torch.rand(Cout, dtype=torch.float64) + 0.5 if activation == "snake" else None
    res = torch.randn(B, Cout, out_len, dtype=torch.float64)
    ref64 = _window_ref(x, w, b, stride, dilation, pad, out_len, activation, alpha, res)
    f32 = [t.float() if t is not None else None for t in (x, w, b, alpha, res)]
    ref32 = _window_ref(*f32[:3], stride, dilation, pad, out_len, activation, f32[3], f32[4])
    with ops.weight_cache(cached):
        for _ in range(2):  # with the cache the second call reads the packing kept by the first
            out = torch.ops.fastcodec.conv1d_window(f32[0], f32[1], f32[2], stride, dilation, pad, out_len,
                                                    activation or "none", 0.3, f32[3], f32[4])
            assert_close_to_reference(out, ref32, ref64)


def test_skinny_product_tiles():
    """Inside the weight cache, every row count of a group (1-8; groups past 8 rows) against panel
    counts 1-7 of either width (8 floats with AVX2, 16 with AVX-512): whole micro-tiles of each
    kernel and every leftover of fewer panels. A dropped row or panel fails here."""
    torch.manual_seed(0)
    for Cout in (5, 20, 40, 60, 75, 90, 107):
        w = torch.randn(Cout, 3, 2, dtype=torch.float64) / 2
        for out_len in list(range(1, 10)) + [14, 17]:
            x = torch.randn(1, 3, out_len + 1, dtype=torch.float64)
            ref64 = _window_ref(x, w, None, 1, 1, 0, out_len, None, None, None)
            ref32 = _window_ref(x.float(), w.float(), None, 1, 1, 0, out_len, None, None, None)
            with ops.weight_cache():
                out = torch.ops.fastcodec.conv1d_window(x.float(), w.float(), None, 1, 1, 0, out_len, "none", 0.3,
                                                        None, None)
            assert_close_to_reference(out, ref32, ref64)


def test_conv1d_window_refuses_bad_arguments():
    x, w = torch.randn(1, 3, 10), torch.randn(4, 3, 3)
    with pytest.raises(RuntimeError, match="fp32 only"):
        torch.ops.fastcodec.conv1d_window(x.double(), w.double(), None, 1, 1, 0, 5, "none", 0.3, None, None)
    with pytest.raises(RuntimeError, match="residual must be"):
        torch.ops.fastcodec.conv1d_window(x, w, None, 1, 1, 0, 5, "none", 0.3, None, torch.randn(1, 4, 6))
    with pytest.raises(RuntimeError, match="out_len"):
        torch.ops.fastcodec.conv1d_window(x, w, None, 1, 1, 0, -1, "none", 0.3, None, None)


def test_conv_transpose1d_stream_kernel_refuses_bad_arguments():
    x, w = torch.randn(1, 3, 4), torch.randn(3, 5, 8)
    y, tail = torch.ops.fastcodec.conv_transpose1d_stream(x, w, None, None, 4, "none", 0.3, None)
    assert y.shape == (1, 5, 16) and tail.shape == (1, 5, 4)
    with pytest.raises(RuntimeError, match="tail must be"):
        torch.ops.fastcodec.conv_transpose1d_stream(x, w, None, tail[:, :, :3], 4, "none", 0.3, None)
    with pytest.raises(RuntimeError, match="fp32 only"):
        torch.ops.fastcodec.conv_transpose1d_stream(x.double(), w.double(), None, None, 4, "none", 0.3, None)
    # An empty chunk emits nothing and carries the tail over unchanged.
    y0, tail0 = torch.ops.fastcodec.conv_transpose1d_stream(x[:, :, :0], w, None, tail, 4, "none", 0.3, None)
    assert y0.shape == (1, 5, 0) and torch.equal(tail0, tail)


@pytest.mark.parametrize("T", [1, 5, 8, 13, 64, 70])  # one row group, groups of 6, sgemm past 64 frames
@pytest.mark.parametrize("cached", [False, True], ids=["uncached", "weight_cache"])
def test_conv_transpose1d_stream_kernel_matches_reference(T, cached):
    """One chunk with a carried tail: y and the next tail against the float64 reference transposed
    conv of (the previous chunk, this chunk). Cout * K = 45 is not a whole number of 8-wide panels."""
    Cin, Cout, K, stride = 6, 5, 9, 4
    prev = torch.randn(2, Cin, 3, dtype=torch.float64)
    x = torch.randn(2, Cin, T, dtype=torch.float64)
    w = torch.randn(Cin, Cout, K, dtype=torch.float64) / math.sqrt(Cin * K / stride)
    b = 0.1 * torch.randn(Cout, dtype=torch.float64)
    ref = {}
    for dt in (torch.float64, torch.float32):
        # The whole transposed conv of (prev, x), its untrimmed tail included, before bias.
        z = F.conv_transpose1d(torch.cat([prev, x], dim=2).to(dt), w.to(dt), stride=stride)
        t0 = 3 * stride
        y = ops.reference.activation_ref(z[:, :, t0:t0 + T * stride] + b.to(dt).view(1, -1, 1), "elu")
        tail = z[:, :, t0 + T * stride:t0 + T * stride + K - stride]
        ref[dt] = (y, tail)
    f32 = lambda t: t.float()  # noqa: E731
    with ops.weight_cache(cached):
        _, tail = torch.ops.fastcodec.conv_transpose1d_stream(f32(prev), f32(w), f32(b), None, stride, "elu", 0.3,
                                                              None)
        for _ in range(2):  # with the cache the second call reads the packing kept by the first
            y, next_tail = torch.ops.fastcodec.conv_transpose1d_stream(f32(x), f32(w), f32(b), tail, stride, "elu",
                                                                       0.3, None)
            assert_close_to_reference(y, ref[torch.float32][0], ref[torch.float64][0], name="y")
            assert_close_to_reference(next_tail, ref[torch.float32][1], ref[torch.float64][1], name="tail")
