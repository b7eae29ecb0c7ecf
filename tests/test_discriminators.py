"""The critics' first layers compute their input gradient as a forward conv (see
fastcodec.nn.critic_convs._InputGradByForwardConv): the same gradients as nn.Conv, in float64 and under autocast."""
import types

import pytest
import torch
from torch import nn

from fastcodec.nn import CriticInputConv1d, CriticInputConv2d
from fastcodec.train.discriminators import Critics


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
def test_input_conv_gradcheck(dims, bias):
    torch.manual_seed(dims * 2 + bias)
    cls, shape, k, pad = ((CriticInputConv1d, (2, 3, 11), 5, 2) if dims == 1
                          else (CriticInputConv2d, (2, 2, 6, 7), (3, 5), (1, 2)))
    conv = cls(shape[1], 4, k, padding=pad, bias=bias).double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    params = [conv.weight] + ([conv.bias] if bias else [])
    torch.autograd.gradcheck(lambda x, *p: conv._conv_forward(x, p[0], p[1] if bias else None), (x, *params))


@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)])
def test_input_conv_matches_nn_conv(needs):
    """Input-only (the generator's step), weights-only (the critics' step) and both."""
    torch.manual_seed(3)
    ours = CriticInputConv2d(2, 5, 7, padding=3)
    ref = nn.Conv2d(2, 5, 7, padding=3)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 2, 13, 17)
    g = torch.randn(3, 5, 13, 17)
    grads = []
    for m in (ours, ref):
        m.requires_grad_(needs[1])
        xi = x.clone().requires_grad_(needs[0])
        m(xi).backward(g)
        grads.append([t.grad for t in (xi, m.weight, m.bias)])
    for a, b in zip(*grads):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_input_conv_under_bf16_autocast():
    """The backward runs outside autocast: grads come back in the parameters' and input's dtypes."""
    torch.manual_seed(4)
    ours = CriticInputConv1d(1, 4, 15, padding=7)
    ref = nn.Conv1d(1, 4, 15, padding=7)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 1, 300)
    out = []
    for m in (ours, ref):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(xi)
        assert y.dtype == torch.bfloat16
        y.float().square().mean().backward()
        assert xi.grad.dtype == torch.float32 and m.weight.grad.dtype == torch.float32
        out.append((y.float(), xi.grad, m.weight.grad, m.bias.grad))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_input_conv_refuses_what_it_does_not_compute():
    with pytest.raises(ValueError, match="stride 1"):
        CriticInputConv1d(1, 4, 5, padding=2, stride=2)
    with pytest.raises(ValueError, match="stride 1"):
        CriticInputConv2d(2, 4, 3, padding="same")


def test_critics_gradients_match_plain_convs():
    """The whole critic stack against a copy whose first layers run nn.Conv's own forward (and so
    ATen's backward): the same input gradient."""
    torch.manual_seed(5)
    crit = Critics(4, 4, (128,))
    plain = Critics(4, 4, (128,))
    plain.load_state_dict(crit.state_dict())
    for sub in list(plain.wave.critics) + list(plain.stft.critics):
        first = sub.layers[0]
        assert isinstance(first, (CriticInputConv1d, CriticInputConv2d))
        base = nn.Conv1d if isinstance(first, nn.Conv1d) else nn.Conv2d
        first._conv_forward = types.MethodType(base._conv_forward, first)
    x = 0.1 * torch.randn(2, 1, 1000)
    grads = []
    for c in (crit, plain):
        c.requires_grad_(False)
        xi = x.clone().requires_grad_(True)
        sum(feats[-1].sum() for outputs in [c(xi)] for feats in outputs).backward()
        grads.append(xi.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)
