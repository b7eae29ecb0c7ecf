"""The precision every Triton launch asks for. The interpreter computes exact fp32 products whatever
a dot is told, so a launcher that silently passed TF32 for exact fp32 inputs would pass every
numeric test here and lose accuracy on a GPU; these tests read what each launch passes instead
(and tests/test_kernel_report.py has the report flag a TF32 dot compiled into an exact-mode kernel)."""
import pytest
import torch

from conftest import require_backend
from fastcodec import ops


class _Recorder:
    """Stands in for a @triton.jit kernel: records each launch's keyword arguments, then launches."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        launch = self.kernel[grid]

        def run(*args, **kwargs):
            self.calls.append(kwargs)
            return launch(*args, **kwargs)
        return run


@pytest.fixture
def launches(monkeypatch):
    require_backend("triton", "cpu")
    from fastcodec.ops.triton import conv, vq

    recorders = {}
    for module, name in ((conv, "causal_conv1d_kernel"), (conv, "causal_conv_transpose1d_kernel"),
                         (vq, "rvq_encode_kernel")):
        recorders[name] = _Recorder(getattr(module, name))
        monkeypatch.setattr(module, name, recorders[name])
    return recorders


def test_exact_fp32_launches_ask_for_ieee_products(launches):
    assert not torch.backends.cudnn.allow_tf32  # (tests/conftest.py turns it off: fp32 is exact in tests)
    x = torch.randn(2, 5, 23, requires_grad=True)
    w = torch.randn(7, 5, 3, requires_grad=True)
    ops.causal_conv1d(x, w, torch.randn(7), stride=2, activation="elu", backend="triton").sum().backward()
    wt = torch.randn(5, 4, 4, requires_grad=True)
    ops.causal_conv_transpose1d(x, wt, stride=2, backend="triton").sum().backward()
    r, cbs = torch.randn(9, 8), torch.randn(3, 16, 8)
    ops.vq_nearest(r, cbs[0], backend="triton")
    ops.rvq_encode(r, cbs, backend="triton")
    ops.rvq_residuals(r, cbs, backend="triton")
    calls = [(name, kw) for name, rec in launches.items() for kw in rec.calls]
    assert {name for name, _ in calls} == set(launches), "every kernel launched at least once"
    for name, kw in calls:
        assert kw["PRECISION"] == "ieee", (name, kw["PRECISION"])
        assert not kw.get("FAST", False), name


def test_fast_mode_is_the_only_tf32_launch(launches):
    from fastcodec.ops.triton import vq

    if not vq.fast_available():
        pytest.skip("RVQ fast mode needs Triton >= 3.2")
    r, cbs = torch.randn(9, 8), torch.randn(3, 16, 8)
    ops.rvq_encode(r, cbs, backend="triton", mode="fast")
    (kw,) = launches["rvq_encode_kernel"].calls
    # The exact re-check keeps PRECISION "ieee"; the candidates' tf32 dot is FAST's own.
    assert kw["FAST"] and kw["PRECISION"] == "ieee"


def test_under_the_tf32_flag_only_the_convs_ask_for_tf32(launches, monkeypatch):
    """torch.backends.cudnn.allow_tf32 (PyTorch's default: on) lets fp32 convs run on TF32 tensor
    cores, as PyTorch's own do; the exact searches stay exact under it."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x, w = torch.randn(2, 5, 23), torch.randn(7, 5, 3)
    ops.causal_conv1d(x, w, stride=2, backend="triton")
    ops.causal_conv_transpose1d(x, torch.randn(5, 4, 4), stride=2, backend="triton")
    ops.rvq_encode(torch.randn(9, 8), torch.randn(3, 16, 8), backend="triton")
    for name in ("causal_conv1d_kernel", "causal_conv_transpose1d_kernel"):
        assert [kw["PRECISION"] for kw in launches[name].calls] == ["tf32"], name
    assert [kw["PRECISION"] for kw in launches["rvq_encode_kernel"].calls] == ["ieee"]
