#!/usr/bin/env bash
# The test command: installs what the tests need (idempotent), then runs them all.
# The parity tests compare against PyTorch/torchvision in .deps/reference.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh --test
cargo test --workspace "$@"
