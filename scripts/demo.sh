#!/usr/bin/env bash
# Installs what actnn needs, builds it and runs the main job. Today that is
# the compression-kernel benchmark: quantize / dequantize throughput at 1, 2,
# 4 and 8 bits against plain copy bandwidth, as JSON lines, followed by the
# bundled example that compresses one activation at each width.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja
cmake --build "$BUILD_DIR" --target actnn-bench compress_activation
"$BUILD_DIR/bin/actnn-bench" kernels "$@"
"$BUILD_DIR/bin/compress_activation"
