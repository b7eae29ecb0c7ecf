"""Argument checks for the public ops: done once, before any backend runs, with messages that name
the argument, what was expected and what was given."""
from __future__ import annotations

import torch

from ..integers import is_int
from .reference import ACTIVATIONS


def _shape(t):
    return list(t.shape)


def tensor(name, t, dims=None, floating=True):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if dims is not None and t.dim() != len(dims):
        raise ValueError(f"{name} must be [{', '.join(dims)}], got shape {_shape(t)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")


def positive_int(name, v):
    if not is_int(v) or v < 1:
        raise ValueError(f"{name} must be a positive int, got {v!r}")


def like(name, t, ref_name, ref):
    """t must share ref's dtype and device."""
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def optional_channels(name, t, x, channels):
    if t is None:
        return
    tensor(name, t, dims=("C",))
    like(name, t, "x", x)
    if t.shape[0] != channels:
        raise ValueError(f"{name} must have shape [{channels}] (one per output channel), got {_shape(t)}")


def activation(act, alpha, x, channels, negative_slope):
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {act!r}")
    if act == "snake" and alpha is None:
        raise ValueError("activation='snake' needs alpha (a tensor of one value per output channel)")
    if act != "snake" and alpha is not None:
        raise ValueError(f"alpha is the snake activation's parameter; activation is {act!r}")
    optional_channels("alpha", alpha, x, channels)
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float)):
        raise TypeError(f"negative_slope must be a number, got {type(negative_slope).__name__}")


def conv1d(x, weight, bias, stride, dilation, act, residual, negative_slope, alpha):
    tensor("x", x, dims=("B", "Cin", "T"))
    tensor("weight", weight, dims=("Cout", "Cin", "K"))
    like("weight", weight, "x", x)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight {_shape(weight)} expects {weight.shape[1]} input channels, "
                         f"x {_shape(x)} has {x.shape[1]}")
    if weight.shape[2] < 1:
        raise ValueError(f"weight {_shape(weight)} has kernel size 0")
    positive_int("stride", stride)
    positive_int("dilation", dilation)
    cout = weight.shape[0]
    optional_channels("bias", bias, x, cout)
    activation(act, alpha, x, cout, negative_slope)
    if residual is not None:
        tensor("residual", residual)
        like("residual", residual, "x", x)
        want = [x.shape[0], cout, (x.shape[2] + stride - 1) // stride]
        if _shape(residual) != want:
            raise ValueError(f"residual must have the output's shape {want}, got {_shape(residual)}")


def grouped_conv1d(x, weight, bias, stride, padding, groups):
    tensor("x", x, dims=("B", "Cin", "T"))
    tensor("weight", weight, dims=("Cout", "Cin/groups", "K"))
    like("weight", weight, "x", x)
    positive_int("stride", stride)
    positive_int("groups", groups)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    cout, cin_g, k = weight.shape
    if cout % groups or x.shape[1] != cin_g * groups:
        raise ValueError(f"weight {_shape(weight)} with groups={groups} needs {cin_g * groups} input channels and "
                         f"an output channel count divisible by {groups}; x {_shape(x)} has {x.shape[1]}")
    if k < 1 or x.shape[2] + 2 * padding < k:
        raise ValueError(f"x {_shape(x)} padded by {padding} on each side is shorter than the kernel ({k})")
    optional_channels("bias", bias, x, cout)


def conv_transpose1d(x, weight, bias, stride, act, negative_slope, alpha):
    tensor("x", x, dims=("B", "Cin", "T"))
    tensor("weight", weight, dims=("Cin", "Cout", "K"))
    like("weight", weight, "x", x)
    if weight.shape[0] != x.shape[1]:
        raise ValueError(f"weight {_shape(weight)} (PyTorch's [Cin, Cout, K] layout) expects {weight.shape[0]} "
                         f"input channels, x {_shape(x)} has {x.shape[1]}")
    if weight.shape[2] < 1:
        raise ValueError(f"weight {_shape(weight)} has kernel size 0")
    positive_int("stride", stride)
    cout = weight.shape[1]
    optional_channels("bias", bias, x, cout)
    activation(act, alpha, x, cout, negative_slope)


def vq(x, codebook):
    tensor("x", x, dims=("N", "D"))
    tensor("codebook", codebook, dims=("K", "D"))
    like("codebook", codebook, "x", x)
    if codebook.shape[1] != x.shape[1]:
        raise ValueError(f"codebook {_shape(codebook)} has dim {codebook.shape[1]}, x {_shape(x)} has {x.shape[1]}")
    if codebook.shape[0] == 0:
        raise ValueError("codebook has no codes (K = 0)")


SEARCH_MODES = ("exact", "fast")


def search_mode(mode):
    if not isinstance(mode, str) or mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")


def rvq(x, codebooks, n_q):
    tensor("x", x, dims=("N", "D"))
    tensor("codebooks", codebooks, dims=("Q", "K", "D"))
    like("codebooks", codebooks, "x", x)
    Q, K, D = codebooks.shape
    if D != x.shape[1]:
        raise ValueError(f"codebooks {_shape(codebooks)} have dim {D}, x {_shape(x)} has {x.shape[1]}")
    if K == 0 or Q == 0:
        raise ValueError(f"codebooks {_shape(codebooks)} hold no codes")
    n_q = Q if n_q is None else n_q
    if not is_int(n_q) or not 1 <= n_q <= Q:
        raise ValueError(f"n_q must be an int in [1, {Q}] (the number of codebooks), got {n_q!r}")
    return int(n_q)  # a numpy integer would otherwise travel on into the kernels' launch arguments


def rvq_decode(codes, codebooks, check_range=True):
    tensor("codebooks", codebooks, dims=("Q", "K", "D"))
    tensor("codes", codes, dims=("N", "n_q"), floating=False)
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
    if codes.device != codebooks.device:
        raise ValueError(f"codes are on {codes.device} but codebooks are on {codebooks.device}")
    Q, K, _ = codebooks.shape
    if codes.shape[1] > Q:
        raise ValueError(f"codes have {codes.shape[1]} stages but there are only {Q} codebooks")
    # Data-dependent, so skipped while torch.compile traces; the kernels guard memory themselves.
    if check_range and codes.numel() and not torch.compiler.is_compiling():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= K:
            raise ValueError(f"codes must lie in [0, {K}) for codebooks of {K} codes; found values in [{lo}, {hi}]")
