"""One driver for every executor: attempts, retries, failed records, atomic writes, progress.

``run_cells`` is the only loop that runs cells. A ``Backend`` says only where a cell runs and
how its outcome comes back: ``LocalBackend`` (here: in this process, one after another),
``ttabench.runner.pool.PoolBackend`` (worker processes on this machine, ``--jobs N``) and
``ttabench.runner.ray_executor.RayBackend`` (Ray tasks, ``--executor ray``). The driver

- counts the attempts of every cell; a cell whose attempt fails (it raised, or its worker
  died) is retried next, at most ``retries`` times, then recorded as failed with its one-line
  error (``Benchmark.failed``); the other cells go on;
- writes every finished or failed cell into ``<output>/cells/<key>.json`` atomically, in this
  process (the one that owns the output folder), as it arrives;
- keeps one progress bar and returns the counts ``{"ok": n, "failed": m}``;
- on Ctrl-C (or any other exception) tells the backend to stop what is in flight at once and
  re-raises: the finished cells are already on disk, so a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import CellPlan, cell_path
from ttabench.store import write_json_atomic
from ttabench.runner.views import describe_error


@dataclass
class Outcome:
    """One finished attempt of a cell: its record (``cell``), or the one-line ``error``; or,
    with ``started`` False, a submission the backend could not start (run it again, no
    attempt spent)."""

    plan: CellPlan
    cell: Cell | None = None
    error: str | None = None
    started: bool = True


class Backend(Protocol):
    """Where cells run. The driver calls ``start`` once, submits a cell only while
    ``accepts()``, waits for outcomes while ``running()`` is not zero, calls ``stop`` when the
    run is interrupted and ``close`` always, last."""

    #: The progress bar's description.
    label: str

    def start(self, bench: Benchmark) -> None:
        """Get ready to run ``bench``'s cells (before the first ``submit``)."""

    def accepts(self) -> bool:
        """Whether another cell may be submitted now."""

    def submit(self, plan: CellPlan) -> None:
        """Start one attempt of ``plan``."""

    def running(self) -> int:
        """The number of submitted cells without an outcome yet."""

    def wait(self) -> list[Outcome]:
        """Block until at least one submitted cell has an outcome; return those outcomes."""

    def stop(self) -> None:
        """The run is interrupted: end what is in flight now."""

    def close(self) -> None:
        """Release what ``start`` and ``submit`` acquired."""


class LocalBackend:
    """Cells one after another in this process; an exception of the cell is its outcome,
    Ctrl-C is not (it propagates, losing nothing more than the cell in flight)."""

    label = "cells"

    def start(self, bench: Benchmark) -> None:
        self.bench = bench
        self._pending: CellPlan | None = None

    def accepts(self) -> bool:
        return self._pending is None

    def submit(self, plan: CellPlan) -> None:
        self._pending = plan

    def running(self) -> int:
        return int(self._pending is not None)

    def wait(self) -> list[Outcome]:
        plan, self._pending = self._pending, None
        assert plan is not None, "wait() without a submitted cell"
        try:
            return [Outcome(plan, cell=self.bench.execute(plan))]
        except Exception as err:  # recorded, never lost: the run goes on
            return [Outcome(plan, error=describe_error(err))]

    def stop(self) -> None:
        """Nothing runs apart from this process: Ctrl-C has already stopped the cell."""

    def close(self) -> None:
        """Nothing to release."""


def run_cells(bench: Benchmark, plans: list[CellPlan], output: Path, backend: Backend,
              retries: int = 0, progress: bool = True) -> dict[str, int]:
    """Execute ``plans`` on ``backend``, writing each result into ``output``; see the module
    docstring. Returns ``{"ok": n, "failed": m}`` with ``n + m == len(plans)``."""
    counts = {"ok": 0, "failed": 0}
    attempts = {plan.key: 0 for plan in plans}
    queue = list(plans)
    backend.start(bench)
    bar = tqdm(total=len(plans), desc=backend.label, unit="cell", disable=not progress)
    try:
        while queue or backend.running():
            while queue and backend.accepts():
                plan = queue.pop(0)
                attempts[plan.key] += 1
                bar.set_postfix_str(
                    f"{plan.split.name} {plan.protocol['adapter']['name']} s{plan.seed}")
                backend.submit(plan)
            for outcome in backend.wait():
                plan = outcome.plan
                if not outcome.started:
                    attempts[plan.key] -= 1
                    queue.insert(0, plan)
                    continue
                if outcome.cell is not None:
                    cell = outcome.cell
                    cell.attempts = attempts[plan.key]
                elif attempts[plan.key] <= retries:
                    queue.insert(0, plan)
                    continue
                else:
                    cell = bench.failed(plan, str(outcome.error), attempts[plan.key])
                write_json_atomic(cell_path(output, plan.key), cell.to_dict())
                counts[cell.status] += 1
                bar.update(1)
    except BaseException:  # Ctrl-C, SIGTERM: finished cells are on disk, stop the rest now
        backend.stop()
        raise
    finally:
        backend.close()
        bar.close()
    return counts
