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
kernel (conv tiles, RVQ distances) in a tf32/fp16/bf16 mode without tensor-core instructions, or
a Triton 16-bit search without warpgroup MMAs (HGMMA) on sm_90.
Gated = the kernels 'auto' dispatches to on a GPU: the Triton kernels, and the C++ CUDA kernels
once fastcodec.ops._backend.CUDA_KERNELS_VERIFIED_ON_GPU puts them on that path; the C++ CUDA
tensor-core convs and RVQ search always (what their SASS must show needs no GPU to check).
Exact-fp32 kernels are reported, never failed, for tensor cores. Must run without TRITON_INTERPRET.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

from .tf32 import cudnn_tf32

# H100 SXM (sm_90), dense peaks and limits.
H100 = dict(fp32=67e12, tf32=495e12, bf16=990e12, fp16=990e12, fp64=67e12, bandwidth=3.35e12,
            regs_per_sm=65536, max_warps_per_sm=64, max_blocks_per_sm=32, smem_per_sm=233472,
            smem_reserved_per_block=1024, reg_alloc_unit=256)
TC_PATTERN = re.compile(r"\b(HMMA|HGMMA|QGMMA|IMMA)\b")
WGMMA_PATTERN = re.compile(r"\b(HGMMA|QGMMA)\b")
# Triton kernels whose 16-bit tiles are sized for sm_90's warpgroup MMA: there, HMMA alone means
# tiles too narrow for it (a gated failure).
WGMMA_KERNELS = ("rvq_encode_kernel", "rvq_split_kernel")
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
    wgmma: int = 0  # of which warpgroup MMAs (HGMMA/QGMMA, sm_90)
    wide: bool = False  # its tiles are meant for wgmma (WGMMA_KERNELS in 16-bit, sm_90)
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
    k.wgmma = len(WGMMA_PATTERN.findall(sass))
    k.occupancy = occupancy(k.regs, k.shared, k.num_warps)


def judge(k: Kernel):
    if k.ldl or k.stl:
        k.problems.append(f"local memory: {k.ldl} LDL / {k.stl} STL (stack {k.stack} B)")
    if k.matrix and k.mode in ("tf32", "fp16", "bf16") and not k.tensor_core:
        k.problems.append(f"matrix kernel in {k.mode} mode without tensor-core instructions")
    if k.mode == "fp32" and k.tensor_core:  # fp32 tensor-core products are TF32: not exact
        k.problems.append(f"exact fp32 kernel with {k.tensor_core} tensor-core instructions (a TF32 dot?)")
    if k.wide and k.tensor_core and not k.wgmma:
        k.problems.append("tensor cores without wgmma (HGMMA) on sm_90: tiles too narrow for a warpgroup")


# --- Triton ------------------------------------------------------------------------------------

class _Pointer:
    """What the JIT reads of a tensor argument (its dtype, its address's alignment), without the
    tensor: the report records hundreds of launches."""

    def __init__(self, t):
        self.dtype, self._ptr = t.dtype, 256 + t.data_ptr() % 256

    def data_ptr(self):
        return self._ptr


class _Capture:
    """Stands in for a @triton.jit kernel in its launcher's module: keeps each launch's arguments
    instead of launching."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, []

    def __getitem__(self, grid):
        import torch

        def launch(*args, **kwargs):
            self.calls.append((tuple(_Pointer(a) if isinstance(a, torch.Tensor) else a for a in args), kwargs))
        return launch


@contextlib.contextmanager
def _captured(module, name):
    capture = _Capture(getattr(module, name))
    setattr(module, name, capture)
    try:
        yield capture
    finally:
        setattr(module, name, capture.kernel)


def triton_launches():
    """What the launchers pass their kernels for the codec's shapes: (op, kernel, dtype, mode,
    matrix, args, kwargs, shapes) per distinct launch, found by running the real launchers
    (fastcodec.ops.triton.conv and .vq) on CPU tensors with each kernel replaced by a recorder, so
    that the report compiles what runs: the same tiles, flags and arguments, specialized by
    Triton's JIT rules (jit_specialized)."""
    import torch

    from fastcodec.dev import shapes as S
    from fastcodec.ops.triton import conv, vq

    launches = []

    def record(module, name, op, dname, mode, matrix, shape, call):
        """matrix: a bool, or a function of a launch's keywords (the split search's last launch has no dot)."""
        with _captured(module, name) as cap:
            call()
        for args, kwargs in cap.calls:
            launches.append((op, cap.kernel, dname, mode, matrix(kwargs) if callable(matrix) else matrix, args,
                             kwargs, shape))

    for dname in ("float32", "float16", "bfloat16"):
        dtype, e = getattr(torch, dname), ELEM[dname]
        # fp32 convs run exact or TF32 as torch.backends.cudnn.allow_tf32 says: both are compiled.
        conv_modes = (("fp32", False), ("tf32", True)) if dname == "float32" else ((MODES[dname], True),)
        for mode, tf32 in conv_modes:
            for name, cin, cout, k, stride, dil, tps, act, res in S.encoder_layers():
                tout = -(-tps // stride)
                x, w, b = torch.empty(4, cin, tps, dtype=dtype), torch.empty(cout, cin, k, dtype=dtype), \
                    torch.empty(cout, dtype=dtype)
                r = torch.empty(4, cout, tout, dtype=dtype) if res else None
                shape = (name + " 4x1s", 2 * 4 * cout * cin * k * tout,
                         e * (cin * 4 * tps + cout * cin * k + 4 * cout * tout * (2 if res else 1)))
                with cudnn_tf32(tf32):
                    record(conv, "causal_conv1d_kernel", "causal_conv1d", dname, mode, True, shape,
                           lambda: conv.causal_conv1d(x, w, b, stride, dil, act or "none", 0.01, None, r))
            for name, cin, cout, k, stride, tps in S.decoder_up_layers():
                x, w, b = torch.empty(4, cin, tps, dtype=dtype), torch.empty(cin, cout, k, dtype=dtype), \
                    torch.empty(cout, dtype=dtype)
                shape = (name + " 4x1s", 2 * 4 * cin * cout * k * tps,
                         e * (4 * cin * tps + cin * cout * k + 4 * cout * tps * stride))
                with cudnn_tf32(tf32):
                    record(conv, "causal_conv_transpose1d_kernel", "causal_conv_transpose1d", dname, mode, True,
                           shape, lambda: conv.causal_conv_transpose1d(x, w, b, stride, "elu", 0.01, None))
            # The snake epilogue (DAC-style models) in the most common tile of each dtype.
            x, w, a = torch.empty(4, 32, 24000, dtype=dtype), torch.empty(32, 32, 7, dtype=dtype), \
                torch.empty(32, dtype=dtype)
            with cudnn_tf32(tf32):
                record(conv, "causal_conv1d_kernel", "causal_conv1d", dname, mode, True, None,
                       lambda: conv.causal_conv1d(x, w, None, 1, 1, "snake", 0.01, a, None))
        rvq_shapes = {}
        for sname, N, Q, K, D in S.RVQ_SHAPES:
            rvq_shapes.setdefault(D, []).append((sname, N, Q, K, 2 * N * K * D * Q,
                                                 e * (2 * N * D + Q * K * D) + 8 * N * Q))
        for D in (8, 32, 64, 128, 256):
            for sname, N, Q, K, flops, nbytes in rvq_shapes.get(D, [(None, 1200, 8, 1024, 0, 0)]):
                x, cbs = torch.empty(N, D, dtype=dtype), torch.empty(Q, K, D, dtype=dtype)
                shape = (sname, flops, nbytes) if sname else None
                for label, q, dist, res in (("rvq_encode", True, False, False), ("vq_nearest", False, True, False),
                                            ("rvq_residuals", False, False, True)):
                    n_q = 1 if label == "vq_nearest" else Q
                    keep = shape if label == "rvq_encode" else None
                    record(vq, "rvq_encode_kernel", label, dname, MODES[dname], True, keep,
                           lambda: vq._encode(x, cbs, n_q, q, dist, res))
                    if dtype == torch.float32 and vq.fast_available():  # TF32 candidates, exact re-check
                        record(vq, "rvq_encode_kernel", label + " fast", dname, "tf32", True, keep,
                               lambda: vq._encode(x, cbs, n_q, q, dist, res, fast=True))
                    with vq.code_split():  # the variant for few rows (one second of 24 kHz audio); its
                        # searching launches are the same for the three ops, so they share a label
                        record(vq, "rvq_split_kernel", "rvq search split", dname, MODES[dname],
                               lambda kw: kw["SEARCH"], None, lambda: vq._encode(x[:75], cbs, n_q, q, dist, res))
                codes = torch.zeros(N, Q, dtype=torch.int64)
                record(vq, "rvq_decode_kernel", "rvq_decode", dname, "-", False, None,
                       lambda: vq.rvq_decode(codes, cbs))
    return launches


MODES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _shown(constexprs: dict) -> str:
    shown = ("BLOCK", "ACT", "HAS_RES", "INT64", "M", "SEARCH", "CODES", "SPLITS")
    return json.dumps({k: v for k, v in constexprs.items() if k.startswith(shown)}, sort_keys=True)


def analyze_triton(fn, args, kwargs, *, op, dtype, mode, matrix, shapes=(), arch=90, gated=True, specialized=...):
    """Compile one recorded launch for sm_<arch>, specialized as the JIT would, and read its SASS
    into a judged Kernel. specialized: what aot.jit_specialized returned for it, if already asked."""
    from fastcodec.ops.triton import aot

    if specialized is ...:
        specialized = aot.jit_specialized(fn, args, kwargs, arch)
    if specialized is None:  # Triton < 3.5: a stand-in with plain types (see jit_specialized)
        types, constexprs, warps = aot.stand_in(fn, args, kwargs)
        compiled = aot.compile_one(fn, types, constexprs, warps, arch)
    else:
        names = list(fn.arg_names)
        constexprs = {names[i[0]]: v for i, v in specialized[2].items()}
        compiled = aot.compile_specialized(fn, specialized, arch)
    k = Kernel("triton", op, dtype, mode, matrix, _shown(constexprs), kwargs.get("num_warps", 4), gated=gated,
               wide=arch >= 90 and fn.__name__ in WGMMA_KERNELS and mode in ("fp16", "bf16"))
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


def _distinct(launches, arch):
    """Launches grouped by what the JIT would compile (signature, constexprs, specializations)."""
    from fastcodec.ops.triton import aot

    groups = {}
    for op, fn, dname, mode, matrix, args, kwargs, shape in launches:
        spec = aot.jit_specialized(fn, args, kwargs, arch)
        if spec is None:  # Triton < 3.5
            types, constexprs, _ = aot.stand_in(fn, args, kwargs)
            key = (fn.__name__, op, mode, json.dumps(types, sort_keys=True), repr(sorted(constexprs.items())),
                   kwargs.get("num_warps"))
        else:
            options, signature, constexprs, attrs = spec
            key = (fn.__name__, op, mode, json.dumps(signature, sort_keys=True), repr(sorted(constexprs.items())),
                   repr(sorted(attrs.items())), kwargs.get("num_warps"))
        entry = groups.setdefault(key, (op, fn, dname, mode, matrix, args, kwargs, [], spec))
        if shape is not None:
            entry[7].append(shape)
    return list(groups.values())


_jobs: list = []  # the distinct launches, read by the pool's forked workers


def _analyze_job(i_arch):
    i, arch = i_arch
    op, fn, dname, mode, matrix, args, kwargs, shapes, spec = _jobs[i]
    return analyze_triton(fn, args, kwargs, op=op, dtype=dname, mode=mode, matrix=matrix, shapes=shapes, arch=arch,
                          specialized=spec)


def triton_kernels(arch=90, workers=None):
    """Every distinct launch compiled and judged, on `workers` processes (default: every core)."""
    global _jobs
    _jobs = _distinct(triton_launches(), arch)
    todo = [(i, arch) for i in range(len(_jobs))]
    workers = min(workers or len(os.sched_getaffinity(0)), len(todo))
    if workers <= 1:
        return [_analyze_job(t) for t in todo]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_analyze_job, todo, chunksize=1)


# --- C++ CUDA ----------------------------------------------------------------------------------

_CUDA_TYPES = {"IfE": "float32", "IdE": "float64", "IN3c104HalfEE": "float16", "IN3c108BFloat16EE": "bfloat16",
               "I6__halfE": "float16", "I13__nv_bfloat16E": "bfloat16"}


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
        op = next((o for o in ("causal_conv_transpose1d", "causal_conv1d", "rvq_encode", "rvq_decode", "conv_tc",
                               "rvq_tc") if o + "_kernel" in mangled), mangled)
        dname = next((d for tag, d in _CUDA_TYPES.items() if tag in mangled), "?")
        mode = {"float32": "fp32", "float64": "fp64", "float16": "fp16", "bfloat16": "bf16"}.get(dname, "?")
        # kThreads: 128 in csrc/cuda/vq.cu, vq_tc.cu and conv_tc.cu, 256 elsewhere
        warps = 4 if op in ("rvq_encode", "conv_tc", "rvq_tc") else 8
        gated = _backend.CUDA_KERNELS_VERIFIED_ON_GPU
        if op == "conv_tc":  # both convs on tensor cores; fp32 runs there only as TF32
            op, mode = "causal_conv (tensor cores)", "tf32" if dname == "float32" else mode
            gated = True  # what SASS shows needs no GPU: a spill or a missing tensor core fails CI
        elif op == "rvq_tc":  # the fp16/bf16 search on tensor cores: gated likewise
            op, gated = "rvq_encode (tensor cores)", True
        k = Kernel("cuda", op, dname, mode, op != "rvq_decode", "-", warps, gated=gated)
        _fill_from_sass(k, m.group(2), sass_by_fn.get(mangled, ""))
        judge(k)
        kernels.append(k)
    return kernels


# --- output ------------------------------------------------------------------------------------

def table(kernels, markdown=False):
    head = ["src", "op", "dtype", "mode", "config", "warps", "regs", "stack", "LDL", "STL", "smem", "TC", "wgmma",
            "occ", "floor (H100)", "status"]
    rows = []
    for k in kernels:
        floors = "; ".join(f"{s['name']}: {s['floor_us']:.1f} us ({s['bound']})" for s in k.shapes[:2])
        if len(k.shapes) > 2:
            floors += f"; +{len(k.shapes) - 2} more"
        status = ("FAIL: " if k.gated else "not gated: ") + "; ".join(k.problems) if k.problems else "ok"
        rows.append([k.source, k.op, k.dtype, k.mode, k.config, str(k.num_warps), str(k.regs), str(k.stack),
                     str(k.ldl), str(k.stl), str(k.shared), str(k.tensor_core), str(k.wgmma),
                     f"{k.occupancy:.2f}", floors or "-",
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
