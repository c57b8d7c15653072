"""Run cells in parallel worker processes on this machine (``ttabench run --jobs N``).

Each worker process builds the Benchmark once (``ttabench.runner.worker``) and runs one cell
at a time with ``threads`` intra-op threads; the driver (``ttabench.runner.executor``) writes
every result atomically as it arrives. Cells are independent and seeded, so the results equal a
sequential run's. A cell that raises fails its attempt with the one-line error made in its
worker; when a worker process dies, every cell in flight fails its attempt (``WORKER_DIED``),
and the pool is rebuilt for the retries and the rest.

Workers never outlive the driver: each asks the kernel to kill it when the driver dies
(``PR_SET_PDEATHSIG`` on Linux) and also watches its parent (``ttabench.runner.orphans``); an
interrupt of the driver (Ctrl-C, SIGTERM) kills them at once. Workers ignore Ctrl-C
themselves: the driver decides.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from tqdm import tqdm

from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import CellPlan
from ttabench.runner.executor import Outcome
from ttabench.runner.orphans import die_with_parent
from ttabench.runner.views import describe_error
from ttabench.runner.worker import execute_cell_described


#: The error recorded for a cell whose worker process died (every cell in flight then counts an
#: attempt: which one killed the process is not known).
WORKER_DIED = ("a worker process died while this cell was in flight (killed, out of memory or a "
               "crash in native code); rerun to retry it, or run with --jobs 1 to isolate it")


def _init_worker(parent_pid: int) -> None:
    """A worker's first act: die with the driver; and give tqdm a thread lock, not its default
    multiprocessing one, whose semaphore a killed worker would leak (the resource tracker then
    warns about it after the run)."""
    die_with_parent(parent_pid)
    tqdm.set_lock(threading.RLock())


class PoolBackend:
    """``jobs`` spawned worker processes; the pool is built on the first submission and
    rebuilt after a worker died, once every cell that was in flight has settled."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.label = f"cells ({jobs} processes)"

    def start(self, bench: Benchmark) -> None:
        self._data = bench.spec.to_dict()
        self._pool: ProcessPoolExecutor | None = None
        self._running: dict[Future[Cell], CellPlan] = {}
        self._unstarted: list[CellPlan] = []
        self._broken = False

    def accepts(self) -> bool:
        # after a worker died, submit nothing more: a broken pool fails every cell in flight
        # at once; those settle first, then a new pool takes the requeued ones
        return not self._broken and len(self._running) < self.jobs

    def submit(self, plan: CellPlan) -> None:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.jobs,
                                             mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(os.getpid(),))
        try:
            self._running[self._pool.submit(execute_cell_described, self._data, plan.key)] = plan
        except BrokenProcessPool:  # a worker died since the last outcome: this one never started
            self._broken = True
            self._unstarted.append(plan)

    def running(self) -> int:
        return len(self._running) + len(self._unstarted)

    def wait(self) -> list[Outcome]:
        outcomes = [Outcome(plan, started=False) for plan in self._unstarted]
        self._unstarted = []
        done = wait(self._running, return_when=FIRST_COMPLETED)[0] if not outcomes else set()
        for future in done:
            plan = self._running.pop(future)
            try:
                outcomes.append(Outcome(plan, cell=future.result()))
            except BrokenProcessPool:
                self._broken = True
                outcomes.append(Outcome(plan, error=WORKER_DIED))
            except Exception as err:  # a raising cell: its one line from the worker
                outcomes.append(Outcome(plan, error=describe_error(err)))
        if self._broken and not self._running:
            self.close()
        return outcomes

    def stop(self) -> None:
        """Kill this driver's worker processes now and drop the queued cells."""
        for process in multiprocessing.active_children():
            process.kill()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._pool, self._broken = None, False
