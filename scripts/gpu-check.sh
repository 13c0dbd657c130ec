#!/usr/bin/env bash
# GPU parity and benchmark, for a lent GPU machine (torch 2.11 + torchvision in its
# python3, no network, no cargo there).
#
#   scripts/gpu-check.sh build    here: builds the `cuda` binaries into target/gpu-check/
#   scripts/gpu-check.sh run      there, from the repo root, with target/gpu-check carried:
#                                 a render on cuda:0, then the engine benchmark at 512 px
#                                 on cuda:0 beside PyTorch on the same GPU (the last
#                                 column of its table is the parity check: the relative
#                                 difference of the final loss)
#
# The binaries find libtorch through LD_LIBRARY_PATH, pointed at the machine's own torch.
# Results go to $OUT (or target/gpu-check/out); copy the table into BENCHMARKS.md with
# the card it ran on.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
build)
  scripts/setup.sh
  cargo build --release -p pastiche-cli --features cuda
  bench=$(cargo bench -p pastiche-engine --features cuda --bench iteration --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "iteration" and m.get("executable"):
        print(m["executable"])')
  mkdir -p target/gpu-check
  cp target/release/pastiche target/gpu-check/pastiche
  cp "$bench" target/gpu-check/iteration
  # Leave the CPU build in place for everything else.
  cargo build --release -p pastiche-cli
  du -sh target/gpu-check
  ;;
run)
  out=${OUT:-target/gpu-check/out}
  mkdir -p "$out"
  torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
  export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export PASTICHE_REPO_ROOT=$PWD PASTICHE_REFERENCE_PYTHON=$(command -v python3)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
  python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)' | tee -a "$out/gpu.txt"
  target/gpu-check/pastiche render --content examples/chelsea.png --style examples/starry_night.jpg \
    --out "$out/pastiche-512.png" --losses "$out/losses-512.csv" --size 512 --iterations 100 \
    --device cuda:0 --log-format json 2>&1 | tail -n 3 | tee "$out/render.log"
  target/gpu-check/iteration --device cuda:0 --sizes 512 --no-write | tee "$out/bench.md"
  ;;
*)
  echo "usage: scripts/gpu-check.sh build|run" >&2
  exit 2
  ;;
esac
