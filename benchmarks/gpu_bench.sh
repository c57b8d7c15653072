#!/usr/bin/env bash
# GPU throughput figures (benchmarks/gpu_bench.py); under 8 minutes on one GPU.
# Refuses with one line (exit 2) where no CUDA device is available. Runs on a bare machine
# (python3 with torch): benchmarks/bare_env.sh installs the two projects offline when needed.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/bare_env.sh
ensure_packages
exec timeout 480 "$PYTHON" benchmarks/gpu_bench.py "$@"
