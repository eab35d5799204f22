#!/usr/bin/env bash
# libFuzzer run (issue 19): builds build-fuzz with clang-14 and
# -DACTNN_FUZZ=ON (our code with libFuzzer's coverage hooks, AddressSanitizer
# and UBSan; LibTorch and libonnx uninstrumented, CUDA off) and runs the four
# targets of tests/fuzz — graph text, ONNX binary, ONNX text, archives —
# each on actnn-opt's driver (tests/fuzz/opt_fuzz.cpp says what a finding is):
#  1. every seed of tests/fuzz/corpus/<kind> and every past finding of
#     tests/fuzz/regressions/<kind> once (a regression run);
#  2. fuzzing from the seeds for ACTNN_FUZZ_SECONDS (default 60) per target,
#     new inputs going to a temporary corpus, not the checkout; libFuzzer's
#     random seed is ACTNN_FUZZ_SEED (default 1, so that CI runs the same
#     mutations each time; 0 draws one).
# A finding fails the run; its input is kept as build-fuzz/findings/<kind>-*
# (add it to tests/fuzz/regressions/<kind> with the fix).
#
#   bash scripts/fuzz.sh                 (after scripts/install-deps.sh)
#   ACTNN_FUZZ_SECONDS=3600 ACTNN_FUZZ_SEED=0 bash scripts/fuzz.sh graph_text   (one target, longer)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_PER_TARGET=${ACTNN_FUZZ_SECONDS:-60}
KINDS=("$@")
[ "${#KINDS[@]}" -gt 0 ] || KINDS=(graph_text onnx onnx_text archive)
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -G Ninja -DACTNN_FUZZ=ON -DBUILD_TESTING=OFF
# -g1 puts the folder into the objects: without this ccache would compile
# everything again in a clone elsewhere.
export CCACHE_NOHASHDIR=1
cmake --build "$BUILD_DIR" --target "${KINDS[@]/#/actnn_fuzz_}"
export ASAN_OPTIONS=detect_leaks=0:detect_container_overflow=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# actnn-opt kills a reader child (LibTorch's parser or loader) after this
# many seconds: well inside libFuzzer's -timeout below.
export ACTNN_READ_SECONDS=10
mkdir -p "$BUILD_DIR/findings" "$BUILD_DIR/logs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Runs a fuzzer with its output in a log: the last lines when it passes,
# the report when it finds something.
run() {
  local log=$1
  shift
  if "$@" > "$log" 2>&1; then
    grep -E '^(INFO: seed corpus|#[0-9]+ *(INITED|DONE))|stat::(number_of_executed_units|peak_rss)' "$log" | tail -n 4 || true
  else
    tail -n 150 "$log"
    echo "fuzz: FINDING (whole log: $log; the input: $BUILD_DIR/findings/)"
    return 1
  fi
}
for kind in "${KINDS[@]}"; do
  fuzzer="$BUILD_DIR/bin/actnn_fuzz_$kind"
  dirs=(tests/fuzz/corpus/"$kind")
  [ -d tests/fuzz/regressions/"$kind" ] && dirs+=(tests/fuzz/regressions/"$kind")
  flags=(-seed="${ACTNN_FUZZ_SEED:-1}" -timeout=60 -rss_limit_mb=8192 -max_len=262144 -artifact_prefix="$BUILD_DIR/findings/$kind-"
         -print_final_stats=1)
  echo "fuzz: $kind: the seeds and past findings once"
  run "$BUILD_DIR/logs/$kind-seeds.log" "$fuzzer" "${flags[@]}" -runs=0 "${dirs[@]}"
  echo "fuzz: $kind: ${SECONDS_PER_TARGET} s from the seeds"
  mkdir -p "$work/$kind"
  run "$BUILD_DIR/logs/$kind.log" "$fuzzer" "${flags[@]}" -max_total_time="$SECONDS_PER_TARGET" "$work/$kind" "${dirs[@]}"
done
