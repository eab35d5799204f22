#!/usr/bin/env bash
# Installs every Debian package actnn needs to build, test and run its examples.
# Idempotent: packages already present are left alone, apt-get update runs only
# when something is missing. Extra packages can be named as arguments (the
# benchmark plot script adds gnuplot-nox).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libonnx-dev libprotobuf-dev protobuf-compiler
  libgtest-dev llvm-14-tools zlib1g-dev clang-14 libclang-rt-14-dev
  python3-torch python3-torchvision python3-venv python3-pip python3-pytest
  dataset-fashion-mnist libonnx-testdata
  "$@"
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ONNX Runtime's training artifacts for the ONNX training-graph tests come
# from PyPI's onnxruntime-training, in a venv of Debian's python3 (which sees
# python3-torch). Kept outside the checkout so clean clones reuse it. numpy<2:
# Debian's torch 1.13 was built against numpy 1.x.
ORT_VENV=${ACTNN_ORT_VENV:-$HOME/.cache/actnn/ort-venv}
if ! "$ORT_VENV/bin/python3" -c 'import onnxruntime.training, onnx' 2>/dev/null; then
  echo "install-deps: making $ORT_VENV with onnxruntime-training"
  mkdir -p "$(dirname "$ORT_VENV")"
  /usr/bin/python3 -m venv --system-site-packages "$ORT_VENV"
  "$ORT_VENV/bin/pip" install -q 'onnxruntime-training==1.19.2' 'onnx==1.16.2' 'numpy<2'
fi

# PyPI's newest torch and torchvision (a CUDA build: ~4 GB with its nvidia-*
# wheels; no GPU needed) for the second build, against LibTorch 2.x
# (scripts/test.sh), and the Python package under torch 2.x: pytest, and
# scikit-build-core and ninja for `pip install --no-build-isolation .`;
# transformers and timm for the transformer models' tests (configs only,
# random weights: nothing is downloaded from a model hub), onnx for their
# ONNX exports (torch.onnx.export needs it). A venv of Debian's
# python3 without its site packages (whose torch is 1.13), kept outside the
# checkout like the one above; an existing venv gets what it lacks.
TORCH2_VENV=${ACTNN_TORCH2_VENV:-$HOME/.cache/actnn/torch2-venv}
if ! "$TORCH2_VENV/bin/python3" -c 'import torch, torchvision, numpy, pytest, scikit_build_core, ninja, transformers, timm, onnx' 2>/dev/null; then
  echo "install-deps: making $TORCH2_VENV with PyPI's torch, torchvision, transformers, timm and onnx"
  mkdir -p "$(dirname "$TORCH2_VENV")"
  [ -x "$TORCH2_VENV/bin/pip" ] || /usr/bin/python3 -m venv "$TORCH2_VENV"
  "$TORCH2_VENV/bin/pip" install -q torch torchvision numpy pytest 'scikit-build-core>=0.10' ninja transformers timm onnx
fi
