"""The training critics' convs that fastcodec has kernels for (torch.nn layers otherwise: the
critics are not part of the codec). Where the backend resolves to cpp (fp32 CPU tensors, no
autocast) the 1-D ones run on ops.grouped_conv1d, whose 'auto' picks the C++ kernel or oneDNN per
shape (oneDNN's grouped kernels are slow on the CPU: benchmarks/RESULTS.md, "the critics' grouped
convs"). A critic's first layer computes its input gradient as a forward conv
(_InputGradByForwardConv).

- CriticInputConv1d, CriticInputConv2d: a first layer (stride 1, zero 'same' padding)
- CriticGroupedConv1d: a grouped, strided layer
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .precision import autocast_dtype


class _InputGradByForwardConv(torch.autograd.Function):
    """A stride-1, ungrouped, undilated conv (1-D or 2-D) whose input gradient is the forward conv
    of the output gradient with the flipped, transposed kernel. Same arithmetic; it exists because
    oneDNN's backward-data is several times slower than that forward on a critic's first layer,
    where the input has 1-2 channels (benchmarks/RESULTS.md, "Where the code's rules come from").
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.bias_dtype = None if bias is None else bias.dtype
        return _CONV[weight.dim()](x, weight, bias, padding=padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        # Under autocast the forward ran in grad's dtype; the backward runs outside autocast, so cast here.
        xc, wc = x.to(grad.dtype), weight.to(grad.dtype)
        spatial = tuple(range(2, weight.dim()))
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            pad = tuple(k - 1 - p for k, p in zip(weight.shape[2:], ctx.padding))
            grad_x = _CONV[weight.dim()](grad, wc.transpose(0, 1).flip(spatial), padding=pad).to(x.dtype)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            ones = [1] * len(spatial)
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad, xc, wc, [weight.shape[0]], ones, list(ctx.padding), ones, False, [0] * len(spatial), 1,
                [False, ctx.needs_input_grad[1], ctx.needs_input_grad[2]])
            grad_w = grad_w.to(weight.dtype) if grad_w is not None else None
            grad_b = grad_b.to(ctx.bias_dtype) if grad_b is not None else None
        return grad_x, grad_w, grad_b, None


_CONV = {3: F.conv1d, 4: F.conv2d}


class _InputConvMixin:
    """A critic's first layer (stride 1, zero 'same' padding); see _InputGradByForwardConv."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        if (set(self.stride) | set(self.dilation)) != {1} or self.groups != 1 or self.padding_mode != "zeros" \
                or isinstance(self.padding, str):
            raise ValueError("an input conv must be stride 1, undilated, ungrouped, with numeric zero padding")

    def _conv_forward(self, x, weight, bias):
        return _InputGradByForwardConv.apply(x, weight, bias, self.padding)


class _FastcodecConvMixin:
    """A 1-D critic conv that runs on ops.grouped_conv1d where the critics' backend is cpp."""

    backend = "auto"  # set by fastcodec.nn.set_backend

    def _conv_forward(self, x, weight, bias):
        if self.backend != "torch" and x.dtype == torch.float32 and autocast_dtype(x) is None \
                and ops.resolve_backend(self.backend, x) == "cpp":
            # The op's 'auto' picks between the C++ kernel and oneDNN per shape, measured.
            return ops.grouped_conv1d(x, weight, bias, stride=self.stride[0], padding=self.padding[0],
                                      groups=self.groups, backend=self.backend)
        return super()._conv_forward(x, weight, bias)


class _InputConv1d(_InputConvMixin, nn.Conv1d):
    pass


class CriticInputConv1d(_FastcodecConvMixin, _InputConv1d):
    """A critic's first 1-D layer (stride 1, zero 'same' padding): grouped_conv1d where the
    backend resolves to cpp, else nn.Conv1d with the input gradient as a forward conv."""


class CriticGroupedConv1d(_FastcodecConvMixin, nn.Conv1d):
    """nn.Conv1d (grouped, strided) that runs on grouped_conv1d where the backend resolves to cpp."""


class CriticInputConv2d(_InputConvMixin, nn.Conv2d):
    """A critic's first 2-D layer, its input gradient computed as a forward conv."""
