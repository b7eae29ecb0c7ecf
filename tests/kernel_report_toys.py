"""Toy kernels with known SASS properties, for tests/test_kernel_report.py (run in a subprocess
without TRITON_INTERPRET, since the report compiles for sm_90)."""
import json
import sys

import torch
import triton
import triton.language as tl

from fastcodec.dev import kernel_report as kr
from fastcodec.ops.triton import vq


@triton.jit
def toy_dot(a_ptr, b_ptr, c_ptr, BLOCK: tl.constexpr, PRECISION: tl.constexpr):
    i = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + i[:, None] * BLOCK + i[None, :])
    b = tl.load(b_ptr + i[:, None] * BLOCK + i[None, :])
    tl.store(c_ptr + i[:, None] * BLOCK + i[None, :], tl.dot(a, b, input_precision=PRECISION))


def main():
    a, b, c = (torch.empty(64, 64) for _ in range(3))
    out = {}
    # (An exact-fp32 64 x 64 dot at 4 warps spills by itself, hence 32 for 'ieee'.)
    for prec, mode, block in (("tf32", "tf32", 64), ("ieee", "fp32", 32)):
        k = kr.analyze_triton(toy_dot, (a, b, c), dict(BLOCK=block, PRECISION=prec, num_warps=4), op="toy_dot",
                              dtype="float32", mode=mode, matrix=True)
        out[prec] = dict(tensor_core=k.tensor_core, ldl=k.ldl, problems=k.problems)
    # A TF32 dot compiled into a kernel that claims exact fp32: what a launcher passing the wrong
    # precision would produce.
    k = kr.analyze_triton(toy_dot, (a, b, c), dict(BLOCK=64, PRECISION="tf32", num_warps=4), op="toy_dot",
                          dtype="float32", mode="fp32", matrix=True)
    out["tf32_in_exact"] = dict(tensor_core=k.tensor_core, problems=k.problems)
    # Where the JIT's binder is out of reach (Triton < 3.5) the report compiles a plain-typed stand-in.
    from fastcodec.ops.triton import aot

    specialized, aot.jit_specialized = aot.jit_specialized, lambda *a, **k: None
    k = kr.analyze_triton(toy_dot, (a, b, c), dict(BLOCK=64, PRECISION="tf32", num_warps=4), op="toy_dot",
                          dtype="float32", mode="tf32", matrix=True)
    aot.jit_specialized = specialized
    out["stand_in"] = dict(tensor_core=k.tensor_core, problems=k.problems)
    # A planted spill: the RVQ search with exact-fp32 dots and tiles far too large for registers.
    N, K, D, Q = 1000, 1024, 128, 8
    x, cbs, codes = torch.empty(N, D), torch.empty(Q, K, D), torch.empty(N, Q, dtype=torch.int64)
    args = (x, cbs, codes, x, x, x, x, x, N, K, D, Q, *x.stride(), *cbs.stride(), 0.0, 0.0)
    ce = dict(WRITE_Q=True, WRITE_DIST=False, WRITE_RES=False, PRECISION="ieee", CODES_MAJOR=False, FAST=False, M=1,
              INTERPRETED=False, BLOCK_N=64, BLOCK_K=128, BLOCK_D=128, num_warps=4)
    k = kr.analyze_triton(vq.rvq_encode_kernel, args, ce, op="rvq_encode", dtype="float32", mode="fp32", matrix=True)
    out["spill"] = dict(ldl=k.ldl, stl=k.stl, stack=k.stack, problems=k.problems)
    # The fp16 search with rows on the dot's M axis (32 of them: too few for a warpgroup MMA), then
    # as the launcher builds it (codes on M).
    x, cbs = x.half(), cbs.half()
    args = (x, cbs, codes, x, x, x, x, x, N, K, D, Q, *x.stride(), *cbs.stride(), 0.0, 0.0)
    for major in (False, True):
        ce = dict(WRITE_Q=True, WRITE_DIST=False, WRITE_RES=False, PRECISION="tf32", CODES_MAJOR=major, FAST=False,
                  M=1, INTERPRETED=False, BLOCK_N=32, BLOCK_K=64, BLOCK_D=128, num_warps=8)
        k = kr.analyze_triton(vq.rvq_encode_kernel, args, ce, op="rvq_encode", dtype="float16", mode="fp16",
                              matrix=True)
        out[f"fp16_codes_major_{major}"] = dict(tensor_core=k.tensor_core, wgmma=k.wgmma, problems=k.problems)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
