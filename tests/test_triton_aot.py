"""Every Triton kernel compiles for sm_90 with no GPU here (the interpreter alone would miss
GPU-only errors), and the check itself can fail: a tl.dot with sides below 16, which the
interpreter runs happily, must be rejected by the AOT compile."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastcodec

from conftest import require_backend


def _run_without_interpreter(code, tmp_path):
    # A file, not `python -c`: @triton.jit reads the kernel's source from it.
    script = tmp_path / "aot_check.py"
    script.write_text(textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # The same fastcodec the tests import, installed or not.
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=1200)


@pytest.fixture(autouse=True)
def _needs_triton():
    require_backend("triton", "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")


def test_kernel_report_passes_its_check(tmp_path):
    """Every launched Triton configuration compiles for sm_90 with no spill, and the tensor-core
    modes use tensor cores (python -m fastcodec.dev.kernel_report --check)."""
    from fastcodec.ops.triton._launch import triton_version

    # The tiles were chosen spill-free under Triton 3.6-3.9 (register allocation changes between
    # releases; 3.0 spills a few): older releases must still compile every configuration.
    tuned = triton_version() >= (3, 6)
    out = tmp_path / "report.json"
    flags = ['--check'] if tuned else []
    args = flags + ["--json", str(out)]
    r = _run_without_interpreter(
        f"import sys; from fastcodec.dev import kernel_report; sys.exit(kernel_report.main({args!r}))", tmp_path)
    print(r.stdout[-6000:])
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-5000:]
    kernels = json.loads(out.read_text())["kernels"]
    triton = [k for k in kernels if k["source"] == "triton"]
    assert len(triton) >= 40
    if tuned:
        assert all(k["ldl"] == 0 and k["stl"] == 0 for k in triton)
    assert all(k["tensor_core"] > 0 for k in triton if k["matrix"] and k["mode"] in ("bf16", "fp16"))
    # The C++ CUDA tensor-core kernels, where this build has sm_90 code (a CPU-only torch has none):
    # HMMA in each of the convs' fp16, bf16 and TF32 and the RVQ search's fp16 and bf16, no local
    # memory, gated (so --check above covered them).
    from fastcodec.ops import _extension

    tc = [k for k in kernels if k["op"] == "causal_conv (tensor cores)"]
    search = [k for k in kernels if k["op"] == "rvq_encode (tensor cores)"]
    if "90" in _extension.cuda_build_archs():
        assert sorted((k["dtype"], k["mode"]) for k in tc) == [("bfloat16", "bf16"), ("float16", "fp16"),
                                                               ("float32", "tf32")]
        assert sorted((k["dtype"], k["mode"]) for k in search) == [("bfloat16", "bf16"), ("float16", "fp16")]
        assert all(k["tensor_core"] > 0 and k["ldl"] == k["stl"] == 0 and k["gated"] for k in tc + search), tc + search
    else:
        assert tc == search == []


TINY_DOT = """
import sys
import torch
import triton, triton.language as tl

@triton.jit
def tiny_dot(a_ptr, b_ptr, c_ptr, BLOCK: tl.constexpr):
    i = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + i[:, None] * BLOCK + i[None, :])
    b = tl.load(b_ptr + i[:, None] * BLOCK + i[None, :])
    tl.store(c_ptr + i[:, None] * BLOCK + i[None, :], tl.dot(a, b))

if sys.argv[1] == "interpret":
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    c = torch.empty(4, 4)
    tiny_dot[(1,)](a, b, c, BLOCK=4)
    print("interpreter ran 4x4:", torch.allclose(c, a @ b, atol=1e-5))
else:
    from fastcodec.ops.triton import aot
    types = {"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32"}
    aot.compile_one(tiny_dot, types, {"BLOCK": 16}, 4, 90)
    print("16x16 compiled")
    try:
        aot.compile_one(tiny_dot, types, {"BLOCK": 4}, 4, 90)
        print("4x4 compiled")
    except Exception as exc:
        print("4x4 rejected:", type(exc).__name__)
"""


def test_aot_check_rejects_what_only_the_gpu_rejects(tmp_path):
    script = tmp_path / "tiny_dot.py"
    script.write_text(TINY_DOT)
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    base = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [root, base.get("PYTHONPATH")]))
    interp = subprocess.run([sys.executable, str(script), "interpret"], capture_output=True, text=True,
                            env=dict(base, TRITON_INTERPRET="1"), timeout=600)
    # Triton 3.0's interpreter checks dot shapes itself; later releases run the 4x4 dot happily.
    ran = "interpreter ran 4x4: True" in interp.stdout
    assert ran or "must be >= 16" in interp.stderr, interp.stdout + interp.stderr[-3000:]
    aot = subprocess.run([sys.executable, str(script), "aot"], capture_output=True, text=True, env=base, timeout=600)
    assert aot.returncode == 0, aot.stderr[-3000:]
    assert "16x16 compiled" in aot.stdout
    assert "4x4 rejected" in aot.stdout, aot.stdout
