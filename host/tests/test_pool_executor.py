"""The process-pool executor end to end (``ttabench run --jobs N``): every cell and the
leaderboard written, by the pool, with the numbers of a direct execution. What every backend
shares (retries, failed records, a dead worker, resume) is in test_executors.py."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from executor_kit import PLUGINS, direct_results, make_spec, results

from ttabench.cli import main
from ttabench.runner.benchmark import Benchmark
from ttabench.records import read_cell


@pytest.mark.slow
def test_cli_run_with_two_jobs_writes_every_cell_and_the_leaderboard(tmp_path, spawned_workers_env):
    out = tmp_path / "run"
    (tmp_path / "none.toml").write_text("")
    args = [arg for plugin in PLUGINS for arg in ("--plugin", plugin)]
    args += ["run", "--suite", "tiny", "--model", "tiny-cnn", "-a", "noisy",
             "-e", "recording-static,recording-trajectory",
             "--set", "suite.tiny.n_examples=128",
             "--set", "estimator.recording-trajectory.probe_size=64",
             "--set", "estimator.recording-trajectory.checkpoints=[0, 4]",
             "--threads", "1", "--jobs", "2", "--output", str(out), "--n-boot", "20",
             "--config", str(tmp_path / "none.toml")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "6 cells planned, 6 to run" in result.output
    assert "cells (2 processes)" in result.output  # the pool ran them, not the local loop
    cells = [read_cell(p) for p in sorted((out / "cells").glob("*.json"))]
    assert len(cells) == 6 and all(c.status == "ok" for c in cells)
    assert (out / "leaderboard.csv").exists()
    assert json.loads((out / "run.json").read_text())["ran"] == {"ok": 6, "failed": 0}
    # the same cells, executed directly in this process, give the same numbers
    bench = Benchmark(make_spec())
    plans = bench.plan()
    assert {p.key for p in plans} == {c.key for c in cells}
    assert results(cells) == direct_results(bench, plans)
