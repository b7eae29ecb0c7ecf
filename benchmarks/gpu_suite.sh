#!/usr/bin/env bash
# One command for a GPU machine with no network, where torch, triton, pytest and pytest-benchmark
# are preinstalled (soundfile may be missing): build, run every CUDA/Triton test on the GPU (none
# allowed to skip for want of a backend), benchmark a compact selection, summarize.
#
#   bash benchmarks/gpu_suite.sh [report] [tests] [bench]     (default: all three, in that order)
#   bash benchmarks/gpu_suite.sh plan                         (any machine: what each stage selects)
#
# The build always runs first (except for `plan`). A lent GPU takes one command of at most 10
# minutes and this suite is sized for 8 with a minute to spare: a deadline of
# FASTCODEC_SUITE_SECONDS (default 420) and per-stage budgets (BUDGETS below) that add up to it;
# each stage gets at most its own budget and what is left, a stage cut short is reported as such,
# and the summary always runs. If it does not fit, run `... report tests`, then `... bench`.
# The CPU paths are CI's job (.ci/run); here the tests are those with a CUDA target (-k cuda:
# the kernels on CUDA tensors, 16-bit searches, the whole model per GPU backend, autocast,
# inductor; FASTCODEC_SUITE_K="" runs them all), and the benchmarks the compact selection
# (FASTCODEC_BENCH_COMPACT=1: nine conv layers, fp32 with TF32 off and on, bf16, the RVQ
# shapes, one training step).
# Writes under $OUT when it is set (at most 8 files: the device tool's limit): kernel_report.json/.md,
# tests.txt, bench_*.json, summary.md, and logs.tgz with the rest. The last lines are the summary.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
status=0
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(report tests bench)
deadline=$((SECONDS + ${FASTCODEC_SUITE_SECONDS:-420}))
# Seconds per stage: they add up to the default deadline less the summary's few seconds.
declare -A BUDGETS=([build]=120 [report]=45 [tests]=150 [bench]=95)
# Only the GPU at hand: sm_90 alone halves the CUDA compile (the default builds sm_80 and sm_90).
export FASTCODEC_CUDA_ARCHS=${FASTCODEC_CUDA_ARCHS:-90}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
PY=${PYTHON:-python3}

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

if wants plan; then
    # What each stage selects and the budget it has, on any machine (the GPU's selection is
    # collected as on a GPU: FASTCODEC_BENCH_PLAN=gpu); the suite itself prints each stage's time.
    count() { "$PY" -m pytest "$@" --collect-only -q -p no:cacheprovider 2>/dev/null | tail -1 | grep -oE '^[0-9]+'; }
    tests=$(count tests -k "${FASTCODEC_SUITE_K-cuda}")
    launches=$(env -u TRITON_INTERPRET "$PY" -c "from fastcodec.dev import kernel_report as k
print(len(k._distinct(k.triton_launches(), 90)))" 2>/dev/null)
    benches=0
    for suite in bench_conv bench_rvq bench_train; do
        n=$(FASTCODEC_BENCH_COMPACT=1 FASTCODEC_BENCH_PLAN=gpu count "benchmarks/$suite.py")
        echo "bench $suite: ${n:-?} cases"
        benches=$((benches + ${n:-0}))
    done
    total=0
    for stage in build report tests bench; do total=$((total + BUDGETS[$stage])); done
    printf '%-8s %-58s %s\n' stage selection budget
    printf '%-8s %-58s %ss\n' build "fastcodec, sm_${FASTCODEC_CUDA_ARCHS} only, $MAX_JOBS jobs" "${BUDGETS[build]}"
    printf '%-8s %-58s %ss\n' report "${launches:-?} Triton launches (one process per core) + C++ SASS" "${BUDGETS[report]}"
    printf '%-8s %-58s %ss\n' tests "${tests:-?} tests (-k ${FASTCODEC_SUITE_K-cuda})" "${BUDGETS[tests]}"
    printf '%-8s %-58s %ss\n' bench "$benches compact cases (FASTCODEC_BENCH_SECONDS=0.2 each)" "${BUDGETS[bench]}"
    echo "budgets add up to ${total}s of the ${FASTCODEC_SUITE_SECONDS:-420}s deadline (8 minutes less one to spare: 420s)"
    [ "$total" -le "${FASTCODEC_SUITE_SECONDS:-420}" ] || { echo "PLAN DOES NOT FIT"; exit 1; }
    exit 0
fi

echo "== build (sm_${FASTCODEC_CUDA_ARCHS}, $MAX_JOBS jobs)"
if ! timed build "$(budget "${BUDGETS[build]}")" "$PY" -m pip install --no-build-isolation --no-deps -e . \
        >"$OUT/build.log" 2>&1; then
    tail -40 "$OUT/build.log"
    echo "BUILD FAILED or cut short (log: $OUT/build.log)"
    exit 1
fi
echo "build took ${SECONDS}s"
"$PY" -m fastcodec info | tee "$OUT/info.txt"

if wants report; then
    echo "== kernel report (sm_90 SASS, predicted floors)"
    start=$SECONDS
    timed report "$(budget "${BUDGETS[report]}")" "$PY" -m fastcodec.dev.kernel_report --check \
        --json "$OUT/kernel_report.json" --markdown >"$OUT/kernel_report.md" 2>&1
    tail -1 "$OUT/kernel_report.md"
    echo "report took $((SECONDS - start))s"
fi

test_rc=-
if wants tests; then
    echo "== tests (CUDA targets)"
    start=$SECONDS
    timed tests "$(budget "${BUDGETS[tests]}")" env FASTCODEC_REQUIRE=cpp,cuda,triton "$PY" -m pytest tests -q -rs \
        -p no:cacheprovider -k "${FASTCODEC_SUITE_K-cuda}" --junitxml "$OUT/tests.xml" >"$OUT/tests.txt" 2>&1
    test_rc=$?
    tail -40 "$OUT/tests.txt"
    echo "tests took $((SECONDS - start))s"
fi

if wants bench; then
    echo "== benchmarks (compact selection)"
    start=$SECONDS
    bench_end=$((SECONDS + $(budget "${BUDGETS[bench]}")))
    for suite in bench_rvq bench_conv bench_train; do
        left=$((bench_end - SECONDS))
        timed "$suite" "$left" env FASTCODEC_BENCH_COMPACT=1 FASTCODEC_BENCH_SECONDS=${FASTCODEC_BENCH_SECONDS:-0.2} \
            "$PY" -m pytest "benchmarks/$suite.py" -q -p no:cacheprovider \
            --benchmark-json "$OUT/$suite.json" --benchmark-columns=median,iqr,rounds --benchmark-sort=name \
            >"$OUT/$suite.txt" 2>&1
        tail -3 "$OUT/$suite.txt"
    done
    echo "benchmarks took $((SECONDS - start))s"
fi

echo "== summary"
benches=("$OUT"/bench_*.json)
if [ -e "${benches[0]}" ]; then
    report=()
    [ -s "$OUT/kernel_report.json" ] && report=(--report "$OUT/kernel_report.json")
    "$PY" benchmarks/summarize.py "${benches[@]}" "${report[@]}" --markdown >"$OUT/summary.md" 2>&1 || status=1
    "$PY" benchmarks/summarize.py "${benches[@]}" "${report[@]}" | tail -60
fi
[ -f "$OUT/tests.txt" ] && grep -E "passed|failed" "$OUT/tests.txt" | tail -1
# A lent GPU sends back at most 8 files from $OUT: the secondary logs travel as one archive.
(cd "$OUT" && logs=$(ls build.log info.txt tests.xml bench_*.txt 2>/dev/null || true) \
    && { [ -z "$logs" ] || tar czf logs.tgz --remove-files $logs; })
echo "gpu_suite (${stages[*]}): tests rc=$test_rc, overall $([ $status -eq 0 ] && echo OK || echo FAILED) in ${SECONDS}s; files in $OUT"
exit $status
