#!/usr/bin/env bash
# The main job on the bundled example: installs what actnn needs, builds it,
# scripts the example model (a small ResNet for Fashion-MNIST, random
# weights), rewrites it so its saved activations are stored at ~2 bits
# (level L3), prints the activation memory that saves against plain LibTorch,
# and trains it on Fashion-MNIST beside the same model under plain LibTorch
# (same initial weights, same batches): both losses, both test accuracies.
# Usage: bash scripts/demo.sh [--level=L3] [--steps=300] [--batch=128]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja
cmake --build "$BUILD_DIR" --target train_fashion_mnist actnn-opt
/usr/bin/python3 examples/fashion_mnist_model.py "$BUILD_DIR/examples/models"
"$BUILD_DIR/bin/train_fashion_mnist" "$BUILD_DIR/examples/models/fashion_resnet.pt" "$@"
