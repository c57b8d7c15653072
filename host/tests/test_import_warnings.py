"""A run prints no FutureWarning from importing timm (or torch.jit) on every invocation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_quietly(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "none.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return subprocess.run([sys.executable, "-m", "ttabench", "run", *args, "--config",
                           str(tmp_path / "none.toml"), "-o", str(tmp_path / "out"),
                           "--n-boot", "10", "-e", "ac"],
                          env=env, capture_output=True, text=True, timeout=600)


def test_a_run_prints_no_future_warning(tmp_path: Path) -> None:
    result = run_quietly(tmp_path, "-s", "tiny", "-m", "tiny-cnn",
                         "--set", "suite.tiny.n_examples=64", "--splits", "noise-1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FutureWarning" not in result.stderr, result.stderr[-2000:]


def test_a_timm_model_prints_no_future_warning(tmp_path: Path) -> None:
    result = run_quietly(tmp_path, "-s", "tiny", "-m", "timm:resnet10t?random",
                         "--set", "suite.tiny.n_examples=64", "--splits", "noise-1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FutureWarning" not in result.stderr and "jit" not in result.stderr
