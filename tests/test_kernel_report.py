"""The kernel report's check cannot pass vacuously: it finds a planted spill, the tensor-core
instructions of a TF32 dot, a TF32 dot inside a kernel that claims exact fp32, and a 16-bit search
whose tiles are too narrow for sm_90's warpgroup MMAs, and reports
(without failing) an exact-fp32 dot on FMA units."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fastcodec
from conftest import require_backend
from fastcodec.dev import kernel_report as kr


@pytest.fixture(scope="module")
def toys():
    require_backend("triton", "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda")
    root = str(Path(fastcodec.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    script = Path(__file__).with_name("kernel_report_toys.py")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_finds_a_planted_spill(toys):
    spill = toys["spill"]
    assert spill["ldl"] > 0 and spill["stl"] > 0 and spill["stack"] > 0
    assert any("local memory" in p for p in spill["problems"])


def test_finds_tensor_cores_in_a_tf32_dot(toys):
    assert toys["tf32"]["tensor_core"] > 0
    assert toys["tf32"]["problems"] == []


def test_a_plain_typed_stand_in_compiles_where_the_jit_binder_is_missing(toys):
    assert toys["stand_in"]["tensor_core"] > 0 and toys["stand_in"]["problems"] == []


def test_exact_fp32_dot_is_reported_not_failed(toys):
    assert toys["ieee"]["tensor_core"] == 0
    assert toys["ieee"]["problems"] == []


def test_finds_a_tf32_dot_in_an_exact_fp32_kernel(toys):
    k = toys["tf32_in_exact"]
    assert k["tensor_core"] > 0
    assert k["problems"] == [f"exact fp32 kernel with {k['tensor_core']} tensor-core instructions (a TF32 dot?)"]


def test_a_16bit_search_must_issue_warpgroup_mmas_on_sm90(toys):
    narrow, wide = toys["fp16_codes_major_False"], toys["fp16_codes_major_True"]
    assert narrow["tensor_core"] > 0 and narrow["wgmma"] == 0
    assert narrow["problems"] == ["tensor cores without wgmma (HGMMA) on sm_90: tiles too narrow for a warpgroup"]
    assert wide["wgmma"] > 0 and wide["problems"] == []


def test_judge_fails_a_low_precision_matrix_kernel_without_tensor_cores():
    k = kr.Kernel("triton", "x", "bfloat16", "bf16", True, "-", 4, gated=True)
    kr.judge(k)
    assert k.problems == ["matrix kernel in bf16 mode without tensor-core instructions"]


def test_h100_occupancy_and_roofline_arithmetic():
    assert kr.occupancy(regs=128, shared=0, num_warps=4) == 0.25  # 4096 regs a warp -> 16 warps
    assert kr.occupancy(regs=32, shared=0, num_warps=4) == 1.0
    assert kr.occupancy(regs=64, shared=100_000, num_warps=4) == 2 * 4 / 64  # two blocks fit in 228 KB
    t, bound = kr.floor_for("bf16", flops=990e12, nbytes=1.0)
    assert bound == "math" and abs(t - 1.0) < 1e-9
    t, bound = kr.floor_for("fp32", flops=1.0, nbytes=3.35e12)
    assert bound == "memory" and abs(t - 1.0) < 1e-9

