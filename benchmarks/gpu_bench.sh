#!/usr/bin/env bash
# GPU throughput figures (benchmarks/gpu_bench.py); under 8 minutes on one GPU.
# Refuses with one line (exit 2) where no CUDA device is available.
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout 480 .venv/bin/python benchmarks/gpu_bench.py "$@"
