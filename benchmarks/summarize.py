"""Summarize pytest-benchmark JSON: per group (one shape), each implementation's median time,
speedup over the PyTorch reference ('torch'), achieved GFLOP/s, and - with --report, the JSON of
python -m fastcodec.dev.kernel_report - the H100 roofline floor of that shape and the fraction of it
the measured Triton kernel reaches.

    python benchmarks/summarize.py bench.json [more.json ...] [--markdown] [--report report.json]
"""
import argparse
import json
import math
from collections import defaultdict


def rows(paths):
    groups = defaultdict(dict)
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for b in data["benchmarks"]:
            info = b.get("extra_info", {})
            groups[b["group"]][info.get("impl", b["name"])] = (b["stats"]["median"], info.get("gflops_per_s"))
    for group in sorted(groups):
        impls = groups[group]
        ref = impls.get("torch", (None, None))[0]
        for impl, (median, gflops) in sorted(impls.items(), key=lambda kv: kv[0] != "torch"):
            ratio = ref / median if ref else float("nan")
            yield group, impl, median, ratio, gflops


_OPS = {"conv1d": "causal_conv1d", "convT": "causal_conv_transpose1d", "rvq_encode": "rvq_encode"}


def floors(report_path):
    """{(op, dtype, shape name): floor in seconds} from a kernel report."""
    with open(report_path) as f:
        kernels = json.load(f)["kernels"]
    return {(k["op"], k["dtype"], s["name"]): s["floor_us"] * 1e-6
            for k in kernels if k["source"] == "triton" for s in k["shapes"]}


def floor_of(group, impl, table):
    """The predicted floor for a benchmark group run by impl, if the report covers it (forward only)."""
    if impl not in ("triton", "triton-fast") or not table or group.endswith("fwd+bwd"):
        return None
    op = _OPS.get(group.split()[0])
    if op and impl == "triton-fast":
        op += " fast"  # the kernel report's name for the fast-mode configuration
    dtype = next((d for d in ("bfloat16", "float16", "float32") if d in group), "float32")
    for (k_op, k_dtype, name), t in table.items():
        if k_op == op and k_dtype == dtype and name in group:
            return t
    return None


def geomean_speedups(all_rows):
    by_impl = defaultdict(list)
    for _, impl, _, ratio, _ in all_rows:
        if impl != "torch" and ratio == ratio:
            by_impl[impl].append(math.log(ratio))
    return {impl: math.exp(sum(v) / len(v)) for impl, v in by_impl.items() if v}


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("json", nargs="+")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--report", help="kernel report JSON: add the H100 floor and the fraction reached")
    args = parser.parse_args(argv)
    all_rows = list(rows(args.json))
    table = floors(args.report) if args.report else None

    def floor_cols(group, impl, median):
        t = floor_of(group, impl, table)
        return ("-", "-") if t is None else (f"{t * 1e3:.4f}", f"{100 * t / median:.0f}%")

    if args.markdown:
        print("| shape | impl | median ms | x reference | GFLOP/s | floor ms (H100) | % of floor |")
        print("|---|---|---|---|---|---|---|")
        for group, impl, median, ratio, gflops in all_rows:
            f_ms, frac = floor_cols(group, impl, median)
            print(f"| {group} | {impl} | {median * 1e3:.3f} | {ratio:.2f} | {gflops or 0:.1f} | {f_ms} | {frac} |")
    else:
        print(f"{'shape':64} {'impl':11} {'median ms':>10} {'x ref':>7} {'GFLOP/s':>9} {'% floor':>8}")
        for group, impl, median, ratio, gflops in all_rows:
            frac = floor_cols(group, impl, median)[1]
            print(f"{group[:64]:64} {impl:11} {median * 1e3:10.3f} {ratio:7.2f} {gflops or 0:9.1f} {frac:>8}")
    for impl, g in sorted(geomean_speedups(all_rows).items()):
        worst = min((r for r in all_rows if r[1] == impl and r[3] == r[3]), key=lambda r: r[3])
        print(f"geometric-mean speedup over the reference, {impl}: {g:.2f}x (worst {worst[3]:.2f}x: {worst[0]})")


if __name__ == "__main__":
    main()
