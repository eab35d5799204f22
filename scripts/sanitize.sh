#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run (issue 19): builds
# build-sanitize against Debian's LibTorch with -DACTNN_SANITIZE=ON (our code
# instrumented, LibTorch not, CUDA off) and runs the lit suite — every tool,
# and every crashing or hostile input found so far (tests/lit/actnn-opt:
# validate, output, archives; tests/lit/onnx: the import and training-graph
# errors) — and the runtime's unit tests under it. Any report fails the run.
#
#   bash scripts/sanitize.sh        (after scripts/install-deps.sh)
#
# ASAN_OPTIONS: leaks are not checked (LibTorch's registries live until exit
# by design); container-overflow is off (std::vector annotations differ
# between our instrumented code and uninstrumented LibTorch, which reports
# false positives). Every process gets the ASan runtime through LD_PRELOAD,
# since it must come first in those (python3) that load our libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${SANITIZE_BUILD_DIR:-build-sanitize}
cmake -S . -B "$BUILD_DIR" -G Ninja -DACTNN_SANITIZE=ON
# The sanitizer build carries line tables (-g1), so ccache would hash the
# build folder and a clone elsewhere would compile everything again.
export CCACHE_NOHASHDIR=1
# What the lit suite and the unit tests run, not the whole tree (the compiler
# tests, examples and Python bindings would add a third of the build).
cmake --build "$BUILD_DIR" --target actnn-opt actnn-bench actnn_runtime actnn_unit_tests
export ASAN_OPTIONS=detect_leaks=0:detect_container_overflow=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# libstdc++ too: in a process whose executable does not link it (python3),
# ASan's __cxa_throw interceptor otherwise finds no real __cxa_throw when
# LibTorch throws.
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
export LD_PRELOAD
"$BUILD_DIR/bin/actnn_unit_tests" --gtest_brief=1
ctest --test-dir "$BUILD_DIR" --output-on-failure -R '^lit$'
