#!/usr/bin/env bash
# Installs what actnn needs (Debian packages; the venv of PyPI's torch 2.x),
# builds it and runs every test, in both configurations:
#  1. against Debian's LibTorch 1.13 (build/): the GoogleTest suites, the
#     examples, the lit suite and the Python tests, all through ctest; then
#     the lit suite and the runtime's unit tests again under AddressSanitizer
#     + UBSan (scripts/sanitize.sh, build-sanitize/), and the libFuzzer
#     targets for a bounded time (scripts/fuzz.sh, build-fuzz/, clang);
#  2. against the LibTorch inside PyPI's torch 2.x (build-torch2/, from
#     install-deps' venv): the same ctest suite, the Python tests under that
#     torch; then `pip install --no-build-isolation .` into that venv and a
#     few training steps of the installed package, outside the checkout.
# Usage: bash scripts/test.sh   (BUILD_DIR=... to build elsewhere;
# ACTNN_SKIP_TORCH2=1 runs the first configuration only, ACTNN_SKIP_SANITIZE=1
# leaves out the sanitizer run, ACTNN_SKIP_FUZZ=1 the fuzzers;
# ACTNN_FUZZ_SECONDS sets their time per target, 60 s by default)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja
cmake --build "$BUILD_DIR"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)"

# The lit suite and the runtime's unit tests under AddressSanitizer + UBSan.
if [ "${ACTNN_SKIP_SANITIZE:-0}" != "1" ]; then bash scripts/sanitize.sh; fi
# The fuzz targets: their seeds and past findings once, then a bounded run.
if [ "${ACTNN_SKIP_FUZZ:-0}" != "1" ]; then bash scripts/fuzz.sh; fi

if [ "${ACTNN_SKIP_TORCH2:-0}" = "1" ]; then exit 0; fi
TORCH2_VENV=${ACTNN_TORCH2_VENV:-$HOME/.cache/actnn/torch2-venv}
TORCH2_PYTHON="$TORCH2_VENV/bin/python3"
echo "test: torch $("$TORCH2_PYTHON" -c 'import torch; print(torch.__version__)') from $TORCH2_VENV"
cmake -S . -B "$BUILD_DIR-torch2" -G Ninja -DACTNN_TORCH=python -DACTNN_PYTHON="$TORCH2_PYTHON"
cmake --build "$BUILD_DIR-torch2"
ctest --test-dir "$BUILD_DIR-torch2" --output-on-failure -j "$(nproc)"
# CC/CXX as the builds above use them: scikit-build-core otherwise takes
# Python's sysconfig compiler (x86_64-linux-gnu-g++), which ccache hashes as
# another compiler, so a cold cache compiled everything a third time.
CC=cc CXX=c++ "$TORCH2_VENV/bin/pip" install -q --no-build-isolation .
(cd "${TMPDIR:-/tmp}" && "$TORCH2_PYTHON" "$OLDPWD/tests/python/installed_package.py")
