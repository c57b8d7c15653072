#!/usr/bin/env bash
# The paper protocol over every Table-1 dataset found under DATA (benchmarks/paper_protocol.py
# says what it runs). Usage: bash benchmarks/paper_protocol.sh /data [--shipped-f] [--dry-run]
set -euo pipefail
DATA=${1:?usage: paper_protocol.sh DATA_DIR [options of benchmarks/paper_protocol.py]}
shift
exec .venv/bin/python benchmarks/paper_protocol.py "$DATA" "$@"
