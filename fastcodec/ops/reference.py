"""Pure-PyTorch references: the ground truth and the executable spec of every fastcodec op.

Each `name_ref` has the signature of the public `fastcodec.ops.name` minus `backend`. Kernels are
tested against these; the backward of the compiled forwards is also built from these pieces
(see `_autograd.py`), so what a kernel must compute is written down exactly once, here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "elu", "leaky_relu", "silu", "snake")
DEFAULT_NEGATIVE_SLOPE = 0.3
# Snake divides by alpha; DAC and BigVGAN add this epsilon so an alpha that trains to 0 stays finite.
SNAKE_EPS = 1e-9
# Rows of x per block in the VQ reference, so the N x K distance block stays ~64 MB in fp32.
_VQ_BLOCK_ELEMS = 1 << 24


def activation_ref(z, activation=None, *, negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """Pointwise activation of the conv epilogue. z: [B, C, T]; alpha (snake only): [C]."""
    if activation is None:
        return z
    if activation == "elu":
        return F.elu(z)
    if activation == "leaky_relu":
        return F.leaky_relu(z, negative_slope)
    if activation == "silu":
        return F.silu(z)
    if activation == "snake":
        a = alpha.view(1, -1, 1)
        return z + torch.sin(a * z).pow(2) / (a + SNAKE_EPS)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def conv1d_pre_activation(x, weight, bias, stride, dilation):
    """Causal conv before the epilogue: x [B, Cin, T], weight [Cout, Cin, K] -> [B, Cout, ceil(T/stride)]."""
    pad = (weight.shape[-1] - 1) * dilation
    return F.conv1d(F.pad(x, (pad, 0)), weight, bias, stride=stride, dilation=dilation)


def conv_transpose1d_pre_activation(x, weight, bias, stride):
    """Causal transposed conv before the epilogue: x [B, Cin, T], weight [Cin, Cout, K] -> [B, Cout, T*stride].

    The full transposed conv has (T-1)*stride + K samples; the last K - stride of them still await
    input that has not arrived, so they are trimmed. When K < stride the full output is shorter than
    T*stride and output_padding fills the gap with samples that only get the bias.
    """
    T = x.shape[-1]
    out_pad = max(0, stride - weight.shape[-1])
    y = F.conv_transpose1d(x, weight, bias, stride=stride, output_padding=out_pad)
    return y[..., : T * stride]


def causal_conv1d_ref(x, weight, bias=None, *, stride=1, dilation=1, activation=None, residual=None,
                      negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """y = act(conv(pad_left(x, (K-1)*dilation), weight) + bias) + residual.

    x: [B, Cin, T], weight: [Cout, Cin, K], bias: [Cout], alpha: [Cout], residual: [B, Cout, ceil(T/stride)].
    y[..., t] depends on x[..., : t*stride + 1] only.
    """
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[0], weight.shape[0], 0)
    z = conv1d_pre_activation(x, weight, bias, stride, dilation)
    y = activation_ref(z, activation, negative_slope=negative_slope, alpha=alpha)
    return y if residual is None else y + residual


def causal_conv_transpose1d_ref(x, weight, bias=None, *, stride, activation=None,
                                negative_slope=DEFAULT_NEGATIVE_SLOPE, alpha=None):
    """y = act(conv_transpose(x, weight, stride) trimmed to T*stride + bias).

    x: [B, Cin, T], weight: [Cin, Cout, K] (PyTorch's layout) -> y: [B, Cout, T*stride].
    """
    if x.shape[-1] == 0:
        return x.new_zeros(x.shape[0], weight.shape[1], 0)
    z = conv_transpose1d_pre_activation(x, weight, bias, stride)
    return activation_ref(z, activation, negative_slope=negative_slope, alpha=alpha)


def grouped_conv1d_ref(x, weight, bias=None, *, stride=1, padding=0, groups=1):
    """A plain grouped conv, zero-padded by `padding` on both sides (not causal): what the training
    critics use. x: [B, Cin, T], weight: [Cout, Cin/groups, K], bias: [Cout] ->
    y: [B, Cout, (T + 2*padding - K) // stride + 1]."""
    return F.conv1d(x, weight, bias, stride=stride, padding=padding, groups=groups)


def vq_nearest_ref(x, codebook):
    """Nearest codeword by squared L2. x: [N, D], codebook: [K, D] -> (index [N] int64, sqdist [N]).

    Ties go to the lowest index (torch.argmin returns the first minimum). ||x||^2 is the same for
    every code, so the search ranks ||c||^2 - 2 x.c; sqdist is then computed directly for the winner.
    """
    N = x.shape[0]
    index = torch.empty(N, dtype=torch.int64, device=x.device)
    c_sq = codebook.pow(2).sum(1)
    block = max(1, _VQ_BLOCK_ELEMS // max(1, codebook.shape[0]))
    for s in range(0, N, block):
        xb = x[s : s + block]
        index[s : s + block] = torch.argmin(c_sq - 2.0 * (xb @ codebook.t()), dim=1)
    sqdist = (x - codebook[index]).pow(2).sum(1)
    return index, sqdist


def rvq_encode_ref(x, codebooks, n_q=None):
    """Residual VQ. x: [N, D], codebooks: [Q, K, D] -> (codes [N, n_q] int64, quantized [N, D]).

    Stage i quantizes the residual left by stages < i; quantized is the sum of the chosen codewords,
    accumulated in stage order (so rvq_decode(codes) reproduces it bit for bit).
    """
    n_q = codebooks.shape[0] if n_q is None else n_q
    codes = torch.empty(x.shape[0], n_q, dtype=torch.int64, device=x.device)
    residual = x
    quantized = torch.zeros_like(x)
    for i in range(n_q):
        idx, _ = vq_nearest_ref(residual, codebooks[i])
        chosen = codebooks[i][idx]
        codes[:, i] = idx
        residual = residual - chosen
        quantized = quantized + chosen
    return codes, quantized


def rvq_residuals_ref(x, codebooks, n_q=None):
    """The residual each stage of rvq_encode searched, and the last one left: x [N, D], codebooks
    [Q, K, D] -> (codes [N, n_q] int64, residuals [N, n_q + 1, D]).

    residuals[:, 0] is x; residuals[:, i + 1] = residuals[:, i] - codebooks[i][codes[:, i]], the
    error left after i + 1 stages, rounded to x's dtype at each stage as rvq_encode's is. What an
    RVQ's training losses need (commitment, EMA statistics, the quantized value at any n_q), from
    the search itself instead of a second pass over the codes.
    """
    n_q = codebooks.shape[0] if n_q is None else n_q
    codes = torch.empty(x.shape[0], n_q, dtype=torch.int64, device=x.device)
    residuals = torch.empty(x.shape[0], n_q + 1, x.shape[1], dtype=x.dtype, device=x.device)
    residuals[:, 0] = x
    for i in range(n_q):
        idx, _ = vq_nearest_ref(residuals[:, i], codebooks[i])
        codes[:, i] = idx
        residuals[:, i + 1] = residuals[:, i] - codebooks[i][idx]
    return codes, residuals


def rvq_decode_ref(codes, codebooks):
    """codes: [N, n_q] integer, codebooks: [Q, K, D] with n_q <= Q -> [N, D], the stage-ordered sum.
    A row with a code outside [0, K) is NaN, as in the kernels (and no device-side assert)."""
    K = codebooks.shape[1]
    out = codebooks.new_zeros(codes.shape[0], codebooks.shape[2])
    bad = torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device)
    for i in range(codes.shape[1]):
        k = codes[:, i].long()
        bad = bad | (k < 0) | (k >= K)
        out = out + codebooks[i][k.clamp(0, K - 1)]
    return torch.where(bad[:, None], torch.full_like(out, float("nan")), out)
