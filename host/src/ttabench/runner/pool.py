"""Run cells in parallel worker processes on this machine (``ttabench run --jobs N``).

Each worker process builds the Benchmark once (``ttabench.runner.worker``) and runs one cell
at a time with ``threads`` intra-op threads; the driver (``ttabench.runner.executor``) writes
every result atomically as it arrives. Cells are independent and seeded, so the results equal a
sequential run's. A cell that raises fails its attempt with the one-line error made in its
worker; when a worker process dies, every cell in flight fails its attempt (``WORKER_DIED``),
and the pool is rebuilt for the retries and the rest.

On a CUDA run each worker process gets one GPU of its own, round-robin over the GPUs the run
uses (``worker_gpus``: every visible one for ``--device cuda``, GPU N for ``cuda:N``), through
``CUDA_VISIBLE_DEVICES`` set before CUDA starts in it (``ttabench.runner.worker.give_gpu``).
GPUs of different models in one run are refused: their cells would be keyed by one of them.

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
from typing import Any

import torch
from tqdm import tqdm

from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.errors import TTABenchError
from ttabench.runner.cells import CellPlan
from ttabench.runner.executor import Outcome
from ttabench.runner.orphans import die_with_parent
from ttabench.runner.views import describe_error
from ttabench.runner.worker import execute_cell_described, give_gpu


#: The error recorded for a cell whose worker process died (every cell in flight then counts an
#: attempt: which one killed the process is not known).
WORKER_DIED = ("a worker process died while this cell was in flight (killed, out of memory or a "
               "crash in native code); rerun to retry it, or run with --jobs 1 to isolate it")


def _init_worker(parent_pid: int, started: Any, gpus: list[str]) -> None:
    """A worker's first act: die with the driver; take the next GPU of ``gpus`` in turn
    (``started`` counts the workers started); and give tqdm a thread lock, not its default
    multiprocessing one, whose semaphore a killed worker would leak (the resource tracker then
    warns about it after the run)."""
    die_with_parent(parent_pid)
    if gpus:
        with started.get_lock():
            index = started.value
            started.value += 1
        give_gpu(gpus[index % len(gpus)])
    tqdm.set_lock(threading.RLock())


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (its entries when
    it is set, else ``0`` to ``count - 1``), in CUDA's index order."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def worker_gpus(device: torch.device, visible: list[str],
                names: list[str] | None = None) -> list[str]:
    """The GPUs the workers of a run on ``device`` take in turn: none off CUDA, GPU N of
    ``visible`` for ``cuda:N``, every visible one for ``cuda``. ``names`` (the model of each
    visible GPU) must agree on the ones taken."""
    if device.type != "cuda":
        return []
    indices = [device.index] if device.index is not None else list(range(len(visible)))
    if names is not None and len({names[i] for i in indices}) > 1:
        raise TTABenchError(
            "--jobs over GPUs of different models (" + ", ".join(sorted({names[i] for i in indices}))
            + "): their cells would be keyed by one of them; pass --device cuda:N, one run per "
            "model")
    return [visible[i] for i in indices]


class PoolBackend:
    """``jobs`` spawned worker processes; the pool is built on the first submission and
    rebuilt after a worker died, once every cell that was in flight has settled."""

    def __init__(self, jobs: int, gpus: list[str] | None = None) -> None:
        self.jobs = jobs
        self.gpus = list(gpus or [])
        self.label = f"cells ({jobs} processes" + (f" on GPUs {','.join(self.gpus)})"
                                                   if self.gpus else ")")

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
            self._pool = self.new_pool()
        try:
            self._running[self._pool.submit(execute_cell_described, self._data, plan.key)] = plan
        except BrokenProcessPool:  # a worker died since the last outcome: this one never started
            self._broken = True
            self._unstarted.append(plan)

    def new_pool(self) -> ProcessPoolExecutor:
        """``jobs`` spawned workers, each on its GPU (``_init_worker``)."""
        context = multiprocessing.get_context("spawn")
        return ProcessPoolExecutor(max_workers=self.jobs, mp_context=context,
                                   initializer=_init_worker,
                                   initargs=(os.getpid(), context.Value("i", 0), self.gpus))

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
