"""The process-pool executor (``ttabench run --jobs N``): the same cells as a sequential run;
a failing cell retried then recorded while the others finish; a dead worker process recovered
by rebuilding the pool; the CLI end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ttabench import registry
from ttabench.cli import main
from ttabench.runner.benchmark import Benchmark, RunSpec, collect_cells, run_local
from ttabench.runner.cells import read_cell
from ttabench.runner.pool import run_pool

PLUGINS = ["adapters=ttabench_test_plugins:NoisyAdapter",
           "estimators=ttabench_test_plugins:RecordingTrajectory",
           "estimators=ttabench_test_plugins:RecordingStatic",
           "suites=ttabench_test_plugins:FailingTiny"]


@pytest.fixture(scope="module", autouse=True)
def worker_environment(spawned_workers_env):
    """Spawned workers import the test plugins by module name and run one thread each."""
    for plugin in PLUGINS:
        registry.add_plugin_spec(plugin)
    yield


def make_spec(**kw) -> RunSpec:
    base = dict(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                estimators=["recording-static", "recording-trajectory"],
                suite_options={"n_examples": 128}, device="cpu", plugins=PLUGINS, threads=1,
                estimator_params={"recording-trajectory": {"probe_size": 64, "checkpoints": [0, 4]}})
    base.update(kw)
    return RunSpec(**base)


def results(cells: list[dict]) -> dict[str, tuple]:
    """What must be identical across executors: per key, status, targets, estimator outputs."""
    return {c["key"]: (c["status"], c["targets"],
                       {k: (v["result"], v["views"]) for k, v in c["estimators"].items()})
            for c in cells}


@pytest.mark.slow
def test_pool_matches_sequential_run_retries_failing_cell_and_recovers_dead_worker(tmp_path):
    marker = tmp_path / "killed-once"
    spec = make_spec(suite="failing-tiny",
                     suite_options={"n_examples": 128, "crash_split": "noise-2",
                                    "fail_split": "shift-1", "marker": str(marker)})
    bench = Benchmark(spec)
    plans = bench.plan()
    counts = run_pool(bench, spec, plans, tmp_path / "out", jobs=2, retries=2, progress=False)
    assert marker.exists()  # the worker running noise-2 really died once
    assert counts == {"ok": len(plans) - 1, "failed": 1}
    cells = {c["split"]["name"]: c for c in collect_cells(tmp_path / "out", plans)}
    assert len(cells) == len(plans)
    assert cells["noise-2"]["status"] == "ok"
    failed = cells["shift-1"]
    assert failed["status"] == "failed" and failed["attempts"] == 3
    # the same one-line error as a sequential run records, not the pool's plumbing
    run_local(bench, [p for p in plans if p.split.name == "shift-1"], tmp_path / "seq", progress=False)
    sequential = collect_cells(tmp_path / "seq", plans)
    assert "injected failure" in failed["error"] and failed["error"] == sequential[0]["error"]
    # every finished cell, the recovered one included, has exactly the numbers of a sequential
    # run (the marker exists now, so this process does not die)
    ok = [p for p in plans if p.split.name != "shift-1"]
    run_local(bench, ok, tmp_path / "local", progress=False)
    local = results(collect_cells(tmp_path / "local", ok))
    pooled = results(collect_cells(tmp_path / "out", ok))
    assert len(local) == len(ok) == 5 and all(v[0] == "ok" for v in local.values())
    # the trajectories really moved and the numbers differ between splits, so a pool that
    # mixed up cells or seeds could not match
    assert len({est["recording-trajectory"][0]["value"] for _, _, est in local.values()}) > 1
    assert pooled == local


@pytest.mark.slow
def test_cli_run_with_two_jobs_writes_every_cell_and_the_leaderboard(tmp_path):
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
    assert len(cells) == 6 and all(c["status"] == "ok" for c in cells)
    assert (out / "leaderboard.csv").exists()
    assert json.loads((out / "run.json").read_text())["ran"] == {"ok": 6, "failed": 0}
    # the same cells, run sequentially in this process, give the same numbers
    bench = Benchmark(make_spec())
    plans = bench.plan()
    assert {p.key for p in plans} == {c["key"] for c in cells}
    run_local(bench, plans, tmp_path / "local", progress=False)
    assert results(cells) == results(collect_cells(tmp_path / "local", plans))
