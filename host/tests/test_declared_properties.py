"""The host reads the plugin properties its contracts declare (with their defaults), never an
undeclared attribute: a third-party plugin that sets them is heard, one that does not gets the
default."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from ttabench import registry
from ttabench.api import Calibration, EstimateResult, Outputs, StaticEstimator
from ttabench.cli import main
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.suites.tiny import TinySuite

CALIBRATION = Calibration(id="acme-cal-7", estimator="calibrated", input="value",
                          coefficients=[1.0, 0.0], target="source",
                          fitted_for={"model": "tiny-cnn:0"})


class Calibrated(StaticEstimator):
    """A score estimator that applies its own map (``Estimator.calibration``)."""

    name = "calibrated"
    kind = "score"
    calibration = CALIBRATION

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        value = float(target.logits.softmax(1).max(1).values.mean())
        return EstimateResult(value=value, estimate=float(CALIBRATION(value)))


class SkippingTiny(TinySuite):
    """The tiny suite claiming 3 unreadable files in every split it was asked for."""

    name = "skipping-tiny"

    def __init__(self, data_dir: Any = None, **options: Any) -> None:
        super().__init__(data_dir, **options)
        self.asked: list[str] = []

    def dataset(self, split):
        self.asked.append(split.name)
        return super().dataset(split)

    @property
    def skipped_files(self) -> dict[str, int]:
        return {name: 3 for name in self.asked}


@pytest.fixture(autouse=True)
def plugins():
    registry.add_plugin("estimators", f"{__name__}:Calibrated")
    registry.add_plugin("suites", f"{__name__}:SkippingTiny")
    yield


def dry_run(estimator: str) -> str:
    result = CliRunner().invoke(main, ["run", "-s", "tiny", "-m", "tiny-cnn", "-e", estimator,
                                       "--no-baselines", "--dry-run", "--set",
                                       "suite.tiny.n_examples=32"])
    assert result.exit_code == 0, result.output
    return next(line for line in result.output.splitlines()
                if line.startswith(f"estimator {estimator} "))


def test_dry_run_shows_a_declared_calibration_and_none_by_default():
    line = dry_run("calibrated")
    assert ("; calibration acme-cal-7 maps value to source accuracy, fitted for "
            "{'model': 'tiny-cnn:0'}") in line
    assert "calibration" not in dry_run("ac")  # Estimator.calibration defaults to None


def test_a_cell_records_the_suites_declared_skipped_files():
    assert TinySuite().skipped_files == {}  # the contract's default (Suite.skipped_files)
    for suite, expected in (("skipping-tiny", 3), ("tiny", 0)):
        spec = RunSpec(suite=suite, model="tiny-cnn", adapters=["source"], estimators=["ac"],
                       suite_options={"n_examples": 32}, device="cpu", splits=["noise-1"],
                       batch_size=16, steps=2, threads=1)
        bench = Benchmark(spec)
        cell = bench.execute(bench.plan()[0])
        assert cell.status == "ok" and cell.data["skipped_files"] == expected
