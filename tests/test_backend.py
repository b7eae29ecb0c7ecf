"""Backend selection: argument > FASTCODEC_BACKEND > auto; named backends never fall back silently;
a missing extension leaves `import fastcodec` working and explains itself."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import fastcodec

from conftest import require_backend
from fastcodec import ops
from fastcodec.ops import BackendUnavailable, _backend, dispatch


def _args():
    return torch.randn(1, 2, 9), torch.randn(3, 2, 3)


def test_auto_on_cpu_picks_cpp_for_fp32_and_torch_for_bf16():
    require_backend("cpp", "cpu")
    assert ops.resolve_backend("auto", torch.randn(2)) == "cpp"
    assert ops.resolve_backend("auto", torch.randn(2, dtype=torch.float64)) == "cpp"
    assert ops.resolve_backend("auto", torch.randn(2, dtype=torch.bfloat16)) == "torch"


def test_env_overrides_auto_but_not_an_explicit_argument(monkeypatch):
    require_backend("cpp", "cpu")
    x = torch.randn(2)
    monkeypatch.setenv(_backend.ENV_VAR, "torch")
    assert ops.resolve_backend("auto", x) == "torch"
    assert ops.resolve_backend("cpp", x) == "cpp"
    monkeypatch.setenv(_backend.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="FASTCODEC_BACKEND=nonsense"):
        ops.causal_conv1d(*_args())


def test_named_backend_that_cannot_run_raises():
    x, w = _args()
    with pytest.raises(BackendUnavailable, match="cuda backend runs on CUDA tensors"):
        ops.causal_conv1d(x, w, backend="cuda")
    with pytest.raises(BackendUnavailable, match="supports float32, float64; got bfloat16"):
        ops.causal_conv1d(x.bfloat16(), w.bfloat16(), backend="cpp")
    with pytest.raises(ValueError, match="unknown backend"):
        ops.vq_nearest(torch.randn(3, 2), torch.randn(4, 2), backend="fast")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(BackendUnavailable, match="TRITON_INTERPRET=1"):
        ops.vq_nearest(torch.randn(3, 2), torch.randn(4, 2), backend="triton")


@pytest.mark.parametrize("call,match", [
    (lambda: ops.causal_conv1d(torch.randn(2, 9), torch.randn(3, 2, 3)), r"x must be \[B, Cin, T\]"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 4, 3)), "expects 4 input channels"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3).double()), "dtype"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3), stride=0), "stride must be a positive"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3), activation="relu"), "activation must"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3), activation="snake"), "needs alpha"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3), residual=torch.randn(1, 3, 8)),
     r"residual must have the output's shape \[1, 3, 9\]"),
    (lambda: ops.causal_conv1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3), torch.randn(4)),
     r"bias must have shape \[3\]"),
    (lambda: ops.causal_conv_transpose1d(torch.randn(1, 2, 9), torch.randn(3, 2, 3), stride=2), "Cin, Cout, K"),
    (lambda: ops.vq_nearest(torch.randn(3, 2), torch.randn(4, 3)), "dim"),
    (lambda: ops.vq_nearest(torch.randn(3, 2), torch.randn(0, 2)), "no codes"),
    (lambda: ops.rvq_encode(torch.randn(3, 2), torch.randn(2, 4, 2), n_q=3), r"n_q must be an int in \[1, 2\]"),
    (lambda: ops.rvq_decode(torch.tensor([[0, 4]]), torch.randn(2, 4, 2)), r"codes must lie in \[0, 4\)"),
    (lambda: ops.rvq_decode(torch.tensor([[0, -1]]), torch.randn(2, 4, 2)), r"codes must lie"),
    (lambda: ops.rvq_decode(torch.zeros(2, 3, dtype=torch.long), torch.randn(2, 4, 2)), "only 2 codebooks"),
    (lambda: ops.rvq_decode(torch.zeros(2, 1), torch.randn(2, 4, 2)), "integer"),
])
def test_bad_arguments_get_clear_errors(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_cpp_kernels_check_arguments_when_called_directly():
    require_backend("cpp", "cpu")
    # An out-of-range code called directly gives a NaN row (as on the GPU), never a wild read.
    out = torch.ops.fastcodec.rvq_decode(torch.tensor([[7], [1]]), torch.randn(1, 4, 2))
    assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()
    with pytest.raises(RuntimeError, match="unknown activation"):
        torch.ops.fastcodec.causal_conv1d(torch.randn(1, 2, 5), torch.randn(3, 2, 3), None, 1, 1, "relu", 0.3,
                                          None, None)


def _run(code, env=None):
    full_env = dict(os.environ, **(env or {}))
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, full_env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=300)


def test_missing_extension_import_still_works_and_named_backend_explains():
    """Simulate a broken build: fastcodec._C raises on import."""
    r = _run("""
        import sys, importlib.abc
        class Broken(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "fastcodec._C":
                    raise ImportError("undefined symbol: _ZN3c104impl (simulated)")
        sys.meta_path.insert(0, Broken())
        import torch, fastcodec
        from fastcodec import ops
        x, w = torch.randn(1, 2, 9), torch.randn(3, 2, 3)
        assert ops.resolve_backend("auto", x) == "torch"
        y = ops.causal_conv1d(x, w)  # auto still works, on the reference
        try:
            ops.causal_conv1d(x, w, backend="cpp")
        except ops.BackendUnavailable as e:
            print("RAISED:", e)
        from fastcodec.info import report
        print(report())
    """)
    assert r.returncode == 0, r.stderr
    assert "RAISED: backend='cpp' cannot run here: fastcodec._C did not load" in r.stdout
    assert "pip install --no-build-isolation -e ." in r.stdout
    assert "simulated" in r.stdout


def test_info_command_reports_backends():
    r = _run("import runpy, sys; sys.argv=['fastcodec', 'info']; runpy.run_module('fastcodec', run_name='__main__')")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "torch " in out and "backend" in out
    ok, _ = _backend.status("cpp", "cpu")
    assert ("cpp      cpu     yes" in out) == ok
    from fastcodec.ops import _extension

    if _extension.cuda_build_archs() and not torch.cuda.is_available():
        assert "built for sm_" in out and "no GPU visible" in out


def test_auto_passes_over_a_backend_that_cannot_take_the_shape(monkeypatch):
    require_backend("cpp", "cpu")
    limited = dict(dispatch.TABLE["vq_nearest"], cpp=dispatch.Impl((torch.float32,), lambda D=None, **_: (
        "too wide" if D > 8 else None)))
    monkeypatch.setitem(dispatch.TABLE, "vq_nearest", limited)
    cpu = torch.device("cpu")
    assert dispatch.choose("vq_nearest", "auto", cpu, torch.float32, shape={"D": 9}) == "torch"
    assert dispatch.choose("vq_nearest", "auto", cpu, torch.float32, shape={"D": 8}) == "cpp"
    with pytest.raises(BackendUnavailable, match="backend='cpp' cannot run here: too wide"):
        dispatch.choose("vq_nearest", "cpp", cpu, torch.float32, shape={"D": 9})


def test_triton_rvq_names_its_code_dimension_limit():
    require_backend("triton", "cpu")
    x, cbs = torch.randn(3, 300), torch.randn(2, 4, 300)
    with pytest.raises(BackendUnavailable, match="D <= 256; got D = 300"):
        ops.rvq_encode(x, cbs, backend="triton")
