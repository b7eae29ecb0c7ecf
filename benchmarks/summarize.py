"""Summarize pytest-benchmark JSON: per group (one shape), each implementation's median time,
speedup over the PyTorch reference ('torch'), and achieved GFLOP/s.

    python benchmarks/summarize.py bench.json [more.json ...] [--markdown]
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
    args = parser.parse_args(argv)
    all_rows = list(rows(args.json))
    if args.markdown:
        print("| shape | impl | median ms | x reference | GFLOP/s |\n|---|---|---|---|---|")
        for group, impl, median, ratio, gflops in all_rows:
            print(f"| {group} | {impl} | {median * 1e3:.3f} | {ratio:.2f} | {gflops or 0:.1f} |")
    else:
        print(f"{'shape':64} {'impl':7} {'median ms':>10} {'x ref':>7} {'GFLOP/s':>9}")
        for group, impl, median, ratio, gflops in all_rows:
            print(f"{group[:64]:64} {impl:7} {median * 1e3:10.3f} {ratio:7.2f} {gflops or 0:9.1f}")
    for impl, g in sorted(geomean_speedups(all_rows).items()):
        print(f"geometric-mean speedup over the reference, {impl}: {g:.2f}x")


if __name__ == "__main__":
    main()
