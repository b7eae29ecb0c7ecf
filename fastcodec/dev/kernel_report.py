"""GPU readiness without a GPU: what each kernel compiles to on an H100, read from its SASS.

    python -m fastcodec.dev.kernel_report [--check] [--json FILE] [--markdown]

For every Triton kernel in every configuration the launchers pick (each dtype, each tile
configuration, for the SoundStream-24k conv layers and the RVQ shapes of fastcodec/dev/shapes.py) it
compiles for sm_90 with no GPU present; for the C++ CUDA kernels it reads the sm_90 cubins of the
built extension. From `cuobjdump -res-usage` and `-sass` (the copies Triton ships) it reports
registers per thread, stack and local-memory traffic (LDL/STL instructions), shared memory,
tensor-core instructions (HMMA/HGMMA/QGMMA), the theoretical occupancy on an H100, and, per op
shape, the roofline floor: max(FLOPs / peak of the kernel's precision mode, minimum bytes / HBM
bandwidth).

--check fails (exit 1) on what is certainly bad: any LDL/STL in a gated kernel, or a gated matrix
kernel (conv tiles, RVQ distances) in a tf32/fp16/bf16 mode without tensor-core instructions.
Gated = the kernels 'auto' dispatches to on a GPU: the Triton kernels, and the C++ CUDA kernels
once fastcodec.ops._backend.CUDA_KERNELS_VERIFIED_ON_GPU puts them on that path. Exact-fp32 kernels
are reported, never failed, for tensor cores. Must run without TRITON_INTERPRET.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

# H100 SXM (sm_90), dense peaks and limits.
H100 = dict(fp32=67e12, tf32=495e12, bf16=990e12, fp16=990e12, fp64=67e12, bandwidth=3.35e12,
            regs_per_sm=65536, max_warps_per_sm=64, max_blocks_per_sm=32, smem_per_sm=233472,
            smem_reserved_per_block=1024, reg_alloc_unit=256)
TC_PATTERN = re.compile(r"\b(HMMA|HGMMA|QGMMA|IMMA)\b")
ELEM = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass
class Kernel:
    """One compiled kernel configuration and what its SASS says."""
    source: str  # 'triton' or 'cuda'
    op: str
    dtype: str
    mode: str  # precision of its matrix products: fp32 (exact), tf32, fp16, bf16, fp64, or '-' (none)
    matrix: bool  # conv tiles / RVQ distances: expected on tensor cores in tf32/fp16/bf16 modes
    config: str
    num_warps: int
    gated: bool
    regs: int = 0
    stack: int = 0
    shared: int = 0
    ldl: int = 0
    stl: int = 0
    tensor_core: int = 0
    occupancy: float = 0.0
    shapes: list = field(default_factory=list)  # [{name, flops, bytes, floor_us, bound}]
    problems: list = field(default_factory=list)


def _tool(name):
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    return path if os.path.exists(path) else name


def _run(*args):
    return subprocess.run(list(args), capture_output=True, text=True, check=False).stdout


def occupancy(regs, shared, num_warps):
    """Theoretical occupancy (active warps / max) of one kernel on an H100."""
    per_warp = -(-max(regs, 1) * 32 // H100["reg_alloc_unit"]) * H100["reg_alloc_unit"]
    by_regs = (H100["regs_per_sm"] // per_warp) // num_warps
    by_warps = H100["max_warps_per_sm"] // num_warps
    by_smem = H100["smem_per_sm"] // (shared + H100["smem_reserved_per_block"]) if shared else by_warps
    blocks = min(by_regs, by_warps, by_smem, H100["max_blocks_per_sm"])
    return blocks * num_warps / H100["max_warps_per_sm"]


def floor_for(mode, flops, nbytes):
    peak = H100.get(mode, H100["fp32"])
    t_math, t_mem = flops / peak, nbytes / H100["bandwidth"]
    return max(t_math, t_mem), ("math" if t_math >= t_mem else "memory")


def _fill_from_sass(k: Kernel, res_usage: str, sass: str):
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", res_usage)
    if m:
        k.regs, k.stack = int(m.group(1)), int(m.group(2))
        k.shared = max(k.shared, int(m.group(3)))
    k.ldl = len(re.findall(r"\bLDL\b", sass))
    k.stl = len(re.findall(r"\bSTL\b", sass))
    k.tensor_core = len(TC_PATTERN.findall(sass))
    k.occupancy = occupancy(k.regs, k.shared, k.num_warps)


def judge(k: Kernel):
    if k.ldl or k.stl:
        k.problems.append(f"local memory: {k.ldl} LDL / {k.stl} STL (stack {k.stack} B)")
    if k.matrix and k.mode in ("tf32", "fp16", "bf16") and not k.tensor_core:
        k.problems.append(f"matrix kernel in {k.mode} mode without tensor-core instructions")
    if k.mode == "fp32" and k.tensor_core:  # fp32 tensor-core products are TF32: not exact
        k.problems.append(f"exact fp32 kernel with {k.tensor_core} tensor-core instructions (a TF32 dot?)")


# --- Triton ------------------------------------------------------------------------------------

def triton_launches():
    """(op, kernel, dtype, mode, matrix, arg types, constexprs, num_warps, shapes) per configuration."""
    import torch

    from fastcodec.dev import shapes as S
    from fastcodec.ops.triton import conv, vq
    from fastcodec.ops.triton._launch import precision_for

    out = {}
    for dname, t in (("float32", "fp32"), ("float16", "fp16"), ("bfloat16", "bf16")):
        dtype = getattr(torch, dname)
        mode = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dname]
        e = ELEM[dname]
        ints = {n: "i32" for n in ("Cin", "Cout", "Tout", "K", "stride", "dilation", "T", "sxb", "sxc", "sxt",
                                   "swo", "swi", "swk", "srb", "src", "srt")}
        ptrs = {n: f"*{t}" for n in ("x_ptr", "w_ptr", "b_ptr", "a_ptr", "r_ptr", "y_ptr")}
        for name, cin, cout, k, stride, dil, tps, act, res in S.encoder_layers():
            T = 4 * tps  # batch 4 x 1 s
            tout = -(-tps // stride)
            cfg = conv.conv_config(cin, cout, tout, dtype)
            warps = cfg.pop("num_warps")
            act_code = conv.ACT_CODES[act or "none"]
            ce = dict(ACT=act_code, HAS_BIAS=True, HAS_RES=res, PRECISION=precision_for(dtype), **cfg)
            key = ("causal_conv1d", dname, tuple(sorted(ce.items())))
            flops = 2 * 4 * cout * cin * k * tout
            nbytes = e * (cin * T + cout * cin * k + 4 * cout * tout * (2 if res else 1))
            entry = out.setdefault(key, ("causal_conv1d", conv.causal_conv1d_kernel, dname, mode, True,
                                         {**ptrs, **ints, "slope": "fp32"}, ce, warps, []))
            entry[8].append((name + " 4x1s", flops, nbytes))
        for name, cin, cout, k, stride, tps in S.decoder_up_layers():
            cfg = conv.conv_config(cin, cout, tps, dtype)
            warps = cfg.pop("num_warps")
            ce = dict(ACT=conv.ACT_CODES["elu"], HAS_BIAS=True, PRECISION=precision_for(dtype),
                      BLOCK_CO=cfg["BLOCK_CO"], BLOCK_Q=cfg["BLOCK_T"], BLOCK_CI=cfg["BLOCK_CI"])
            key = ("causal_conv_transpose1d", dname, tuple(sorted(ce.items())))
            flops = 2 * 4 * cin * cout * k * tps
            nbytes = e * (4 * cin * tps + cin * cout * k + 4 * cout * tps * stride)
            entry = out.setdefault(key, ("causal_conv_transpose1d", conv.causal_conv_transpose1d_kernel, dname, mode,
                                         True, {**ptrs, **ints, "slope": "fp32"}, ce, warps, []))
            entry[8].append((name + " 4x1s", flops, nbytes))
        # The snake epilogue (DAC-style models) in the most common tile of each dtype.
        cfg = conv.conv_config(32, 32, 24000, dtype)
        warps = cfg.pop("num_warps")
        ce = dict(ACT=conv.ACT_CODES["snake"], HAS_BIAS=True, HAS_RES=False, PRECISION=precision_for(dtype), **cfg)
        out.setdefault(("causal_conv1d", dname, tuple(sorted(ce.items()))),
                       ("causal_conv1d", conv.causal_conv1d_kernel, dname, mode, True,
                        {**ptrs, **ints, "slope": "fp32"}, ce, warps, []))
        vq_ptrs = {"x_ptr": f"*{t}", "cb_ptr": f"*{t}", "codes_ptr": "*i64", "q_ptr": f"*{t}", "dist_ptr": f"*{t}",
                   "res_ptr": f"*{t}", "csq_ptr": "*fp32", "cnorm_ptr": "*fp32"}
        vq_ints = {n: "i32" for n in ("N", "K", "D", "n_q", "sxn", "sxd", "scq", "sck", "scd")}
        vq_ints.update(err_rc="fp32", err_cc="fp32")
        rvq_shapes = {}
        for sname, N, Q, K, D in S.RVQ_SHAPES + [S.rvq_large(True)]:
            rvq_shapes.setdefault(D, []).append((sname, 2 * N * K * D * Q, e * (2 * N * D + Q * K * D) + 8 * N * Q))
        for D in (8, 32, 64, 128, 256):
            for label in ("rvq_encode", "vq_nearest", "rvq_residuals"):
                cfg = vq.rvq_config(D, dtype, residuals=label == "rvq_residuals")
                warps = cfg.pop("num_warps")
                writes = dict(WRITE_Q=label == "rvq_encode", WRITE_DIST=label == "vq_nearest",
                              WRITE_RES=label == "rvq_residuals", PRECISION=precision_for(dtype), INTERPRETED=False)
                ce = dict(writes, FAST=False, M=1, **cfg)
                shp = rvq_shapes.get(D, []) if label == "rvq_encode" else []
                out[(label, dname, D)] = (label, vq.rvq_encode_kernel, dname, mode, True, {**vq_ptrs, **vq_ints},
                                          ce, warps, list(shp))
                if dtype == torch.float32 and vq.fast_available():  # fast mode: TF32 candidates, exact re-check
                    fcfg = vq.fast_config(D, residuals=label == "rvq_residuals")
                    fwarps = fcfg.pop("num_warps")
                    out[(label + " fast", dname, D)] = (label + " fast", vq.rvq_encode_kernel, dname, "tf32", True,
                                                        {**vq_ptrs, **vq_ints}, dict(writes, FAST=True, **fcfg),
                                                        fwarps, list(shp))
            dcfg = vq.decode_config(D)
            dwarps = dcfg.pop("num_warps")
            dints = {n: "i32" for n in ("N", "K", "D", "n_q", "scn", "scs", "sbq", "sbk", "sbd")}
            out.setdefault(("rvq_decode", dname, tuple(sorted(dcfg.items()))),
                           ("rvq_decode", vq.rvq_decode_kernel, dname, "-", False,
                            {"codes_ptr": "*i64", "cb_ptr": f"*{t}", "out_ptr": f"*{t}", **dints}, dcfg, dwarps, []))
    return list(out.values())


def analyze_triton(fn, types, constexprs, num_warps, *, op, dtype, mode, matrix, shapes=(), arch=90, gated=True):
    """Compile one Triton configuration for sm_<arch> and read its SASS into a judged Kernel."""
    from fastcodec.ops.triton.aot import compile_one

    shown = {k: v for k, v in constexprs.items() if k.startswith(("BLOCK", "ACT", "HAS_RES"))}
    k = Kernel("triton", op, dtype, mode, matrix, json.dumps(shown, sort_keys=True), num_warps, gated=gated)
    compiled = compile_one(fn, types, constexprs, num_warps, arch)
    k.shared = int(getattr(compiled.metadata, "shared", 0) or 0)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(compiled.asm["cubin"])
        path = f.name
    try:
        cuobjdump = _tool("cuobjdump")
        _fill_from_sass(k, _run(cuobjdump, "-res-usage", path), _run(cuobjdump, "-sass", path))
    finally:
        os.unlink(path)
    for name, flops, nbytes in shapes:
        t, bound = floor_for(mode, flops, nbytes)
        k.shapes.append(dict(name=name, flops=flops, bytes=nbytes, floor_us=t * 1e6, bound=bound))
    judge(k)
    return k


def triton_kernels(arch=90):
    return [analyze_triton(fn, types, ce, warps, op=op, dtype=dname, mode=mode, matrix=matrix, shapes=shapes,
                           arch=arch)
            for op, fn, dname, mode, matrix, types, ce, warps, shapes in triton_launches()]


# --- C++ CUDA ----------------------------------------------------------------------------------

_CUDA_TYPES = {"IfE": "float32", "IdE": "float64", "IN3c104HalfEE": "float16", "IN3c108BFloat16EE": "bfloat16"}


def cuda_kernels(arch=90):
    """Per-kernel figures of the extension's sm_<arch> cubins; [] when it has no CUDA kernels."""
    from fastcodec.ops import _backend, _extension

    if str(arch) not in _extension.cuda_build_archs():
        return []
    import fastcodec._C as ext

    cuobjdump = _tool("cuobjdump")
    res = _run(cuobjdump, "-res-usage", "-arch", f"sm_{arch}", ext.__file__)
    sass = _run(cuobjdump, "-sass", "-arch", f"sm_{arch}", ext.__file__)
    sass_by_fn = {m.group(1): m.group(2) for m in
                  re.finditer(r"Function : (\S+)(.*?)(?=\n\s*Function : |\Z)", sass, re.S)}
    kernels = []
    for m in re.finditer(r"Function (\S+):\n\s*(REG:.*)", res):
        mangled = m.group(1)
        op = next((o for o in ("causal_conv_transpose1d", "causal_conv1d", "rvq_encode", "rvq_decode")
                   if o + "_kernel" in mangled), mangled)
        dname = next((d for tag, d in _CUDA_TYPES.items() if tag in mangled), "?")
        mode = {"float32": "fp32", "float64": "fp64", "float16": "fp16", "bfloat16": "bf16"}.get(dname, "?")
        warps = 4 if op == "rvq_encode" else 8  # kThreads: 128 in csrc/cuda/vq.cu, 256 elsewhere
        k = Kernel("cuda", op, dname, mode, op != "rvq_decode", "-", warps, gated=_backend.CUDA_KERNELS_VERIFIED_ON_GPU)
        _fill_from_sass(k, m.group(2), sass_by_fn.get(mangled, ""))
        judge(k)
        kernels.append(k)
    return kernels


# --- output ------------------------------------------------------------------------------------

def table(kernels, markdown=False):
    head = ["src", "op", "dtype", "mode", "config", "warps", "regs", "stack", "LDL", "STL", "smem", "TC", "occ",
            "floor (H100)", "status"]
    rows = []
    for k in kernels:
        floors = "; ".join(f"{s['name']}: {s['floor_us']:.1f} us ({s['bound']})" for s in k.shapes[:2])
        if len(k.shapes) > 2:
            floors += f"; +{len(k.shapes) - 2} more"
        status = ("FAIL: " if k.gated else "not gated: ") + "; ".join(k.problems) if k.problems else "ok"
        rows.append([k.source, k.op, k.dtype, k.mode, k.config, str(k.num_warps), str(k.regs), str(k.stack),
                     str(k.ldl), str(k.stl), str(k.shared), str(k.tensor_core), f"{k.occupancy:.2f}", floors or "-",
                     status])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(r).replace("{", "").replace("}", "").replace('"', "") + " |" for r in rows]
        return "\n".join(lines)
    widths = [min(60, max(len(h), *(len(r[i]) for r in rows))) for i, h in enumerate(head)] if rows else []
    fmt = lambda r: "  ".join(c[:w].ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


def build(arch=90):
    return triton_kernels(arch) + cuda_kernels(arch)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Static sm_90 report of fastcodec's GPU kernels")
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--check", action="store_true", help="exit 1 on a spill or a missing tensor core (gated)")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("unset TRITON_INTERPRET: the interpreter replaces @triton.jit and nothing can be compiled")
    start = time.time()
    kernels = build(args.arch)
    print(table(kernels, args.markdown))
    failures = [k for k in kernels if k.gated and k.problems]
    noted = [k for k in kernels if not k.gated and k.problems]
    print(f"\n{len(kernels)} kernel configurations for sm_{args.arch} in {time.time() - start:.0f} s: "
          f"{len(failures)} failing, {len(noted)} with problems outside the gate (not on auto's GPU path)")
    from fastcodec.ops.triton import vq

    if not vq.fast_available():
        print("RVQ fast mode is not listed: this Triton cannot compile it, so fast mode runs the exact kernels "
              f"(it needs Triton >= {'.'.join(map(str, vq.FAST_MIN_TRITON))})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "h100": H100, "kernels": [asdict(k) for k in kernels]}, f, indent=1)
    return 1 if (args.check and failures) else 0


if __name__ == "__main__":
    sys.exit(main())
