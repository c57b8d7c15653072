"""A calibration records the precision its scores were computed in; a run in another precision
is refused before any work unless the calibration is forced (like one fitted for another
model). The shipped rn50-v1 maps were fitted on fp32 scores."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from cell_builders import make_cell, trajectory

import ttabench.runner.benchmark as benchmark
from ttabench.calibration import SCHEMA
from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.scoring.maps import protocol_facts
from ttabench_enigma import WeightedFlips
from ttabench_enigma.calibrations import load_calibration


def calibration_file(tmp_path: Path, precision: str) -> Path:
    path = tmp_path / f"cal-{precision}.json"
    path.write_text(json.dumps({
        "schema": SCHEMA, "id": f"tiny-{precision}", "estimator": "enigma",
        "input": "weighted_flips", "degree": 1, "coefficients": [-0.01, 0.9],
        "output": "fraction", "target": "bn",
        "fitted_for": {"model": "tiny-cnn:0", "steps": 5, "probe_size": 64, "num_classes": 4,
                       "precision": precision},
        "provenance": "hand-written for this test"}))
    return path


def spec(calibration: Path, precision: str, force: bool = False) -> RunSpec:
    return RunSpec(suite="tiny", model="tiny-cnn", adapters=["rdumb"], estimators=["enigma"],
                   estimator_params={"enigma": {
                       "probe_size": 64, "checkpoints": [0, 5], "calibration": str(calibration),
                       "force_calibration": force}},
                   device="cpu", threads=1, precision=precision)


@pytest.fixture()
def bf16_on_the_cpu(monkeypatch):
    monkeypatch.setattr(benchmark, "check_compute_options", lambda *args: None)


def test_a_calibration_of_another_precision_is_refused_before_any_work(tmp_path, bf16_on_the_cpu):
    fp32_map = calibration_file(tmp_path, "fp32")
    with pytest.raises(TTABenchError, match="fitted for precision='fp32' but this run has "
                                            "precision='bf16'"):
        Benchmark(spec(fp32_map, "bf16"))
    Benchmark(spec(fp32_map, "fp32"))
    Benchmark(spec(fp32_map, "bf16", force=True))
    Benchmark(spec(calibration_file(tmp_path, "bf16"), "bf16"))


def test_the_shipped_maps_are_refused_for_bf16_scores():
    est = WeightedFlips(calibration="rn50-v1-wf-quadratic")
    facts = {"model": "torchvision:resnet50/IMAGENET1K_V1", "num_classes": 1000}
    est.check_calibration({**facts, "precision": "fp32"})
    with pytest.raises(TTABenchError, match="precision"):
        est.check_calibration({**facts, "precision": "bf16"})
    assert load_calibration("rn50-v1-wf-quadratic").fitted_for["precision"] == "fp32"


def test_a_fitted_map_records_the_precision_of_its_cells():
    def cell(name: str, precision: str):
        record = trajectory("score", 3.0, params={"estimate_at": 5, "probe_size": 64})
        made = make_cell(name, "shift", 1, "calibration", {"bn": 0.5}, {"enigma": record})
        return replace(made, protocol={"compute": {"precision": precision}})

    assert protocol_facts([cell("a", "bf16"), cell("b", "bf16")], "enigma")["precision"] == "bf16"
    assert protocol_facts([cell("a", "fp32")], "enigma")["precision"] == "fp32"
    with pytest.raises(TTABenchError, match="disagree on precision"):
        protocol_facts([cell("a", "bf16"), cell("b", "fp32")], "enigma")
