"""bf16 autocast must not freeze adaptation.

``torch.autocast`` caches the bf16 copy of every fp32 weight that requires grad until its
region ends; a region around the whole trajectory would hide every in-place update of a conv
or linear weight from the later forward passes (the probe would not drift as far). Checked on
the CPU (CPU autocast has the same weight cache) through ``run_cell``, with the GPU check's
adapter that moves every weight (``benchmarks/gpu_check.py``: ``probe_drift``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gpu_check import probe_drift  # noqa: E402


def test_bf16_adaptation_moves_the_probe_as_fp32_does():
    cpu = torch.device("cpu")
    fp32, bf16 = probe_drift(cpu, "fp32"), probe_drift(cpu, "bf16")
    assert fp32 > 0.05
    assert abs(bf16 - fp32) < 0.1 * fp32, (fp32, bf16)
