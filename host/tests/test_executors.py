"""The one driver on every backend (in this process, a process pool, Ray): the same numbers as
executing the cells directly; a failing cell retried then recorded with the same one-line error
while the others finish; a dead worker process recovered; a rerun runs only unfinished cells.
And the worker side: a run is planned once per process."""

from __future__ import annotations

import dataclasses

import pytest
from executor_kit import (
    BACKENDS,
    direct_results,
    failing_spec,
    make_backend,
    make_spec,
    results,
)

from ttabench.errors import TTABenchError
from ttabench.runner import worker
from ttabench.runner.benchmark import Benchmark, collect_cells, pending_cells
from ttabench.runner.cells import cell_path, in_shard
from ttabench.runner.executor import run_cells
from ttabench.runner.views import describe_error


@pytest.fixture(params=BACKENDS)
def backend_name(request) -> str:
    """A backend's name, with what it needs: spawned workers import the test plugins by module
    name and run one thread; Ray runs in a two-CPU session."""
    if request.param == "pool":
        request.getfixturevalue("spawned_workers_env")
    if request.param == "ray":
        request.getfixturevalue("local_ray")
    return request.param


@pytest.fixture(scope="module")
def tiny_reference() -> dict[str, tuple]:
    """The six cells of ``make_spec`` executed directly, in this process."""
    bench = Benchmark(make_spec())
    return direct_results(bench, bench.plan())


@pytest.mark.slow
def test_every_backend_retries_then_records_the_failing_cell_and_matches_direct_execution(
        backend_name, tmp_path):
    apart = backend_name != "local"  # cells run in other processes: one of them may die
    marker = tmp_path / "killed-once"
    bench = Benchmark(failing_spec(fail_split="shift-1", crash_split="noise-2" if apart else "",
                                   marker=str(marker)))
    by_name = {p.split.name: p for p in bench.plan()}
    # the crashing cell first, the failing one last: in a pool, a worker's death fails every
    # cell in flight, so the failing cell's attempts must not overlap it (its recorded error
    # would then be the death's, rightly); they come after every other cell
    plans = [by_name.pop("noise-2"), *[p for n, p in by_name.items() if n != "shift-1"],
             by_name["shift-1"]]
    counts = run_cells(bench, plans, tmp_path / "out", make_backend(backend_name), retries=2,
                       progress=False)
    assert marker.exists() == apart  # the worker running noise-2 really died once
    assert counts == {"ok": len(plans) - 1, "failed": 1}
    cells = {c.split["name"]: c for c in collect_cells(tmp_path / "out", plans)}
    assert len(cells) == len(plans) == 6
    # the dead worker's cell took a second attempt, and so did, in a pool, a cell that was in
    # flight beside it (which one killed the pool is not known); every other cell one
    assert cells["noise-2"].attempts == (2 if apart else 1)
    others = [c.attempts for name, c in cells.items() if name not in ("noise-2", "shift-1")]
    assert sorted(others) in ([1, 1, 1, 1], [1, 1, 1, 2] if backend_name == "pool" else None)
    failed = cells["shift-1"]
    assert failed.status == "failed" and failed.attempts == 3
    # the one-line error of the same failure raised here, not the backend's plumbing
    with pytest.raises(RuntimeError, match="injected failure") as raised:
        bench.execute(next(p for p in plans if p.split.name == "shift-1"))
    assert failed.error == describe_error(raised.value)
    # every finished cell, the recovered one included, has exactly the numbers of a direct
    # execution (the marker exists now, so this process does not die)
    ok = [p for p in plans if p.split.name != "shift-1"]
    direct = direct_results(bench, ok)
    # the trajectories really moved and differ between splits: mixed-up cells could not match
    assert len({est["recording-trajectory"][0].value for _, _, est in direct.values()}) > 1
    assert results([cells[p.split.name] for p in ok]) == direct


@pytest.mark.slow
def test_a_rerun_on_every_backend_runs_only_the_unfinished_cells(backend_name, tmp_path,
                                                                 tiny_reference):
    bench = Benchmark(make_spec())
    plans = bench.plan()
    out = tmp_path / "out"
    first = [p for p in plans if in_shard(p.key, (1, 2))]
    assert 0 < len(first) < len(plans)
    assert run_cells(bench, first, out, make_backend(backend_name), progress=False) == {
        "ok": len(first), "failed": 0}
    kept = {p.key: (cell_path(out, p.key).read_bytes(), cell_path(out, p.key).stat().st_mtime_ns)
            for p in first}
    todo = pending_cells(plans, out, None)
    assert {p.key for p in todo} == {p.key for p in plans} - set(kept)
    assert run_cells(bench, todo, out, make_backend(backend_name), progress=False) == {
        "ok": len(todo), "failed": 0}
    assert pending_cells(plans, out, None) == []
    # the first run's cells were not run again nor rewritten
    assert {key: (cell_path(out, key).read_bytes(), cell_path(out, key).stat().st_mtime_ns)
            for key in kept} == kept
    assert results(collect_cells(out, plans)) == tiny_reference


def test_a_worker_plans_its_run_once_and_looks_every_cell_up_by_key(monkeypatch):
    spec = make_spec(adapters=["source"], estimators=["recording-static"], estimator_params={},
                     suite_options={"n_examples": 64})
    keys = [p.key for p in Benchmark(spec).plan()]
    monkeypatch.setattr(worker, "_LOADED", {})  # a fresh worker process
    calls: list[int] = []
    plan = Benchmark.plan
    monkeypatch.setattr(Benchmark, "plan", lambda self: calls.append(1) or plan(self))
    data = dataclasses.asdict(spec)
    cells = [worker.execute_cell(data, key) for key in keys[:3]]
    assert [c.key for c in cells] == keys[:3] and all(c.status == "ok" for c in cells)
    with pytest.raises(TTABenchError, match="not in the worker's plan"):
        worker.execute_cell(data, "0" * 16)
    assert len(calls) == 1
