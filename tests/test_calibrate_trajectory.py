"""``ttabench calibrate`` with a trajectory estimator (Weighted Flips), and ``estimate`` with
its calibration: the protocol of the file (adapter, lr, probe, checkpoints) is repeated, the
estimate is the stored map of the WF score of the same trajectory over the images held in
memory, and the interval adapts once on each resample of the images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import TensorDataset

from ttabench import registry
from ttabench.cli import main
from ttabench.models.tiny import load_tiny_cnn
from ttabench.runner.command import FolderSuite
from ttabench.runner.execute import CellInputs, run_cell
from ttabench.suites.tiny import make_images

SMALL = ["--set", "estimator.enigma.probe_size=32", "--set",
         "estimator.enigma.checkpoints=[0, 5]", "--set", "adapter.rdumb.lr=0.5"]


def save(root: Path, images: torch.Tensor, folders: list[str]) -> None:
    for i, (image, folder) in enumerate(zip(images, folders)):
        path = root / folder / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


def wf_score(images: torch.Tensor, seed: int) -> float:
    suite = FolderSuite(TensorDataset(images, torch.full((len(images),), -1)), 4, "memory")
    out = run_cell(CellInputs(
        suite=suite, split=suite.splits()[0], model=load_tiny_cnn(),
        adapter_cls=registry.get("adapters", "rdumb"), adapter_params={"lr": 0.5},
        estimators={"enigma": registry.get("estimators", "enigma")(
            probe_size=32, checkpoints=[0, 5])},
        seed=seed, batch_size=64, steps=0, device=torch.device("cpu"), labelled=False))
    return out.results["enigma"].value


def test_a_trajectory_estimator_is_calibrated_and_estimated_with_its_protocol(tmp_path):
    images, labels = make_images(120, seed=5)
    save(tmp_path / "labelled", images, [str(int(y)) for y in labels])
    unlabelled, _ = make_images(80, seed=12, noise=100.0)
    save(tmp_path / "unlabelled", unlabelled, ["."] * 80)
    (tmp_path / "none.toml").write_text("")
    output = tmp_path / "cal.json"
    result = CliRunner().invoke(main, [
        "calibrate", "-m", "tiny-cnn", "--labelled", str(tmp_path / "labelled"), "-e", "enigma",
        "--no-baselines", "--config", str(tmp_path / "none.toml"), *SMALL, "--families",
        "clean,rotate,scale", "--sets-per-family", "2", "--set-size", "64", "--map-kinds",
        "lin,iso", "--jobs", "1", "--threads", "1", "--cells", str(tmp_path / "cells"), "-o",
        str(output)])
    assert result.exit_code == 0, result.output
    data = json.loads(output.read_text())
    assert data["protocol"]["adapter"] == "rdumb"
    assert data["protocol"]["adapter_params"] == {"lr": 0.5}
    assert data["protocol"]["estimator_params"]["enigma"]["probe_size"] == 32
    assert {e["name"] for e in data["entries"]} == {"enigma (lin)", "enigma (iso)"}
    result = CliRunner().invoke(main, [
        "estimate", "--calibration", str(output), "--data", str(tmp_path / "unlabelled"),
        "--bootstrap", "2", "--boot-seed", "4", "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    entry = next(e for e in data["entries"] if e["name"] == data["chosen"])
    assert report["entry"] == data["chosen"] and report["trajectory"]

    def mapped(score: float) -> float:
        m = entry["map"]
        if m["kind"] == "iso":
            return float(np.interp(score, m["knots_x"], m["knots_y"]))
        return float(np.clip(np.polyval(m["coefficients"], score), 0, 1))

    score = wf_score(unlabelled, 0)
    assert report["score"] == score
    assert report["estimate"] == pytest.approx(mapped(score), abs=1e-12)
    rows = np.random.default_rng(4).integers(0, 80, (2, 80))
    replicates = [mapped(wf_score(unlabelled[torch.as_tensor(r)], 1 + b))
                  for b, r in enumerate(rows)]
    assert report["replicates"] == pytest.approx(replicates, abs=1e-12)
    half = 1.959963984540054 * float(np.std(replicates, ddof=1))
    a, q = report["estimate"], entry["error_q95"]
    assert report["interval"] == pytest.approx(
        [max(0.0, a - math.hypot(half, q)), min(1.0, a + math.hypot(half, q))], abs=1e-12)
