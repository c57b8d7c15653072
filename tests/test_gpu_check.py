"""The GPU check's CPU path runs in CI, so the prepared GPU check cannot rot: every step
passes on the CPU, or says it needs CUDA."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Steps that need CUDA: they say so on the CPU path.
GPU_ONLY = {"host-syncs"}


@pytest.mark.slow
def test_the_cpu_path_of_the_gpu_check_passes(tmp_path, spawned_workers_env):
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu",
                           str(tmp_path / "check")], capture_output=True, text=True,
                          timeout=1500)
    lines = (tmp_path / "check" / "summary.txt").read_text().splitlines()
    status = {line.split()[1].rstrip(":"): line.split()[0] for line in lines}
    assert list(status) == ["environment", "api-matrix", "bf16-drift", "host-syncs",
                            "image-folder", "jobs-2", "errors", "continual", "estimate",
                            "gpu-bench", "deterministic"], done.stdout[-2000:]
    for name, state in status.items():
        expected = "SKIP" if name in GPU_ONLY else "PASS"
        assert state == expected, next(line for line in lines if f" {name}:" in line)
    assert done.returncode == 0
    assert (tmp_path / "check" / "api-matrix.json").exists()
