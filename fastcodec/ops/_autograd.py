"""Backward of the compiled ops, shared by every backend that implements the op schemas.

The forward runs the fused kernel; the backward recomputes the pre-activation with PyTorch's conv,
applies the epilogue's derivative here, and uses PyTorch's conv-backward primitive for the
input/weight/bias gradients (custom backward kernels are future work, see benchmarks/RESULTS.md).
The search ops (vq_nearest, rvq_encode) are marked non-differentiable; rvq_decode is a gather-sum
whose codebook gradient is an index_add.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .reference import SNAKE_EPS, conv1d_pre_activation, conv_transpose1d_pre_activation


def activation_backward(gy, z, activation, negative_slope, alpha, need_alpha):
    """(d loss/dz, d loss/d alpha or None) for y = act(z). gy, z: [B, C, T]; alpha: [C]."""
    if activation == "none":
        return gy, None
    if activation == "elu":
        return gy * torch.where(z > 0, torch.ones_like(z), torch.exp(z)), None
    if activation == "leaky_relu":
        return gy * torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope)), None
    if activation == "silu":
        s = torch.sigmoid(z)
        return gy * s * (1 + z * (1 - s)), None
    if activation == "snake":
        a = alpha.view(1, -1, 1)
        inv = 1.0 / (a + SNAKE_EPS)
        az = a * z
        sin2 = torch.sin(2 * az)
        gz = gy * (1 + sin2 * a * inv)
        galpha = None
        if need_alpha:
            galpha = (gy * (sin2 * z * inv - torch.sin(az).pow(2) * inv * inv)).sum(dim=(0, 2))
        return gz, galpha
    raise ValueError(f"unknown activation {activation!r}")


# causal_conv1d(x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual)
def _conv1d_setup(ctx, inputs, output):
    x, weight, bias, stride, dilation, activation, negative_slope, alpha, _ = inputs
    ctx.save_for_backward(x, weight, bias, alpha)
    ctx.conf = (stride, dilation, activation, negative_slope)


def _conv1d_backward(ctx, gy):
    x, weight, bias, alpha = ctx.saved_tensors
    stride, dilation, activation, negative_slope = ctx.conf
    need_x, need_w, need_b, *_, need_alpha, need_res = ctx.needs_input_grad
    z = None if activation == "none" else conv1d_pre_activation(x, weight, bias, stride, dilation)
    gz, galpha = activation_backward(gy, z, activation, negative_slope, alpha, need_alpha)
    pad = (weight.shape[-1] - 1) * dilation
    gx = gw = gb = None
    if need_x or need_w or need_b:
        gxp, gw, gb = torch.ops.aten.convolution_backward(
            gz, F.pad(x, (pad, 0)), weight, None if bias is None else [weight.shape[0]],
            [stride], [0], [dilation], False, [0], 1, [need_x, need_w, need_b and bias is not None])
        gx = None if gxp is None else gxp[..., pad:]
    return gx, gw, gb, None, None, None, None, galpha, gy if need_res else None


# causal_conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha)
def _conv_transpose1d_setup(ctx, inputs, output):
    x, weight, bias, stride, activation, negative_slope, alpha = inputs
    ctx.save_for_backward(x, weight, bias, alpha)
    ctx.conf = (stride, activation, negative_slope)


def _conv_transpose1d_backward(ctx, gy):
    x, weight, bias, alpha = ctx.saved_tensors
    stride, activation, negative_slope = ctx.conf
    need_x, need_w, need_b, _, _, _, need_alpha = ctx.needs_input_grad
    z = None if activation == "none" else conv_transpose1d_pre_activation(x, weight, bias, stride)
    gz, galpha = activation_backward(gy, z, activation, negative_slope, alpha, need_alpha)
    gx = gw = gb = None
    if need_x or need_w or need_b:
        T, K = x.shape[-1], weight.shape[-1]
        out_pad = max(0, stride - K)
        # The trimmed tail of the full transposed conv gets zero gradient.
        gz_full = F.pad(gz, (0, (T - 1) * stride + K + out_pad - T * stride))
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gz_full, x, weight, None if bias is None else [weight.shape[1]],
            [stride], [0], [1], True, [out_pad], 1, [need_x, need_w, need_b and bias is not None])
    return gx, gw, gb, None, None, None, galpha


def _search_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(*output)


def _vq_nearest_backward(ctx, g_index, g_dist):
    return None, None


def _rvq_encode_backward(ctx, g_codes, g_quantized):
    return None, None, None


def _rvq_decode_setup(ctx, inputs, output):
    codes, codebooks = inputs
    ctx.save_for_backward(codes)
    ctx.cb_shape = codebooks.shape


def _rvq_decode_backward(ctx, g):
    (codes,) = ctx.saved_tensors
    Q, K, D = ctx.cb_shape
    N, n_q = codes.shape
    if not ctx.needs_input_grad[1]:
        return None, None
    flat = (codes + torch.arange(n_q, device=codes.device) * K).reshape(-1)
    gcb = g.new_zeros(Q * K, D).index_add(0, flat, g.unsqueeze(1).expand(N, n_q, D).reshape(-1, D))
    return None, gcb.view(Q, K, D)


AUTOGRAD = {
    "causal_conv1d": (_conv1d_backward, _conv1d_setup),
    "causal_conv_transpose1d": (_conv_transpose1d_backward, _conv_transpose1d_setup),
    "vq_nearest": (_vq_nearest_backward, _search_setup),
    "rvq_encode": (_rvq_encode_backward, _search_setup),
    "rvq_decode": (_rvq_decode_backward, _rvq_decode_setup),
}


def register(namespace: str, ops=None):
    for name, (backward, setup) in AUTOGRAD.items():
        if ops is None or name in ops:
            torch.library.register_autograd(f"{namespace}::{name}", backward, setup_context=setup)
