#!/usr/bin/env bash
# Installs every Debian package actnn needs to build, test and run its examples.
# Idempotent: packages already present are left alone, apt-get update runs only
# when something is missing. Extra packages can be named as arguments (the
# benchmark plot script adds gnuplot-nox).
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libonnx-dev libprotobuf-dev protobuf-compiler
  libgtest-dev llvm-14-tools zlib1g-dev
  python3-torch python3-torchvision
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
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
