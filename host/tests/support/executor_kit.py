"""What the executor tests share: the test plugins, the run spec of a small run, a failing
variant of it, the backends by name, and the part of a cell that must not depend on where it
ran."""

from __future__ import annotations

from typing import Any

from ttabench import registry
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.runner.cells import CellPlan
from ttabench.runner.executor import Backend, LocalBackend

PLUGINS = ["adapters=ttabench_test_plugins:NoisyAdapter",
           "estimators=ttabench_test_plugins:RecordingTrajectory",
           "estimators=ttabench_test_plugins:RecordingStatic",
           "suites=ttabench_test_plugins:FailingTiny"]

#: Every backend the driver runs on.
BACKENDS = ["local", "pool", "ray"]


def register_plugins() -> None:
    """The test plugins in this process (spawned workers register them from the spec)."""
    for plugin in PLUGINS:
        registry.add_plugin_spec(plugin)


def make_spec(**kw: Any) -> RunSpec:
    """Six cells (the tiny suite's splits, one seed) of a noisy adapter, one static and one
    trajectory estimator, on the CPU with one thread."""
    register_plugins()
    base: dict[str, Any] = dict(
        suite="tiny", model="tiny-cnn", adapters=["noisy"],
        estimators=["recording-static", "recording-trajectory"],
        suite_options={"n_examples": 128}, device="cpu", plugins=PLUGINS, threads=1,
        estimator_params={"recording-trajectory": {"probe_size": 64, "checkpoints": [0, 4]}})
    base.update(kw)
    return RunSpec(**base)


def failing_spec(fail_split: str = "", crash_split: str = "", marker: str = "") -> RunSpec:
    """``make_spec`` on the failing-tiny suite: ``fail_split`` always raises, ``crash_split``
    kills its process on the first attempt (until ``marker`` exists)."""
    return make_spec(suite="failing-tiny",
                     suite_options={"n_examples": 128, "fail_split": fail_split,
                                    "crash_split": crash_split, "marker": marker})


def make_backend(name: str, jobs: int = 2) -> Backend:
    """A fresh backend by name (the Ray one joins the session the test started)."""
    if name == "local":
        return LocalBackend()
    if name == "pool":
        from ttabench.runner.pool import PoolBackend

        return PoolBackend(jobs)
    from ttabench.runner.ray_executor import RayBackend

    return RayBackend()


def results(cells: list[Cell]) -> dict[str, tuple]:
    """What must be identical across executors: per key, status, targets, estimator outputs."""
    return {c.key: (c.status, c.targets, {k: (v.result, v.views) for k, v in c.estimators.items()})
            for c in cells}


def direct_results(bench: Benchmark, plans: list[CellPlan]) -> dict[str, tuple]:
    """``results`` of the plans executed one by one with ``Benchmark.execute``, in this
    process, through no executor: the reference every executor must reproduce."""
    return results([bench.execute(plan) for plan in plans])
