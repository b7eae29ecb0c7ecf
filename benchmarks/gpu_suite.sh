#!/usr/bin/env bash
# One command for a GPU machine with no network, where torch, triton, pytest and pytest-benchmark
# are preinstalled (soundfile may be missing): build, run every CUDA/Triton test on the GPU (none
# allowed to skip for want of a backend), benchmark, summarize.
#
#   bash benchmarks/gpu_suite.sh [report] [tests] [bench]     (default: all three, in that order)
#
# The build always runs first. A lent GPU takes one command for at most 10 minutes, so the suite
# keeps to a deadline (FASTCODEC_SUITE_SECONDS, default 540): each stage gets at most its own
# budget and what is left, a stage cut short is reported as such, and the summary always runs.
# If the whole suite does not fit, run it as two commands: `... report tests`, then `... bench`.
# The CPU paths are CI's job (.ci/run); here the tests are those with a CUDA target (-k cuda;
# FASTCODEC_SUITE_K="" runs them all, e.g. to check the CPU paths under this machine's torch).
# Writes under $OUT when it is set (at most 8 files: the device tool's limit): kernel_report.json/.md,
# tests.txt, bench_*.json, summary.md, and logs.tgz with the rest. The last lines are the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
status=0
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(report tests bench)
deadline=$((SECONDS + ${FASTCODEC_SUITE_SECONDS:-540}))
# Only the GPU at hand: sm_90 alone halves the CUDA compile (the default builds sm_80 and sm_90).
export FASTCODEC_CUDA_ARCHS=${FASTCODEC_CUDA_ARCHS:-90}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

wants() { [[ " ${stages[*]} " == *" $1 "* ]]; }

# budget SECONDS: the time a stage may take, the smaller of its own budget and what is left.
budget() {
    local left=$((deadline - SECONDS))
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

# timed NAME SECONDS CMD...: run CMD under a time limit; a stage cut short fails the suite, visibly.
timed() {
    local name=$1 limit=$2
    shift 2
    if [ "$limit" -le 10 ]; then
        echo "SKIPPED $name: no time left before the suite's deadline"
        status=1
        return 1
    fi
    timeout --signal=INT --kill-after=15 "$limit" "$@"
    local rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "TIMED OUT $name after ${limit}s (run its stage alone: bash benchmarks/gpu_suite.sh <stage>)"
    fi
    [ "$rc" -eq 0 ] || status=1
    return "$rc"
}

echo "== build (sm_${FASTCODEC_CUDA_ARCHS}, $MAX_JOBS jobs)"
if ! pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "BUILD FAILED (log: $OUT/build.log)"
    exit 1
fi
python -m fastcodec info | tee "$OUT/info.txt"

if wants report; then
    echo "== kernel report (sm_90 SASS, predicted floors)"
    timed report "$(budget 150)" python -m fastcodec.dev.kernel_report --check --json "$OUT/kernel_report.json" \
        --markdown >"$OUT/kernel_report.md" 2>&1
    tail -1 "$OUT/kernel_report.md"
fi

test_rc=-
if wants tests; then
    echo "== tests (CUDA targets)"
    timed tests "$(budget 300)" env FASTCODEC_REQUIRE=cpp,cuda,triton python -m pytest tests -q -rs \
        -p no:cacheprovider -k "${FASTCODEC_SUITE_K-cuda}" --junitxml "$OUT/tests.xml" >"$OUT/tests.txt" 2>&1
    test_rc=$?
    tail -40 "$OUT/tests.txt"
fi

if wants bench; then
    echo "== benchmarks"
    for suite in bench_rvq bench_conv bench_train; do
        timed "$suite" "$(budget 180)" python -m pytest "benchmarks/$suite.py" -q -p no:cacheprovider \
            --benchmark-json "$OUT/$suite.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name \
            >"$OUT/$suite.txt" 2>&1
        tail -3 "$OUT/$suite.txt"
    done
fi

echo "== summary"
benches=("$OUT"/bench_*.json)
if [ -e "${benches[0]}" ]; then
    report=()
    [ -s "$OUT/kernel_report.json" ] && report=(--report "$OUT/kernel_report.json")
    python benchmarks/summarize.py "${benches[@]}" "${report[@]}" --markdown >"$OUT/summary.md" 2>&1 || status=1
    python benchmarks/summarize.py "${benches[@]}" "${report[@]}" | tail -60
fi
[ -f "$OUT/tests.txt" ] && grep -E "passed|failed" "$OUT/tests.txt" | tail -1
# A lent GPU sends back at most 8 files from $OUT: the secondary logs travel as one archive.
(cd "$OUT" && logs=$(ls build.log info.txt tests.xml bench_*.txt 2>/dev/null || true) \
    && { [ -z "$logs" ] || tar czf logs.tgz --remove-files $logs; })
echo "gpu_suite (${stages[*]}): tests rc=$test_rc, overall $([ $status -eq 0 ] && echo OK || echo FAILED) in ${SECONDS}s; files in $OUT"
exit $status
