"""Compile every Triton kernel ahead of time for a GPU that is not here.

`python -m fastcodec.ops.triton.aot [--arch 90]` compiles each kernel in the configurations the
launchers pick for the codec's shapes (SoundStream-24k conv layers, the RVQ training shapes), for
each dtype, with `triton.compile(..., target=GPUTarget("cuda", arch, 32))`. The interpreter used
on CPU accepts things the GPU compiler rejects (tl.dot sides below 16, some type mixes), so CI runs
this too. It must run without TRITON_INTERPRET (the interpreter replaces @triton.jit).
"""
import argparse
import inspect
import os
import sys
import time

DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

# SoundStream-24k (C=32): (Cin, Cout, Tout) of the convs the codec launches at 1 s of 24 kHz audio.
CONV_SHAPES = [(1, 32, 24000), (32, 32, 24000), (32, 64, 12000), (64, 64, 12000), (128, 256, 600),
               (512, 512, 75), (512, 128, 75)]
RVQ_DIMS = [8, 128, 512]  # factorized (DAC-like), SoundStream, wide


def _source(fn, args, constexprs):
    """An ASTSource for `fn`; args: name -> type string for runtime arguments."""
    from triton.compiler import ASTSource

    params = list(inspect.signature(fn.fn).parameters)
    if "constexprs" in inspect.signature(ASTSource.__init__).parameters:  # triton >= 3.3
        sig = {p: args.get(p, "constexpr") for p in params}
        return ASTSource(fn=fn, signature=sig, constexprs=constexprs)
    # triton 3.0-3.2: positional indices, constants separate
    sig = {i: args[p] for i, p in enumerate(params) if p in args}
    consts = {i: constexprs[p] for i, p in enumerate(params) if p in constexprs}
    return ASTSource(fn=fn, signature=sig, constants=consts)


def configs():
    """(label, kernel, runtime-arg types, constexprs, num_warps) for every launched configuration."""
    from . import conv, vq
    from ._launch import precision_for
    import torch

    out = []
    for dname, t in DTYPES.items():
        prec = precision_for(getattr(torch, dname))
        seen = set()
        for cin, cout, tout in CONV_SHAPES:
            cfg = conv.conv_config(cin, cout, tout)
            warps = cfg.pop("num_warps")
            key = tuple(sorted(cfg.items()))
            if key in seen:
                continue
            seen.add(key)
            ints = {n: "i32" for n in ("Cin", "Cout", "Tout", "K", "stride", "dilation", "T")}
            strides = {n: "i32" for n in ("sxb", "sxc", "sxt", "swo", "swi", "swk", "srb", "src", "srt")}
            ptrs = {n: f"*{t}" for n in ("x_ptr", "w_ptr", "b_ptr", "a_ptr", "r_ptr", "y_ptr")}
            for act in (0, 4):  # plain, and snake (the epilogue with the most code)
                ce = dict(ACT=act, HAS_BIAS=True, HAS_RES=True, PRECISION=prec, **cfg)
                out.append((f"causal_conv1d {dname} act={act} {cfg}", conv.causal_conv1d_kernel,
                            {**ptrs, **ints, **strides, "slope": "fp32"}, ce, warps))
                cet = dict(ACT=act, HAS_BIAS=True, PRECISION=prec, BLOCK_CO=cfg["BLOCK_CO"],
                           BLOCK_Q=cfg["BLOCK_T"], BLOCK_CI=cfg["BLOCK_CI"])
                out.append((f"causal_conv_transpose1d {dname} act={act} {cet}", conv.causal_conv_transpose1d_kernel,
                            {**ptrs, **ints, **strides, "slope": "fp32"}, cet, warps))
        for D in RVQ_DIMS:
            cfg = vq.rvq_config(D)
            warps = cfg.pop("num_warps")
            ptrs = {"x_ptr": f"*{t}", "cb_ptr": f"*{t}", "codes_ptr": "*i64", "q_ptr": f"*{t}", "dist_ptr": f"*{t}"}
            ints = {n: "i32" for n in ("N", "K", "D", "n_q", "sxn", "sxd", "scq", "sck", "scd")}
            for write_q, write_dist in ((True, False), (False, True)):
                ce = dict(WRITE_Q=write_q, WRITE_DIST=write_dist, PRECISION=prec, **cfg)
                out.append((f"rvq_encode {dname} D={D} q={write_q} {cfg}", vq.rvq_encode_kernel,
                            {**ptrs, **ints}, ce, warps))
            dcfg = vq.decode_config(D)
            dwarps = dcfg.pop("num_warps")
            dints = {n: "i32" for n in ("N", "K", "D", "n_q", "scn", "scs", "sbq", "sbk", "sbd")}
            out.append((f"rvq_decode {dname} D={D} {dcfg}", vq.rvq_decode_kernel,
                        {"codes_ptr": "*i64", "cb_ptr": f"*{t}", "out_ptr": f"*{t}", **dints}, dcfg, dwarps))
    return out


def compile_one(kernel, args, constexprs, num_warps, arch):
    import triton
    from triton.backends.compiler import GPUTarget

    return triton.compile(_source(kernel, args, constexprs), target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        sys.exit("unset TRITON_INTERPRET: the interpreter replaces @triton.jit and nothing can be compiled")
    failures = 0
    todo = configs()
    start = time.time()
    for label, kernel, types, constexprs, warps in todo:
        try:
            c = compile_one(kernel, types, constexprs, warps, args.arch)
            print(f"ok    sm_{args.arch} {label}: shared {c.metadata.shared} B, {len(c.asm['cubin'])} B cubin")
        except Exception as exc:  # report every failure, then fail once
            failures += 1
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"FAIL  sm_{args.arch} {label}: {type(exc).__name__}: {first}")
    print(f"compiled {len(todo) - failures}/{len(todo)} Triton kernel configurations for sm_{args.arch} "
          f"in {time.time() - start:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
