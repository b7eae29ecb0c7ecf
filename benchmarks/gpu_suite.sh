#!/usr/bin/env bash
# One command for a GPU machine with no network, where torch, triton, pytest and pytest-benchmark
# are preinstalled (soundfile may be missing): build, run every test on the GPU (CUDA and Triton
# paths included, none allowed to skip for want of a backend), benchmark, summarize.
# Writes JSON and logs under $OUT when it is set. The last lines are the summary table.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
status=0

echo "== build"
if ! pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "BUILD FAILED (log: $OUT/build.log)"
    exit 1
fi
python -m fastcodec info | tee "$OUT/info.txt"

echo "== kernel report (sm_90 SASS, predicted floors)"
python -m fastcodec.kernel_report --check --json "$OUT/kernel_report.json" --markdown >"$OUT/kernel_report.md" 2>&1 \
    || status=1
tail -1 "$OUT/kernel_report.md"

echo "== tests"
FASTCODEC_REQUIRE=cpp,cuda,triton python -m pytest tests -q -rs -p no:cacheprovider \
    --junitxml "$OUT/tests.xml" 2>&1 | tee "$OUT/tests.txt" | tail -40
test_rc=${PIPESTATUS[0]}
[ "$test_rc" -eq 0 ] || status=1

echo "== benchmarks"
for suite in bench_rvq bench_conv bench_train; do
    python -m pytest "benchmarks/$suite.py" -q -p no:cacheprovider --benchmark-json "$OUT/$suite.json" \
        --benchmark-columns=median,iqr,rounds --benchmark-sort=name >"$OUT/$suite.txt" 2>&1 || status=1
    tail -3 "$OUT/$suite.txt"
done

echo "== summary"
python benchmarks/summarize.py "$OUT"/bench_*.json --report "$OUT/kernel_report.json" --markdown \
    >"$OUT/summary.md" 2>&1 || status=1
python benchmarks/summarize.py "$OUT"/bench_*.json --report "$OUT/kernel_report.json" | tail -60
grep -E "passed|failed" "$OUT/tests.txt" | tail -1
echo "gpu_suite: tests rc=$test_rc, overall $([ $status -eq 0 ] && echo OK || echo FAILED); files in $OUT"
exit $status
