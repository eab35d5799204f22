#!/usr/bin/env bash
# Installs what actnn needs (Debian packages), builds it and runs every test:
# the GoogleTest suites, the examples and the lit suite, all through ctest.
# Usage: bash scripts/test.sh   (BUILD_DIR=... to build elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja
cmake --build "$BUILD_DIR"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$(nproc)"
