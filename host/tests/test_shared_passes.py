"""Cells that differ only in their adapter share their adapter-independent work: N adapters cost
N trajectories plus one set of source and bn passes, counted in model forward calls, and every
cell's numbers are those it computes alone."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from ttabench import registry
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import group_key
from ttabench.spec import RunSpec

N_IMAGES, BATCH, VAL_IMAGES = 192, 64, 128  # the tiny suite's source val holds 128 images
SPLITS, SEEDS = ["noise-1", "noise-3"], [0, 1]
ADAPTERS = ["bn-ema", "lame", "noisy"]


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingStatic")
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    yield


def run(adapters: list[str]) -> tuple[list[Cell], int, Benchmark]:
    """Every cell of a run with ``adapters`` and the model forward calls it made (the loaded
    model's and every copy's: a deep copy keeps the counting hook)."""
    spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=adapters,
                   estimators=["recording-static", "doc", "recording-trajectory"],
                   suite_options={"n_examples": N_IMAGES}, splits=SPLITS, seeds=SEEDS,
                   batch_size=BATCH, device="cpu", threads=1)
    bench = Benchmark(spec)
    calls = Counter[str]()
    bench.model.module.register_forward_hook(lambda *_: calls.update(["forward"]))
    cells = [bench.execute(plan) for plan in bench.plan()]
    return cells, calls["forward"], bench


def numbers(cell: Cell) -> dict:
    """What a cell computed (not when, nor whether its passes were reused)."""
    out = cell.to_dict()
    for key in ("timings", "environment", "data"):
        out.pop(key)
    return out


def test_n_adapters_cost_n_trajectories_and_one_set_of_passes() -> None:
    together, calls, bench = run(ADAPTERS)
    groups = len(SPLITS) * len(SEEDS)
    # the plan puts a group's cells one after another: split, seed, then adapter
    keys = [group_key(plan.protocol) for plan in bench.plan()]
    assert keys == [k for k in dict.fromkeys(keys) for _ in ADAPTERS] and len(set(keys)) == groups
    assert bench.counters["source_pass"] == bench.counters["bn_pass"] == groups
    assert bench.counters["trajectory"] == groups * len(ADAPTERS)
    assert [c.data["passes"] for c in together] == ["computed", "reused", "reused"] * groups

    # counted by hand: per group the frozen and the bn model over 192 images in batches of 64;
    # per process source val through the same two models, 128 images in batches of 64
    passes = 2 * (N_IMAGES // BATCH)
    source_val = 2 * (VAL_IMAGES // BATCH)
    alone = {name: run([name]) for name in ADAPTERS}
    trajectories = {name: count - source_val - groups * passes
                    for name, (_, count, _) in alone.items()}
    assert all(t >= groups * 5 for t in trajectories.values())  # 5 steps per cell at least
    assert calls == source_val + groups * passes + sum(trajectories.values())

    # and every cell's numbers are those it computes alone
    by_key = {cell.key: cell for cells, _, _ in alone.values() for cell in cells}
    for cell in together:
        assert numbers(cell) == numbers(by_key[cell.key]), cell.adapter
    assert {c.data["passes"] for cells, _, _ in alone.values() for c in cells} == {"computed"}


def test_a_reusing_cell_starts_its_trajectory_from_the_same_random_state(monkeypatch) -> None:
    """An adapter drawing from the global generator (dropout, noise) gets the same draws after
    reused passes as after computing them: the state right after them is restored (here a
    static estimator moved it)."""
    from ttabench.runner import execute

    registry.add_plugin("estimators", "ttabench_test_plugins:DrawingStatic")
    states = []
    trajectory = execute._trajectory

    def spy(*args, **kwargs):
        states.append(torch.get_rng_state())
        return trajectory(*args, **kwargs)

    monkeypatch.setattr(execute, "_trajectory", spy)
    spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=["noisy", "bn-ema"],
                   estimators=["drawing-static", "recording-trajectory"],
                   suite_options={"n_examples": N_IMAGES}, splits=["noise-2"], device="cpu",
                   threads=1)
    bench = Benchmark(spec)
    first, second = bench.plan()
    cells = [bench.execute(first), bench.execute(second)]
    assert [c.data["passes"] for c in cells] == ["computed", "reused"]
    assert torch.equal(states[0], states[1])
