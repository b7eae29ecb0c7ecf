"""Backward of the compiled ops, shared by every backend that implements the op schemas.

The forward runs the fused kernel; the backward reads the activation's derivative off the saved
output (or recomputes the pre-activation with the same backend's kernel), computes a stride-1
conv's input gradient with the backend's own forward kernel (a time-reversed causal conv), and uses
PyTorch's conv-backward primitive for weight gradients and the strided and transposed convs'
input gradients, except on the CPU: the weight gradients of short, wide layers are one GEMM over
im2col'd windows (_weight_grad_by_gemm), and those of the other stride-1 convs come from the C++
library's own kernel (_own_weight_grad); bias gradients are sums.
The search ops (vq_nearest, rvq_encode, rvq_residuals) are marked non-differentiable; rvq_decode is a gather-sum
whose codebook gradient is an index_add.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .reference import SNAKE_EPS


def activation_backward(gy, z, activation, negative_slope, alpha, need_alpha):
    """(d loss/dz, d loss/d alpha or None) for y = act(z). gy, z: [B, C, T]; alpha: [C]."""
    if activation == "none":
        return gy, None
    if activation == "elu":
        return gy * torch.where(z > 0, torch.ones_like(z), torch.exp(z)), None
    if activation == "leaky_relu":
        return gy * torch.where(z > 0, torch.ones_like(z), torch.full_like(z, negative_slope)), None
    if activation == "silu":
        return torch.ops.aten.silu_backward(gy, z), None
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


def derivative_from_output(activation, negative_slope):
    """Whether act'(z) can be read off y = act(z): ELU (y + 1 where y <= 0) and LeakyReLU with a
    non-negative slope (y > 0 exactly where z > 0). Then backward needs no recompute."""
    return activation == "elu" or (activation == "leaky_relu" and negative_slope >= 0)


def activation_backward_from_output(gy, y, activation, negative_slope):
    # PyTorch's own single-pass kernels, in their "given the result" form.
    if activation == "elu":
        return torch.ops.aten.elu_backward(gy, 1.0, 1.0, 1.0, True, y)
    return torch.ops.aten.leaky_relu_backward(gy, y, negative_slope, True)


def _epilogue_backward(recompute, ctx, gy, alpha, y_act, need_alpha):
    """(dL/dz, dL/dalpha) from the saved activation output when possible, else from a recompute."""
    activation, negative_slope = ctx.act
    if activation == "none":
        return gy, None
    if y_act is not None:
        return activation_backward_from_output(gy, y_act, activation, negative_slope), None
    return activation_backward(gy, recompute(), activation, negative_slope, alpha, need_alpha)


def _save_activation_output(activation, negative_slope, output, residual=None):
    if not derivative_from_output(activation, negative_slope):
        return None
    return output if residual is None else output - residual


# causal_conv1d(x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual)
def _conv1d_setup(ctx, inputs, output):
    x, weight, bias, stride, dilation, activation, negative_slope, alpha, residual = inputs
    y_act = _save_activation_output(activation, negative_slope, output, residual)
    ctx.save_for_backward(x, weight, bias, alpha, y_act)
    ctx.conf = (stride, dilation)
    ctx.act = (activation, negative_slope)


def _conv1d_backward(lib, ctx, gy):
    x, weight, bias, alpha, y_act = ctx.saved_tensors
    stride, dilation = ctx.conf
    need_x, need_w, need_b, *_, need_alpha, need_res = ctx.needs_input_grad
    gz, galpha = _epilogue_backward(
        lambda: lib.causal_conv1d(x, weight, bias, stride, dilation, "none", 0.0, None, None),
        ctx, gy, alpha, y_act, need_alpha)
    K = weight.shape[-1]
    pad = (K - 1) * dilation
    gx = gw = gb = None
    own_gx = need_x and stride == 1
    if own_gx:
        gx = _conv1d_input_grad(lib, gz, weight, dilation)
    own_gw = need_w  # computed here, not by ATen's backward-weights
    if need_w and _weight_grad_by_gemm(x, gz.shape[0] * gz.shape[2], weight.shape[1] * K):
        gw = _conv1d_weight_grad(x, gz, K, stride, dilation)
    elif need_w and _own_weight_grad(lib, x, stride):
        gw = lib.conv1d_weight_grad(gz.contiguous(), x.contiguous(), K, dilation, pad)
    else:
        own_gw = False
    if (need_x and not own_gx) or (need_w and not own_gw):
        gxp, gw_aten, _ = torch.ops.aten.convolution_backward(
            gz, F.pad(x, (pad, 0)), weight, None, [stride], [0], [dilation], False, [0], 1,
            [need_x and not own_gx, need_w and not own_gw, False])
        if not own_gx:
            gx = None if gxp is None else gxp[..., pad:]
        if not own_gw:
            gw = gw_aten
    if need_b and bias is not None:
        gb = gz.sum((0, 2))
    return gx, gw, gb, None, None, None, None, galpha, gy if need_res else None


def _weight_grad_by_gemm(x, rows, cols):
    """Whether a weight gradient goes through one GEMM over the im2col'd windows (rows = batch x
    output samples, the reduction; cols = input channels x taps) instead of ATen's backward-weights.

    On the CPU ATen is slow when the reduction is short and the weight wide (a codec's 75 Hz
    layers) and the faster where the reduction is long; the im2col copy is capped at 64 MB
    (figures: benchmarks/RESULTS.md, "Where the code's rules come from"). GPUs keep cuDNN's (not
    measured there).
    """
    return x.device.type == "cpu" and rows * 3 <= cols and rows * cols <= 1 << 24


def _own_weight_grad(lib, x, stride):
    """Whether a stride-1 conv's weight gradient runs on the C++ library's own kernel
    (csrc/cpu/weight_grad.cpp: dot products along time in registers, no im2col), faster than ATen's
    backward-weights on the codec's stride-1 layers except the 128-256-channel ones on an Intel
    AVX-512 host, where it ran at 0.75-1x (benchmarks/RESULTS.md, "Where the code's rules come
    from").
    CPU fp32, outside grad mode (the kernel has no autograd, so a double backward keeps ATen's)."""
    return (stride == 1 and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and hasattr(lib, "conv1d_weight_grad"))


def _conv1d_weight_grad(x, gz, K, stride, dilation):
    """dL/dW[co, ci, k] = sum over (b, t) of gz[b, co, t] x[b, ci, t*stride - (K-1)*dilation + k*dilation]
    as gz [Cout, B*T'] @ windows [B*T', Cin*K]. x: [B, Cin, T], gz: [B, Cout, T'] -> [Cout, Cin, K]."""
    B, Cin, T = x.shape
    Tout = gz.shape[2]
    span = (K - 1) * dilation + 1
    xp = F.pad(x, ((K - 1) * dilation, max(0, (Tout - 1) * stride + 1 - T)))
    windows = xp.unfold(2, span, stride)[:, :, :Tout, ::dilation]            # [B, Cin, T', K]
    windows = windows.permute(0, 2, 1, 3).reshape(B * Tout, Cin * K)
    return (gz.permute(1, 0, 2).reshape(gz.shape[1], B * Tout) @ windows).view(gz.shape[1], Cin, K)


def _conv1d_input_grad(lib, gz, weight, dilation):
    """dL/dx of a stride-1 causal conv, on the backend's own fused kernel.

    gx[s] = sum_k W[:, :, k]^T gz[s + (K-1-k)*dilation] looks ahead in time; reversed in time it is
    the causal conv of reversed gz with the transposed weight, so gx = flip(conv(flip(gz), W^T)).
    On the CPU this beats ATen's backward-data path several times at the codec's narrow layers
    (benchmarks/RESULTS.md); a 1x1 conv needs no reversal. The C++ CPU kernels skip the two
    reversals too: their explicit-padding conv (conv1d_window) reads ahead directly, with the taps
    reversed instead of the signal, which saves two copies of gz.
    It has no autograd, so a double backward (grad mode on here) keeps the reversed form.
    gz: [B, Cout, T] -> [B, Cin, T].
    """
    wt = weight.transpose(0, 1)
    if weight.shape[-1] == 1:
        return lib.causal_conv1d(gz.contiguous(), wt.contiguous(), None, 1, 1, "none", 0.0, None, None)
    if (gz.device.type == "cpu" and gz.dtype == torch.float32 and not torch.is_grad_enabled()
            and hasattr(lib, "conv1d_window")):
        return lib.conv1d_window(gz.contiguous(), wt.flip(2).contiguous(), None, 1, dilation, 0, gz.shape[2], "none",
                                 0.0, None, None)
    return lib.causal_conv1d(gz.flip(2), wt.contiguous(), None, 1, dilation, "none", 0.0, None, None).flip(2)


# causal_conv_transpose1d(x, weight, bias, stride, activation, negative_slope, alpha)
def _conv_transpose1d_setup(ctx, inputs, output):
    x, weight, bias, stride, activation, negative_slope, alpha = inputs
    ctx.save_for_backward(x, weight, bias, alpha, _save_activation_output(activation, negative_slope, output))
    ctx.conf = stride
    ctx.act = (activation, negative_slope)


def _conv_transpose1d_backward(lib, ctx, gy):
    x, weight, bias, alpha, y_act = ctx.saved_tensors
    stride = ctx.conf
    need_x, need_w, need_b, _, _, _, need_alpha = ctx.needs_input_grad
    gz, galpha = _epilogue_backward(
        lambda: lib.causal_conv_transpose1d(x, weight, bias, stride, "none", 0.0, None),
        ctx, gy, alpha, y_act, need_alpha)
    gx = gw = gb = None
    B, Cin, T = x.shape
    Cout, K = weight.shape[1], weight.shape[2]
    gemm_gw = need_w and _weight_grad_by_gemm(x, B * T, Cout * K)
    if gemm_gw:
        gw = _conv_transpose1d_weight_grad(x, gz, K, stride)
    if need_x or (need_w and not gemm_gw):
        out_pad = max(0, stride - K)
        # The trimmed tail of the full transposed conv gets zero gradient.
        gz_full = F.pad(gz, (0, (T - 1) * stride + K + out_pad - T * stride))
        gx, gw_aten, _ = torch.ops.aten.convolution_backward(
            gz_full, x, weight, None, [stride], [0], [1], True, [out_pad], 1, [need_x, need_w and not gemm_gw, False])
        if not gemm_gw:
            gw = gw_aten
    if need_b and bias is not None:
        gb = gz.sum((0, 2))
    return gx, gw, gb, None, None, None, galpha


def _conv_transpose1d_weight_grad(x, gz, K, stride):
    """dL/dW[ci, co, k] = sum over (b, t) of x[b, ci, t] gz[b, co, t*stride + k] (zero past the
    trimmed end) as x [Cin, B*T] @ windows of gz [B*T, Cout*K]. x: [B, Cin, T], gz: [B, Cout, T*stride]."""
    B, Cin, T = x.shape
    Cout = gz.shape[1]
    gzp = F.pad(gz, (0, max(0, K - stride)))
    windows = gzp.unfold(2, K, stride)[:, :, :T, :]                           # [B, Cout, T, K]
    windows = windows.permute(0, 2, 1, 3).reshape(B * T, Cout * K)
    return (x.permute(1, 0, 2).reshape(Cin, B * T) @ windows).view(Cin, Cout, K)


def _search_setup(ctx, inputs, output):
    ctx.mark_non_differentiable(*output)


def _vq_nearest_backward(ctx, g_index, g_dist):
    return None, None


def _rvq_search_backward(ctx, g_codes, g_out):
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
    # A row with a code outside [0, K) decoded to NaN (unchecked GPU codes): it sends no gradient,
    # and its codes are clamped so that nothing is indexed out of bounds.
    bad = ((codes < 0) | (codes >= K)).any(1, keepdim=True)  # [N, 1]
    flat = (codes.clamp(0, K - 1) + torch.arange(n_q, device=codes.device) * K).reshape(-1)
    rows = torch.where(bad, torch.zeros_like(g), g)
    gcb = g.new_zeros(Q * K, D).index_add(0, flat, rows.unsqueeze(1).expand(N, n_q, D).reshape(-1, D))
    return None, gcb.view(Q, K, D)


def _grouped_conv1d_setup(ctx, inputs, output):
    x, weight, bias, stride, padding, groups = inputs
    ctx.save_for_backward(x, weight)
    ctx.conf = (stride, padding, groups, bias is not None)


def _grouped_conv1d_backward(lib, ctx, gy):
    """Both gradients on the library's own kernels (csrc/cpu/grouped_conv.cpp); the bias's is a sum."""
    x, weight = ctx.saved_tensors
    stride, padding, groups, has_bias = ctx.conf
    gy = gy.contiguous()
    gx = gw = gb = None
    if ctx.needs_input_grad[0]:
        gx = lib.grouped_conv1d_input_grad(gy, weight, x.shape[2], stride, padding, groups)
    if ctx.needs_input_grad[1]:
        gw = lib.grouped_conv1d_weight_grad(gy, x, weight.shape[2], stride, padding, groups)
    if has_bias and ctx.needs_input_grad[2]:
        gb = gy.sum((0, 2))
    return gx, gw, gb, None, None, None


AUTOGRAD = {
    "causal_conv1d": (_conv1d_backward, _conv1d_setup),
    "causal_conv_transpose1d": (_conv_transpose1d_backward, _conv_transpose1d_setup),
    "vq_nearest": (_vq_nearest_backward, _search_setup),
    "rvq_encode": (_rvq_search_backward, _search_setup),
    "rvq_residuals": (_rvq_search_backward, _search_setup),
    "rvq_decode": (_rvq_decode_backward, _rvq_decode_setup),
    "grouped_conv1d": (_grouped_conv1d_backward, _grouped_conv1d_setup),
    "vq_nearest_fast": (_vq_nearest_backward, _search_setup),
    "rvq_encode_fast": (_rvq_search_backward, _search_setup),
    "rvq_residuals_fast": (_rvq_search_backward, _search_setup),
}


# Backward functions that recompute with the library's own forward take it as first argument.
_NEEDS_LIB = {"causal_conv1d", "causal_conv_transpose1d", "grouped_conv1d"}


def register(namespace: str, ops=None):
    lib = getattr(torch.ops, namespace)
    for name, (backward, setup) in AUTOGRAD.items():
        if (ops is None or name in ops) and hasattr(lib, name):  # (the fast searches are Triton's only)
            fn = functools.partial(backward, lib) if name in _NEEDS_LIB else backward
            torch.library.register_autograd(f"{namespace}::{name}", fn, setup_context=setup)
