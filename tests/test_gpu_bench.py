"""benchmarks/gpu_bench.py: it refuses cleanly without CUDA, and its whole path (the model
loaded through the registry, the model figures, whole cells, the files) runs on the CPU with a
tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_bench  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the bench runs")
def test_refuses_without_cuda_in_one_line():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: ")


def test_measure_on_cpu_with_a_tiny_model():
    from ttabench.models.tiny import load_tiny_cnn

    figures = gpu_bench.measure(load_tiny_cnn().module, torch.device("cpu"), batch=4, size=16,
                                iters=1, warmup=0, repeats=1)
    tags = ["fp32", "bf16", "fp32 channels_last", "bf16 channels_last"]
    names = ["source pass", "bn pass", "bare fwd+bwd step", "RDumb step"]
    assert set(figures) == {f"{n} [{t}] images/s" for n in names for t in tags} | {
        f"WF overhead ratio [{t}]" for t in tags}
    assert all(v > 0 for v in figures.values())
    assert all(figures[f"WF overhead ratio [{t}]"] > 1 for t in tags)


def test_the_whole_bench_runs_on_the_cpu(tmp_path):
    assert gpu_bench.main(["--device", "cpu", "--model", "tiny-cnn", "--batch", "4", "--size",
                           "16", "--iters", "1", "--repeats", "1", "--cell-steps", "2",
                           "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    figures = result["figures"]
    assert figures["whole-cell adaptation step ms [fp32]"] > 0
    assert figures["whole-cell source+bn pass ms per image [fp32]"] > 0
    assert figures["RDumb step [fp32] images/s"] > 0
    assert result["model"] == "tiny-cnn" and result["device_facts"] == {}
    assert "--model tiny-cnn" in (tmp_path / "gpu_bench.md").read_text()
