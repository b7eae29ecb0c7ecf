"""torch.library.opcheck on every registered op (schema, fake kernel, autograd registration,
AOT dispatch), and torch.compile tracing the public ops without graph breaks."""
import pytest
import torch

from conftest import require_backend
from fastcodec import ops


def _samples(device, requires_grad):
    g = dict(requires_grad=requires_grad)
    x = torch.randn(2, 3, 11, device=device, **g)
    w = torch.randn(4, 3, 5, device=device, **g)
    wt = torch.randn(3, 4, 6, device=device, **g)
    b = torch.randn(4, device=device, **g)
    a = (torch.rand(4, device=device) + 0.5).requires_grad_(requires_grad)
    r = torch.randn(2, 4, 6, device=device, **g)
    xv = torch.randn(13, 6, device=device)
    cbs = torch.randn(3, 7, 6, device=device, **g)
    return {
        "causal_conv1d": [(x, w, b, 2, 2, "snake", 0.3, a, r), (x, w, None, 1, 3, "none", 0.3, None, None),
                          (x, w, b, 3, 1, "leaky_relu", 0.1, None, None)],
        "causal_conv_transpose1d": [(x, wt, b, 4, "elu", 0.3, None), (x, wt, None, 2, "snake", 0.3, a)],
        "vq_nearest": [(xv, cbs[0].detach())],
        "rvq_encode": [(xv, cbs.detach(), 2), (xv, cbs.detach(), 3)],
        "rvq_residuals": [(xv, cbs.detach(), 2), (xv, cbs.detach(), 3)],
        "rvq_decode": [(torch.randint(0, 7, (13, 2), device=device), cbs)],
    }


def _namespace(backend):
    if backend == "triton":
        from fastcodec.ops.triton import OPS

        return lambda name: OPS[name]
    return lambda name: getattr(torch.ops.fastcodec, name)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("name", ["causal_conv1d", "causal_conv_transpose1d", "vq_nearest", "rvq_encode",
                                  "rvq_residuals", "rvq_decode"])
def test_opcheck(target, name, requires_grad):
    backend, device = target
    op = _namespace(backend)(name)
    for args in _samples(device, requires_grad)[name]:
        torch.library.opcheck(op, args)


def test_compile_traces_without_graph_breaks(target):
    backend, device = target
    torch._dynamo.reset()

    def f(x, w, wt, b, xv, cbs):
        y = ops.causal_conv1d(x, w, b, stride=2, activation="elu", backend=backend)
        u = ops.causal_conv_transpose1d(y, wt, stride=2, activation="silu", backend=backend)
        codes, q = ops.rvq_encode(xv, cbs, 2, backend=backend)
        return u.sum() + q.sum() + ops.rvq_decode(codes, cbs, backend=backend).sum()

    s = _samples(device, False)
    x, w, b = s["causal_conv1d"][0][:3]
    wt = torch.randn(4, 3, 4, device=device)
    xv, cbs = s["rvq_encode"][0][:2]
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, w, wt, b, xv, cbs), f(x, w, wt, b, xv, cbs))


def test_reference_backend_compiles_too():
    require_backend("torch", "cpu")
    torch._dynamo.reset()
    f = torch.compile(lambda x, w: ops.causal_conv1d(x, w, backend="torch"), backend="aot_eager", fullgraph=True)
    x, w = torch.randn(1, 2, 9), torch.randn(3, 2, 3)
    torch.testing.assert_close(f(x, w), ops.causal_conv1d_ref(x, w))


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_grouped_conv1d(requires_grad):
    """The critics' grouped conv (cpp only) and, without autograd of their own, its two gradients."""
    require_backend("cpp", "cpu")
    lib = torch.ops.fastcodec
    g = dict(requires_grad=requires_grad)
    x, w, b = torch.randn(2, 6, 29, **g), torch.randn(9, 2, 5, **g), torch.randn(9, **g)
    torch.library.opcheck(lib.grouped_conv1d, (x, w, b, 2, 3, 3))
    torch.library.opcheck(lib.grouped_conv1d, (x, w, None, 1, 0, 3))
    if not requires_grad:
        gy = torch.randn(2, 9, 16)
        torch.library.opcheck(lib.grouped_conv1d_input_grad, (gy, w, 29, 2, 3, 3))
        torch.library.opcheck(lib.grouped_conv1d_weight_grad, (gy, x, 5, 2, 3, 3))
        torch.library.opcheck(lib.conv1d_weight_grad, (torch.randn(2, 4, 29), x, 3, 2, 4))


def test_opcheck_stream_kernels():
    """The explicit-padding conv behind streams and input gradients, and the transposed conv's
    stream step (cpp, fp32; no autograd of their own), each with and without its optional inputs."""
    require_backend("cpp", "cpu")
    lib = torch.ops.fastcodec
    x, w, b = torch.randn(2, 3, 17), torch.randn(4, 3, 5), torch.randn(4)
    a, r = torch.rand(4) + 0.5, torch.randn(2, 4, 9)
    torch.library.opcheck(lib.conv1d_window, (x, w, b, 2, 1, 3, 9, "snake", 0.3, a, r))
    torch.library.opcheck(lib.conv1d_window, (x, w, None, 1, 2, 0, 9, "none", 0.3, None, None))
    wt = torch.randn(3, 4, 6)
    torch.library.opcheck(lib.conv_transpose1d_stream, (x, wt, b, None, 2, "elu", 0.3, None))
    y, tail = lib.conv_transpose1d_stream(x, wt, b, None, 2, "elu", 0.3, None)
    torch.library.opcheck(lib.conv_transpose1d_stream, (x, wt, None, tail, 2, "snake", 0.3, a))
