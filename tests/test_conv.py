"""causal_conv1d and causal_conv_transpose1d on every compiled backend vs the reference."""
import math

import pytest
import torch

from conftest import assert_close_to_reference, interpreted, needs_gpu, noncontiguous
from fastcodec import ops

# (B, Cin, Cout, T, K, stride, dilation): T=1, T below the receptive field, odd channel counts,
# lengths that are multiples of nothing, the codec's k=2*stride downsamplers.
CONV_SHAPES = [
    (1, 1, 1, 1, 1, 1, 1),
    (2, 3, 5, 1, 7, 1, 1),
    (2, 5, 7, 6, 7, 1, 9),
    (2, 4, 3, 31, 3, 3, 2),
    (1, 6, 10, 101, 10, 5, 1),
    (3, 17, 13, 129, 7, 1, 3),
    (1, 32, 33, 151, 4, 2, 1),
    (2, 9, 16, 1134, 16, 8, 1),
    # <= 8 outputs: the CPU's skinny-sgemm path (a stream's low-rate layers); 9 is the engine again.
    (3, 40, 24, 8, 7, 1, 3),
    (2, 16, 12, 20, 10, 5, 1),
    (1, 24, 8, 9, 3, 1, 1),
    # stride >= 4, Cin*K >= 1024, few outputs in all: the CPU's window rows and sgemm, dilated too.
    (2, 70, 9, 181, 16, 8, 1),
    (1, 130, 5, 133, 8, 4, 2),
]
# (B, Cin, Cout, T, K, stride): K < stride, K == stride, K = 2*stride, stride 1.
CONVT_SHAPES = [
    (1, 1, 1, 1, 1, 1),
    (2, 3, 5, 1, 4, 2),
    (2, 4, 3, 9, 3, 5),
    (1, 7, 9, 33, 4, 4),
    (1, 5, 6, 13, 10, 5),
    (2, 3, 3, 20, 5, 1),
    (2, 8, 4, 17, 16, 8),
    # <= 16 input frames: the CPU's sgemm + overlap-add path; 17 above is the phase engine.
    (2, 40, 24, 16, 10, 5),
    (3, 6, 7, 2, 16, 8),
    # Cin x taps per phase >= 256 over few frames: the CPU's one-GEMM-and-gather path, also with
    # K not a multiple of the stride and K < stride (phases that only get the bias).
    (2, 130, 24, 37, 16, 8),
    (3, 97, 11, 19, 5, 2),
    (1, 300, 5, 23, 3, 4),
]
SMALL = 200  # largest T the Triton interpreter gets


def _dtypes(backend, device):
    if device == "cuda":
        return [torch.float32, torch.float16, torch.bfloat16] + ([torch.float64] if backend == "cuda" else [])
    return [torch.float32, torch.float64] if backend == "cpp" else [torch.float32]


def _conv_inputs(B, Cin, Cout, T, K, stride, activation, residual, bias=True, transposed=False):
    """float64 inputs at a realistic scale (weights ~ 1/sqrt(fan_in)), never zeros."""
    x = torch.randn(B, Cin, T, dtype=torch.float64)
    wshape = (Cin, Cout, K) if transposed else (Cout, Cin, K)
    w = torch.randn(*wshape, dtype=torch.float64) / math.sqrt(Cin * K)
    b = torch.randn(Cout, dtype=torch.float64) * 0.1 if bias else None
    alpha = torch.rand(Cout, dtype=torch.float64) + 0.5 if activation == "snake" else None
    res = torch.randn(B, Cout, math.ceil(T / stride), dtype=torch.float64) if residual else None
    return x, w, b, alpha, res


def _cast(ts, dtype, device, contiguous=True):
    out = []
    for t in ts:
        if t is None:
            out.append(None)
            continue
        t = t.to(device=device, dtype=dtype)
        out.append(t if contiguous else noncontiguous(t))
    return out


def _check_conv1d(backend, device, dtype, shape, activation, residual, contiguous=True, bias=True):
    B, Cin, Cout, T, K, stride, dilation = shape
    x, w, b, alpha, res = _conv_inputs(B, Cin, Cout, T, K, stride, activation, residual, bias)
    kw = dict(stride=stride, dilation=dilation, activation=activation)
    ref64 = ops.causal_conv1d_ref(x, w, b, residual=res, alpha=alpha, **kw)
    xs, ws, bs, als, rs = _cast([x, w, b, alpha, res], dtype, device, contiguous)
    out = ops.causal_conv1d(xs, ws, bs, residual=rs, alpha=als, backend=backend, **kw)
    ref_same = ops.causal_conv1d_ref(xs, ws, bs, residual=rs, alpha=als, **kw)
    assert out.device.type == device
    assert_close_to_reference(out, ref_same, ref64)


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=str)
def test_conv1d_shapes(target, shape):
    backend, device = target
    if interpreted(backend, device) and shape[3] > SMALL:
        needs_gpu("too slow for the Triton interpreter")
    for dtype in _dtypes(backend, device):
        _check_conv1d(backend, device, dtype, shape, "elu", residual=True)


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
@pytest.mark.parametrize("residual", [False, True])
def test_conv1d_epilogue(target, activation, residual):
    backend, device = target
    for dtype in _dtypes(backend, device):
        _check_conv1d(backend, device, dtype, (2, 6, 5, 37, 7, 1, 3), activation, residual)
        _check_conv1d(backend, device, dtype, (1, 4, 7, 23, 4, 2, 1), activation, residual, bias=False)
        _check_conv1d(backend, device, dtype, (2, 66, 5, 50, 16, 4, 1), activation, residual)  # CPU: sgemm


# Output lengths that end the CPU engine's last 96-column tile at every micro-kernel width: 1-6
# AVX-512 vectors of 16 (12, 17, 40, 60, 75, 96, 151 = 96 + 55) and the AVX2 split into 24-wide
# and 8-wide tiles (12, 17, 40 = 24 + 16, 60 = 2 x 24 + 12, 75 = 3 x 24 + 3); 300 is four tiles,
# three read in place. The stride-1 convs see the same widths through the transposed conv's phases.
@pytest.mark.parametrize("T", [12, 17, 40, 60, 75, 96, 151, 300])
def test_conv_tile_widths_cpp(T):
    from conftest import require_backend

    require_backend("cpp", "cpu")
    _check_conv1d("cpp", "cpu", torch.float32, (2, 6, 9, T, 3, 1, 2), "elu", residual=True)
    _check_conv_transpose1d("cpp", "cpu", torch.float32, (1, 5, 7, T, 6, 3), "silu")


# Inputs wide enough that the CPU engine sums over several channel blocks (256 taps, and with
# AVX-512 a 32 KB window, per block): a 1x1 conv, a k3 conv, a strided one below the deep-strided
# sgemm path, and a transposed conv's phases. A block that overwrote instead of accumulating fails.
@pytest.mark.parametrize("shape", [(1, 200, 6, 100, 1, 1, 1), (2, 140, 9, 60, 3, 1, 2), (2, 96, 8, 300, 8, 4, 1)],
                         ids=str)
def test_conv_channel_blocks_cpp(shape):
    from conftest import require_backend

    require_backend("cpp", "cpu")
    _check_conv1d("cpp", "cpu", torch.float32, shape, "snake", residual=True)
    B, Cin, Cout, T, K, stride, _ = shape
    _check_conv_transpose1d("cpp", "cpu", torch.float32, (B, Cin, Cout, T, max(K, stride), stride), "elu")


def test_conv1d_noncontiguous(target):
    backend, device = target
    _check_conv1d(backend, device, torch.float32, (2, 5, 6, 41, 5, 1, 2), "snake", True, contiguous=False)
    _check_conv1d(backend, device, torch.float32, (2, 5, 6, 41, 6, 3, 1), None, True, contiguous=False)


def _check_conv_transpose1d(backend, device, dtype, shape, activation, contiguous=True, bias=True):
    B, Cin, Cout, T, K, stride = shape
    x, w, b, alpha, _ = _conv_inputs(B, Cin, Cout, T, K, 1, activation, False, bias, transposed=True)
    kw = dict(stride=stride, activation=activation)
    ref64 = ops.causal_conv_transpose1d_ref(x, w, b, alpha=alpha, **kw)
    xs, ws, bs, als = _cast([x, w, b, alpha], dtype, device, contiguous)
    out = ops.causal_conv_transpose1d(xs, ws, bs, alpha=als, backend=backend, **kw)
    ref_same = ops.causal_conv_transpose1d_ref(xs, ws, bs, alpha=als, **kw)
    assert_close_to_reference(out, ref_same, ref64)


@pytest.mark.parametrize("shape", CONVT_SHAPES, ids=str)
def test_conv_transpose1d_shapes(target, shape):
    backend, device = target
    for dtype in _dtypes(backend, device):
        _check_conv_transpose1d(backend, device, dtype, shape, "leaky_relu")


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
def test_conv_transpose1d_epilogue(target, activation):
    backend, device = target
    for dtype in _dtypes(backend, device):
        _check_conv_transpose1d(backend, device, dtype, (2, 6, 5, 11, 8, 4), activation)
        _check_conv_transpose1d(backend, device, dtype, (1, 3, 4, 7, 3, 2), activation, bias=False)
        _check_conv_transpose1d(backend, device, dtype, (2, 130, 6, 21, 8, 4), activation)  # CPU: one GEMM


def test_conv_transpose1d_noncontiguous(target):
    backend, device = target
    _check_conv_transpose1d(backend, device, torch.float32, (2, 5, 6, 13, 10, 5), "snake", contiguous=False)


def test_empty_time_axis(target):
    backend, device = target
    x = torch.randn(2, 3, 0, device=device)
    assert ops.causal_conv1d(x, torch.randn(4, 3, 5, device=device), backend=backend).shape == (2, 4, 0)
    assert ops.causal_conv_transpose1d(x, torch.randn(3, 4, 5, device=device), stride=2,
                                       backend=backend).shape == (2, 4, 0)


# --- gradients -------------------------------------------------------------------------------

def _leaves(*ts):
    return [None if t is None else t.detach().clone().requires_grad_(True) for t in ts]


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
def test_conv1d_gradcheck_float64_cpp(activation):
    """The registered backward (epilogue derivative + conv backward) is exact in float64."""
    from conftest import require_backend

    require_backend("cpp", "cpu")
    x, w, b, alpha, res = _leaves(*_conv_inputs(2, 3, 4, 9, 3, 2, activation, True))
    # gradcheck perturbs inputs by 1e-6; keep snake's alpha well away from 0.
    f = lambda x, w, b, res, *a: ops.causal_conv1d(  # noqa: E731
        x, w, b, stride=2, dilation=2, activation=activation, residual=res, alpha=a[0] if a else None, backend="cpp")
    args = (x, w, b, res) + ((alpha,) if alpha is not None else ())
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("activation", ops.ACTIVATIONS)
def test_conv_transpose1d_gradcheck_float64_cpp(activation):
    from conftest import require_backend

    require_backend("cpp", "cpu")
    x, w, b, alpha, _ = _leaves(*_conv_inputs(2, 3, 4, 6, 5, 1, activation, False, transposed=True))
    f = lambda x, w, b, *a: ops.causal_conv_transpose1d(  # noqa: E731
        x, w, b, stride=3, activation=activation, alpha=a[0] if a else None, backend="cpp")
    assert torch.autograd.gradcheck(f, (x, w, b) + ((alpha,) if alpha is not None else ()), eps=1e-6, atol=1e-7)


def _grads(fn, inputs, gy):
    leaves = _leaves(*inputs)
    out = fn(*leaves)
    out.backward(gy)
    return out, [None if t is None else t.grad for t in leaves]


@pytest.mark.parametrize("activation", ["snake", "silu"])
def test_conv_grads_match_reference(target, activation):
    """Every backend's gradients (x, weight, bias, residual, alpha) equal the reference's."""
    backend, device = target
    dtype = torch.float32
    x, w, b, alpha, res = _conv_inputs(2, 5, 6, 29, 5, 2, activation, True)
    inputs = [None if t is None else t.to(device, dtype) for t in (x, w, b, res, alpha)]
    gy = torch.randn(2, 6, 15, device=device, dtype=dtype)

    def run(be):
        return lambda x, w, b, r, a: ops.causal_conv1d(x, w, b, stride=2, dilation=1, activation=activation,
                                                       residual=r, alpha=a, backend=be)

    _, g_kernel = _grads(run(backend), inputs, gy)
    _, g_ref = _grads(run("torch"), inputs, gy)
    for name, gk, gr in zip(["x", "weight", "bias", "residual", "alpha"], g_kernel, g_ref):
        if name == "alpha" and activation != "snake":
            continue
        assert gk is not None, f"no gradient for {name}"
        torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-4, msg=f"grad {name}")

    xt, wt, bt, at, _ = _conv_inputs(2, 5, 6, 12, 8, 1, activation, False, transposed=True)
    inputs_t = [None if t is None else t.to(device, dtype) for t in (xt, wt, bt, at)]
    gyt = torch.randn(2, 6, 48, device=device, dtype=dtype)

    def run_t(be):
        return lambda x, w, b, a: ops.causal_conv_transpose1d(x, w, b, stride=4, activation=activation, alpha=a,
                                                              backend=be)

    _, gk_t = _grads(run_t(backend), inputs_t, gyt)
    _, gr_t = _grads(run_t("torch"), inputs_t, gyt)
    for name, gk, gr in zip(["x", "weight", "bias", "alpha"], gk_t, gr_t):
        if name == "alpha" and activation != "snake":
            continue
        torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-4, msg=f"transposed grad {name}")


# (K, stride, T): the codec's down/up-sampling shapes (K = 2 * stride), K < stride, K = 1, K not a
# multiple of the stride, T not a multiple of the stride.
STRIDED_GRAD_SHAPES = [(4, 2, 9), (10, 5, 23), (16, 8, 37), (3, 5, 12), (1, 2, 7), (7, 3, 20)]


@pytest.mark.parametrize("K,stride,T", STRIDED_GRAD_SHAPES, ids=str)
def test_strided_and_transposed_input_grads(target, K, stride, T):
    """Gradients of strided and transposed convs over the shapes that stress the trimmed tail and
    the stride grid: against the reference's on every backend, and by gradcheck in float64 on the
    C++ backend."""
    backend, device = target
    x, w = torch.randn(2, 3, T, device=device), torch.randn(5, 3, K, device=device) / math.sqrt(3 * K)
    xt, wt = torch.randn(2, 5, T, device=device), torch.randn(5, 3, K, device=device) / math.sqrt(5 * K / stride)
    conv = lambda be: lambda x, w: ops.causal_conv1d(x, w, stride=stride, activation="elu", backend=be)  # noqa: E731
    convt = lambda be: lambda x, w: ops.causal_conv_transpose1d(x, w, stride=stride, backend=be)  # noqa: E731
    for f, inputs, gy in ((conv, (x, w), torch.randn(2, 5, -(-T // stride), device=device)),
                          (convt, (xt, wt), torch.randn(2, 3, T * stride, device=device))):
        _, g_kernel = _grads(f(backend), inputs, gy)
        _, g_ref = _grads(f("torch"), inputs, gy)
        for name, gk, gr in zip(("x", "weight"), g_kernel, g_ref):
            torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-5, msg=f"grad {name}")
        if backend == "cpp":
            leaves = _leaves(*(t.double() for t in inputs))
            assert torch.autograd.gradcheck(f("cpp"), leaves, eps=1e-6, atol=1e-7)


# (Cin, Cout, K, stride, dilation, T): few output samples against many input channels x taps, so
# the weight gradient takes one GEMM over im2col'd windows instead of ATen's backward-weights.
# The transposed conv takes T // stride input frames (what the same layer gets in a decoder).
GEMM_WGRAD_CASES = [(16, 8, 8, 4, 1, 19), (12, 6, 5, 1, 3, 4), (9, 5, 16, 8, 1, 13), (16, 6, 3, 5, 1, 11)]


@pytest.mark.parametrize("case", GEMM_WGRAD_CASES, ids=str)
def test_weight_grads_by_gemm(target, case):
    """The GEMM path of conv and transposed-conv weight gradients (taken on the CPU) against the
    reference's, and by gradcheck in float64 on the C++ backend."""
    from fastcodec.ops._autograd import _weight_grad_by_gemm

    backend, device = target
    Cin, Cout, K, stride, dilation, T = case
    x, w, b = torch.randn(2, Cin, T, device=device), torch.randn(Cout, Cin, K, device=device) / 4, torch.randn(Cout)
    Tt = max(1, T // stride)
    xt, wt = torch.randn(2, Cin, Tt, device=device), torch.randn(Cin, Cout, K, device=device) / 4
    Tout = -(-T // stride)
    if device == "cpu":  # the cases are chosen to take the GEMM path there
        assert _weight_grad_by_gemm(x, 2 * Tout, Cin * K) and _weight_grad_by_gemm(xt, 2 * Tt, Cout * K)
    conv = lambda be: lambda x, w, b: ops.causal_conv1d(  # noqa: E731
        x, w, b, stride=stride, dilation=dilation, activation="elu", backend=be)
    convt = lambda be: lambda x, w, b: ops.causal_conv_transpose1d(x, w, b, stride=stride, backend=be)  # noqa: E731
    bt = torch.randn(Cout)
    for f, inputs, gy in ((conv, (x, w, b.to(device)), torch.randn(2, Cout, Tout, device=device)),
                          (convt, (xt, wt, bt.to(device)), torch.randn(2, Cout, Tt * stride, device=device))):
        _, g_kernel = _grads(f(backend), inputs, gy)
        _, g_ref = _grads(f("torch"), inputs, gy)
        for name, gk, gr in zip(("x", "weight", "bias"), g_kernel, g_ref):
            torch.testing.assert_close(gk, gr, rtol=1e-4, atol=1e-5, msg=f"grad {name}")
        if backend == "cpp":
            leaves = _leaves(*(t.double() for t in inputs))
            assert torch.autograd.gradcheck(f("cpp"), leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("negative_slope", [-0.2, 0.0, 0.3])
def test_leaky_relu_gradcheck_any_slope_cpp(negative_slope):
    """A non-negative slope takes the derivative from the output; a negative one must recompute."""
    from conftest import require_backend

    require_backend("cpp", "cpu")
    x, w, b, _, res = _leaves(*_conv_inputs(1, 3, 4, 11, 3, 1, None, True))
    f = lambda x, w, b, r: ops.causal_conv1d(x, w, b, activation="leaky_relu", negative_slope=negative_slope,  # noqa
                                             residual=r, backend="cpp")
    assert torch.autograd.gradcheck(f, (x, w, b, res), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("transposed", [False, True])
def test_fp32_convs_on_tf32_stay_within_tf32_rounding(backend, transposed, monkeypatch):
    """Under torch.backends.cudnn.allow_tf32 (PyTorch's default) the Triton and C++ CUDA fp32 convs
    run TF32 products on tensor cores, as cuDNN does. Each operand keeps 10 mantissa bits (relative
    error <= 2^-10 each, truncation included), so an output is within ~2^-9 of sum |x||w| of the
    exact one, plus fp32 accumulation: the test allows 2^-8. Without the flag they are exact."""
    from conftest import require_backend

    require_backend(backend, "cuda")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = torch.randn(3, 96, 1000, device="cuda")
    if transposed:
        w = torch.randn(96, 48, 8, device="cuda") / 20
        out = ops.causal_conv_transpose1d(x, w, stride=4, backend=backend)
        f = lambda a, b: ops.causal_conv_transpose1d_ref(a, b, stride=4)  # noqa: E731
    else:
        w = torch.randn(48, 96, 7, device="cuda") / 20
        out = ops.causal_conv1d(x, w, dilation=3, backend=backend)
        f = lambda a, b: ops.causal_conv1d_ref(a, b, dilation=3)  # noqa: E731
    exact = f(x.double().cpu(), w.double().cpu())
    scale = f(x.double().abs().cpu(), w.double().abs().cpu())
    err = (out.double().cpu() - exact).abs()
    assert (err <= 2.0 ** -8 * scale + 1e-6).all(), (err / scale.clamp(min=1e-9)).max().item()
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # and exact again without the flag
    again = ops.causal_conv_transpose1d(x, w, stride=4, backend=backend) if transposed else \
        ops.causal_conv1d(x, w, dilation=3, backend=backend)
    assert_close_to_reference(again, f(x, w), exact)
