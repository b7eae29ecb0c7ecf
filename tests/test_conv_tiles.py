"""The tensor-core convs' tiling (csrc/cuda/conv_tiles.h: the blocks of the grid, each reduction
step's weight and input tiles with their causal-padding and edge masks, the output offsets and the
fused epilogue), run on the CPU by the tile emulator against the reference. What a GPU alone runs
is the fragments' loads, the MMAs and the shared-memory staging (tests/test_conv.py on a GPU)."""
import pytest
import torch

from conftest import assert_close_to_reference, require_backend
from fastcodec import ops

# (B, Cin, Cout, T, K, stride, dilation, activation, residual): one sample; T below the receptive
# field; Cout past one 64-channel block; Cin past one 16-channel step; T past one 64-column block;
# strided downsamplers; dilation; the snake epilogue with a residual.
CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 1, None, False),
    (2, 3, 5, 1, 7, 1, 1, "elu", False),
    (2, 5, 70, 6, 7, 1, 9, "elu", True),
    (3, 17, 13, 129, 7, 1, 3, "leaky_relu", False),
    (2, 33, 64, 151, 4, 2, 1, "silu", True),
    (1, 16, 130, 300, 16, 8, 1, "elu", False),
    (2, 40, 24, 65, 7, 1, 3, "snake", True),
]
# (B, Cin, Cout, T, K, stride): K = 2*stride, K < stride, K = 1, K not a multiple of the stride,
# channels past one block.
CONVT_CASES = [
    (2, 5, 3, 1, 4, 2),
    (1, 17, 70, 33, 16, 8),
    (2, 64, 32, 100, 10, 5),
    (3, 6, 5, 7, 3, 5),
    (2, 4, 6, 9, 1, 2),
    (1, 9, 9, 130, 7, 3),
]


def _emulate(*args):
    require_backend("cpp", "cpu")
    return torch.ops.fastcodec_dev.conv_tiles_emulate(*args)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_the_conv_tiles_compute_the_causal_conv(case):
    B, Cin, Cout, T, K, stride, dilation, act, res = case
    x, w, b = torch.randn(B, Cin, T), torch.randn(Cout, Cin, K) / (Cin * K) ** 0.5, torch.randn(Cout)
    alpha = torch.rand(Cout) + 0.5 if act == "snake" else None
    Tout = -(-T // stride)
    r = torch.randn(B, Cout, Tout) if res else None
    out = _emulate(x, w, b, alpha, r, stride, dilation, act or "none", 0.1, False)
    kw = dict(stride=stride, dilation=dilation, activation=act, negative_slope=0.1)
    ref = ops.causal_conv1d_ref(x, w, b, alpha=alpha, residual=r, **kw)
    ref64 = ops.causal_conv1d_ref(x.double(), w.double(), b.double(), alpha=None if alpha is None else alpha.double(),
                                  residual=None if r is None else r.double(), **kw)
    assert_close_to_reference(out, ref, ref64)


@pytest.mark.parametrize("case", CONVT_CASES, ids=str)
def test_the_transposed_conv_tiles_compute_the_causal_transposed_conv(case):
    B, Cin, Cout, T, K, stride = case
    x, w, b = torch.randn(B, Cin, T), torch.randn(Cin, Cout, K) / Cin ** 0.5, torch.randn(Cout)
    out = _emulate(x, w, b, None, None, stride, 1, "elu", 0.01, True)
    ref = ops.causal_conv_transpose1d_ref(x, w, b, stride=stride, activation="elu")
    ref64 = ops.causal_conv_transpose1d_ref(x.double(), w.double(), b.double(), stride=stride, activation="elu")
    assert_close_to_reference(out, ref, ref64)


def test_the_emulator_checks_its_arguments():
    with pytest.raises(RuntimeError, match="fp32"):
        _emulate(torch.randn(1, 2, 5).double(), torch.randn(3, 2, 3).double(), None, None, None, 1, 1, "none", 0.0,
                 False)
    with pytest.raises(RuntimeError, match="unknown activation"):
        _emulate(torch.randn(1, 2, 5), torch.randn(3, 2, 3), None, None, None, 1, 1, "relu", 0.0, False)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
def test_the_cuda_tensor_core_convs_take_the_tile_cases(dtype, monkeypatch):
    """The same cases through the C++ CUDA convs on a GPU, which run them on tensor cores (fp32 as
    TF32, under the flag): the fragment loads, MMAs, shared-memory staging and epilogue that the
    emulator cannot run. 16-bit: the tolerance rule against cuDNN at the same dtype; TF32: within
    2^-8 of sum |x||w| (tests/test_conv.py says why), 4x that through the activations (Lipschitz
    up to 2; silu of the positive scale is at least half of it)."""
    require_backend("cuda", "cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)

    def check(out, f, args64, args_abs):
        ref64 = f(*args64)
        if dtype == torch.float32:
            scale = f(*args_abs)
            err = (out.double().cpu() - ref64).abs()
            assert (err <= 4 * 2.0 ** -8 * scale + 1e-5).all(), (err / scale.clamp(min=1e-9)).max().item()
        else:
            assert_close_to_reference(out, f(*(None if a is None else a.cuda().to(dtype) for a in args64)), ref64)

    for B, Cin, Cout, T, K, stride, dilation, act, res in CONV_CASES:
        x, w, b = torch.randn(B, Cin, T), torch.randn(Cout, Cin, K) / (Cin * K) ** 0.5, torch.randn(Cout)
        alpha = torch.rand(Cout) + 0.5 if act == "snake" else None
        r = torch.randn(B, Cout, -(-T // stride)) if res else None
        kw = dict(stride=stride, dilation=dilation, activation=act, negative_slope=0.1)

        def f(x, w, b, alpha, r, kw=kw):
            return ops.causal_conv1d_ref(x, w, b, alpha=alpha, residual=r, **kw)
        dev = [None if t is None else t.cuda().to(dtype) for t in (x, w, b, alpha, r)]
        out = ops.causal_conv1d(dev[0], dev[1], dev[2], alpha=dev[3], residual=dev[4], backend="cuda", **kw)
        args64 = [None if t is None else t.to(dtype).double() for t in (x, w, b, alpha, r)]
        args_abs = [None if t is None else t.abs() for t in args64[:3]] + [args64[3], None]
        check(out, f, args64, args_abs)
    for B, Cin, Cout, T, K, stride in CONVT_CASES:
        x, w, b = torch.randn(B, Cin, T), torch.randn(Cin, Cout, K) / Cin ** 0.5, torch.randn(Cout)

        def ft(x, w, b, stride=stride):
            return ops.causal_conv_transpose1d_ref(x, w, b, stride=stride, activation="elu")
        dev = [t.cuda().to(dtype) for t in (x, w, b)]
        out = ops.causal_conv_transpose1d(*dev, stride=stride, activation="elu", backend="cuda")
        args64 = [t.to(dtype).double() for t in (x, w, b)]
        check(out, ft, args64, [t.abs() for t in args64])
