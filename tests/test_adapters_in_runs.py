"""``ttabench run -a sar -a cotta``: a plugin adapter and a host built-in side by side, one
cell each, with their resolved parameters (the dataset family of the authors' hyper-parameters
among them) and counters recorded and the adapted accuracy scored. (Every registered adapter
passes the conformance kit; this checks the run.)"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ttabench import registry
from ttabench.cli import main
from ttabench.records import read_cell


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    yield


def test_ttabench_run_with_sar_and_cotta(tmp_path, config):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "run", "-s", "tiny", "-m", "tiny-cnn", "--set", "suite.tiny.n_examples=64",
        "-e", "recording-trajectory", "--set", "estimator.recording-trajectory.probe_size=32",
        "--set", "estimator.recording-trajectory.checkpoints=[0, 3]", "-a", "sar", "-a", "cotta",
        "--set", "adapter.cotta.n_augmentations=2", "--splits", "noise-3", "--batch-size", "16",
        "--n-boot", "10", "-j", "1", "--config", str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    cells = {cell.adapter: cell for cell in map(read_cell, (out / "cells").glob("*.json"))}
    assert sorted(cells) == ["cotta", "sar"]
    for name, cell in cells.items():
        assert cell.status == "ok", (name, cell.error)
        assert 0.0 <= cell.targets["adapted"] <= 1.0
        assert cell.adaptation["adapter_counters"]["steps"] == 3
        params = cell.adaptation["adapter_params"]
        assert (params["num_classes"], params["family"]) == (4, "cifar10"), name
    assert cells["cotta"].adaptation["adapter_params"]["n_augmentations"] == 2
    assert cells["cotta"].adaptation["adapter_params"]["optimizer"]["method"] == "Adam"
    assert cells["sar"].adaptation["adapter_params"]["lr"] == 0.001
