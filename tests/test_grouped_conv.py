"""grouped_conv1d (the training critics' plain grouped conv) on the cpp backend against the
float64 reference: forward and the gradients of x, weight and bias, over odd sizes, every row and
tap remainder of the weight-gradient kernel, phases no tap reaches, and non-contiguous inputs;
argument errors; the critics giving the same outputs and gradients on either backend."""
import pytest
import torch

from conftest import assert_close_to_reference, noncontiguous, require_backend
from fastcodec import ops

# (B, groups, Cin/groups, Cout/groups, K, stride, padding, T)
SHAPES = [
    (2, 8, 4, 16, 41, 4, 20, 403),  # the waveform critic's layer, shortened
    (1, 3, 3, 5, 7, 3, 2, 50),      # 5 rows per group: a 4-row and a 1-row weight-gradient block
    (3, 1, 5, 6, 1, 1, 0, 9),       # ungrouped 1x1
    (1, 4, 1, 1, 4, 5, 0, 23),      # K < stride: one input phase gets no tap; the last 3 samples are read by none
    (2, 2, 2, 3, 3, 2, 5, 2),       # T shorter than the kernel, padding wider than T
    (2, 5, 2, 7, 16, 8, 3, 77),     # 16 taps: two whole vectors
    (1, 2, 4, 13, 25, 1, 12, 31),   # 'same' padding, 4 tap vectors (3 + 1)
    (2, 1, 3, 2, 9, 2, 0, 9),       # a single output column
    (1, 1, 1, 16, 15, 1, 7, 300),   # the critic's input conv
]


def _run(x, w, b, gy, conf, backend):
    """(y, dx, dw, db) of grouped_conv1d on backend, for the output gradient gy."""
    x, w = x.detach().requires_grad_(True), w.detach().requires_grad_(True)
    b = None if b is None else b.detach().requires_grad_(True)
    y = ops.grouped_conv1d(x, w, b, backend=backend, **conf)
    y.backward(gy.to(y.dtype))
    return y.detach(), x.grad, w.grad, None if b is None else b.grad


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(shape, bias):
    require_backend("cpp", "cpu")
    B, G, cin, cout, K, stride, padding, T = shape
    conf = dict(stride=stride, padding=padding, groups=G)
    x = torch.randn(B, G * cin, T)
    w = torch.randn(G * cout, cin, K) / (cin * K) ** 0.5
    b = torch.randn(G * cout) if bias else None
    gy = torch.randn(B, G * cout, (T + 2 * padding - K) // stride + 1)
    out = _run(x, w, b, gy, conf, "cpp")
    same = _run(x, w, b, gy, conf, "torch")
    ref64 = _run(x.double(), w.double(), None if b is None else b.double(), gy.double(), conf, "torch")
    for name, o, s, r in zip(("y", "dx", "dw", "db"), out, same, ref64):
        if r is None:
            assert o is None
            continue
        assert_close_to_reference(o, s, r, name=name)


def test_noncontiguous_inputs():
    require_backend("cpp", "cpu")
    conf = dict(stride=4, padding=20, groups=4)
    x, w, b = torch.randn(2, 16, 97), torch.randn(32, 4, 41) / 12.8, torch.randn(32)
    gy = torch.randn(2, 32, 25)
    xs, ws, gys = noncontiguous(x), noncontiguous(w), noncontiguous(gy)
    out = _run(xs, ws, b, gys, conf, "cpp")
    ref = _run(x.double(), w.double(), b.double(), gy.double(), conf, "torch")
    same = _run(x, w, b, gy, conf, "torch")
    for name, o, s, r in zip(("y", "dx", "dw", "db"), out, same, ref):
        assert_close_to_reference(o, s, r, name=name)


def test_auto_picks_cpp_for_fp32_and_torch_otherwise():
    require_backend("cpp", "cpu")
    x, w = torch.randn(1, 4, 20), torch.randn(8, 2, 3)
    y = ops.grouped_conv1d(x, w, groups=2)
    assert "fastcodec_grouped_conv1d" in type(ops.grouped_conv1d(x.requires_grad_(), w, groups=2).grad_fn).__name__
    torch.testing.assert_close(y, ops.grouped_conv1d_ref(x, w, groups=2), rtol=1e-5, atol=1e-5)
    y64 = ops.grouped_conv1d(x.double(), w.double(), groups=2)  # no fp64 kernel: the reference runs
    assert y64.dtype == torch.float64
    with pytest.raises(ops.BackendUnavailable, match="supports float32; got float64"):
        ops.grouped_conv1d(x.double(), w.double(), groups=2, backend="cpp")
    with pytest.raises(ops.BackendUnavailable):
        ops.grouped_conv1d(x, w, groups=2, backend="triton")


@pytest.mark.parametrize("args, match", [
    (dict(x=(1, 5, 20), w=(8, 2, 3), groups=2), "needs 4 input channels"),
    (dict(x=(1, 4, 20), w=(7, 2, 3), groups=2), "divisible by 2"),
    (dict(x=(1, 4, 2), w=(8, 2, 7), groups=2, padding=2), "shorter than the kernel"),
    (dict(x=(1, 4, 20), w=(8, 2, 3), groups=0), "groups must be a positive int"),
    (dict(x=(1, 4, 20), w=(8, 2, 3), groups=2, padding=-1), "padding must be a non-negative int"),
    (dict(x=(1, 4, 20), w=(8, 2, 3), groups=2, stride=0), "stride must be a positive int"),
])
def test_bad_arguments_are_clear_errors(args, match):
    args = dict(args)
    x, w = torch.randn(args.pop("x")), torch.randn(args.pop("w"))
    with pytest.raises(ValueError, match=match):
        ops.grouped_conv1d(x, w, **args)


def test_kernel_checks_guard_direct_calls():
    """The C++ entry points check what the Python API checks, for callers of torch.ops directly."""
    require_backend("cpp", "cpu")
    lib = torch.ops.fastcodec
    x, w = torch.randn(1, 4, 20), torch.randn(8, 2, 3)
    with pytest.raises(RuntimeError, match="fp32 only"):
        lib.grouped_conv1d(x.double(), w.double(), None, 1, 0, 2)
    with pytest.raises(RuntimeError, match="do not split into 3 groups"):
        lib.grouped_conv1d(x, w, None, 1, 0, 3)
    with pytest.raises(RuntimeError, match="is not the output"):
        lib.grouped_conv1d_input_grad(torch.randn(1, 8, 17), w, 20, 1, 0, 2)
    with pytest.raises(RuntimeError, match="is not the output"):
        lib.grouped_conv1d_weight_grad(torch.randn(1, 8, 17), x, 3, 1, 0, 2)


def test_critics_same_on_both_backends():
    """The critics' outputs, their weight gradients and the input gradient (the generator's) match
    between backend 'torch' (nn.Conv1d everywhere) and cpp (grouped_conv1d in the waveform critic)."""
    require_backend("cpp", "cpu")
    from fastcodec.nn import CriticGroupedConv1d, CriticInputConv1d
    from fastcodec.train.discriminators import Critics

    torch.manual_seed(0)
    ref = Critics(8, 8).set_backend("torch")
    ours = Critics(8, 8)
    ours.load_state_dict(ref.state_dict())
    fast = (CriticGroupedConv1d, CriticInputConv1d)
    assert sum(isinstance(m, fast) for m in ours.modules()) == 3 * 5  # input + 4 grouped, 3 scales
    audio = 0.1 * torch.randn(2, 1, 4000)
    results = []
    for critics, backend in ((ref, "torch"), (ours.set_backend("cpp"), "cpp")):
        x = audio.clone().requires_grad_(True)
        outs = critics(x)
        loss = sum(f.square().mean() for sub in outs for f in sub)
        loss.backward()
        results.append(([f.detach() for sub in outs for f in sub], x.grad,
                        [p.grad for p in critics.parameters()]))
    (fa, xa, pa), (fb, xb, pb) = results
    for a, b in zip(fa, fb):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(xb, xa, rtol=1e-4, atol=1e-6)
    for a, b in zip(pa, pb):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)


def test_critics_reject_unknown_backend():
    from fastcodec.train.discriminators import Critics

    with pytest.raises(ValueError, match="unknown backend"):
        Critics(8, 8).set_backend("mkl")
