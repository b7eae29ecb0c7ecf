"""The references are the spec; these tests pin down what the spec says, independently of how the
reference computes it (causality, lengths, padding, the tie rule, decode/encode agreement)."""
import math

import pytest
import torch

from fastcodec import ops


def _naive_causal_conv1d(x, w, b, stride, dilation):
    """The definition, one output sample at a time (float64, small sizes only)."""
    B, Cin, T = x.shape
    Cout, _, K = w.shape
    Tout = math.ceil(T / stride)
    y = torch.zeros(B, Cout, Tout, dtype=torch.float64)
    for t in range(Tout):
        for k in range(K):
            src = t * stride + k * dilation - (K - 1) * dilation
            if src >= 0:
                y[:, :, t] += torch.einsum("oi,bi->bo", w[:, :, k], x[:, :, src])
    return y + b.view(1, -1, 1)


def _naive_causal_conv_transpose1d(x, w, b, stride):
    B, Cin, T = x.shape
    _, Cout, K = w.shape
    y = torch.zeros(B, Cout, T * stride, dtype=torch.float64)
    for t in range(T):
        for k in range(K):
            if t * stride + k < T * stride:
                y[:, :, t * stride + k] += torch.einsum("io,bi->bo", w[:, :, k], x[:, :, t])
    return y + b.view(1, -1, 1)


@pytest.mark.parametrize("T,K,stride,dilation",
                         [(1, 3, 1, 1), (2, 7, 1, 9), (13, 4, 2, 1), (23, 3, 5, 3), (8, 1, 8, 1)])
def test_conv1d_ref_matches_definition(T, K, stride, dilation):
    x = torch.randn(2, 3, T, dtype=torch.float64)
    w = torch.randn(4, 3, K, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    y = ops.causal_conv1d_ref(x, w, b, stride=stride, dilation=dilation)
    assert y.shape == (2, 4, math.ceil(T / stride))
    torch.testing.assert_close(y, _naive_causal_conv1d(x, w, b, stride, dilation))


@pytest.mark.parametrize("T,K,stride", [(1, 4, 2), (5, 16, 8), (9, 3, 1), (7, 2, 5), (4, 10, 4)])
def test_conv_transpose1d_ref_matches_definition(T, K, stride):
    x = torch.randn(2, 3, T, dtype=torch.float64)
    w = torch.randn(3, 5, K, dtype=torch.float64)
    b = torch.randn(5, dtype=torch.float64)
    y = ops.causal_conv_transpose1d_ref(x, w, b, stride=stride)
    assert y.shape == (2, 5, T * stride)
    torch.testing.assert_close(y, _naive_causal_conv_transpose1d(x, w, b, stride))


@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 3), (2, 1), (4, 2)])
@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
def test_conv1d_is_causal(stride, dilation, activation):
    """Changing x after sample s leaves every y[t] with t*stride <= s unchanged."""
    x = torch.randn(1, 3, 40, dtype=torch.float64)
    w = torch.randn(4, 3, 5, dtype=torch.float64)
    alpha = torch.rand(4, dtype=torch.float64) + 0.2 if activation == "snake" else None
    y = ops.causal_conv1d_ref(x, w, stride=stride, dilation=dilation, activation=activation, alpha=alpha)
    for s in (0, 7, 21, 39):
        x2 = x.clone()
        x2[..., s + 1:] = torch.randn_like(x2[..., s + 1:])
        y2 = ops.causal_conv1d_ref(x2, w, stride=stride, dilation=dilation, activation=activation, alpha=alpha)
        keep = s // stride + 1
        torch.testing.assert_close(y2[..., :keep], y[..., :keep], rtol=0, atol=0)
        if s + 1 < 40 and keep < y.shape[-1]:
            assert not torch.equal(y2[..., keep:], y[..., keep:]), "the future should matter after s"


@pytest.mark.parametrize("stride,K", [(2, 4), (4, 8), (5, 3), (1, 7)])
def test_conv_transpose1d_is_causal(stride, K):
    """Output samples before (s+1)*stride never depend on input after s."""
    x = torch.randn(1, 3, 20, dtype=torch.float64)
    w = torch.randn(3, 2, K, dtype=torch.float64)
    y = ops.causal_conv_transpose1d_ref(x, w, stride=stride)
    for s in (0, 5, 19):
        x2 = x.clone()
        x2[..., s + 1:] = torch.randn_like(x2[..., s + 1:])
        y2 = ops.causal_conv_transpose1d_ref(x2, w, stride=stride)
        torch.testing.assert_close(y2[..., : (s + 1) * stride], y[..., : (s + 1) * stride], rtol=0, atol=0)


def test_activations_and_residual_compose_in_order():
    x = torch.randn(2, 3, 11, dtype=torch.float64)
    w = torch.randn(3, 3, 3, dtype=torch.float64)
    res = torch.randn(2, 3, 11, dtype=torch.float64)
    z = ops.causal_conv1d_ref(x, w)
    alpha = torch.rand(3, dtype=torch.float64) + 0.5
    expected = {
        "elu": torch.where(z > 0, z, torch.expm1(z)),
        "leaky_relu": torch.where(z > 0, z, 0.3 * z),
        "silu": z * torch.sigmoid(z),
        "snake": z + torch.sin(alpha.view(1, -1, 1) * z) ** 2 / alpha.view(1, -1, 1),
    }
    for act, want in expected.items():
        y = ops.causal_conv1d_ref(x, w, activation=act, residual=res, alpha=alpha if act == "snake" else None)
        torch.testing.assert_close(y, want + res)


def test_vq_ties_go_to_lowest_index():
    cb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    idx, dist = ops.vq_nearest_ref(x, cb)
    assert idx.tolist() == [0, 0, 0]  # code 2 duplicates code 0; (0.5, 0.5) ties 0 and 1; origin ties all
    torch.testing.assert_close(dist, torch.tensor([0.0, 0.5, 1.0]))


def test_rvq_ref_stages_quantize_residuals_and_decode_matches():
    x = torch.randn(50, 6, dtype=torch.float64)
    cbs = torch.randn(4, 16, 6, dtype=torch.float64)
    codes, q = ops.rvq_encode_ref(x, cbs)
    assert codes.dtype == torch.int64 and codes.shape == (50, 4)
    residual = x.clone()
    for i in range(4):
        d = torch.cdist(residual, cbs[i]) ** 2
        assert (d.gather(1, codes[:, i:i + 1]).squeeze(1) <= d.min(1).values * (1 + 1e-12) + 1e-12).all()
        residual = residual - cbs[i][codes[:, i]]
    torch.testing.assert_close(q, x - residual)
    assert torch.equal(ops.rvq_decode_ref(codes, cbs), q)
    codes2, _ = ops.rvq_encode_ref(x, cbs, n_q=2)
    assert torch.equal(codes2, codes[:, :2])
