"""Run cells in parallel worker processes on this machine (``ttabench run --jobs N``).

Each worker process builds the Benchmark once (``ttabench.runner.worker``) and runs one cell
at a time with ``threads`` intra-op threads; the driver writes every result atomically as it
arrives. Cells are independent and seeded, so the results equal a sequential run's. A cell
that raises is retried ``retries`` times, then recorded as failed with the one-line error made
in its worker; when a worker process dies, every cell in flight counts an attempt, and the pool
is rebuilt for those and the rest.

Workers never outlive the driver: each asks the kernel to kill it when the driver dies
(``PR_SET_PDEATHSIG`` on Linux) and also watches its parent (``ttabench.runner.orphans``); an
interrupt of the driver (Ctrl-C, SIGTERM) kills them at once. Workers ignore Ctrl-C
themselves: the driver decides.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec, describe_error
from ttabench.runner.cells import CellPlan, cell_path
from ttabench.runner.orphans import die_with_parent
from ttabench.runner.store import write_json_atomic
from ttabench.runner.worker import execute_cell


#: The error recorded for a cell whose worker process died (every cell in flight then counts an
#: attempt: which one killed the process is not known).
WORKER_DIED = ("a worker process died while this cell was in flight (killed, out of memory or a "
               "crash in native code); rerun to retry it, or run with --jobs 1 to isolate it")


def _execute(spec_data: dict, key: str) -> dict:
    """``execute_cell`` in a worker; an error is re-raised as its one-line description, made
    there, because the traceback it names does not cross the process boundary."""
    try:
        return execute_cell(spec_data, key)
    except Exception as err:
        raise TTABenchError(describe_error(err)) from None


def _init_worker(parent_pid: int) -> None:
    """A worker's first act: die with the driver; and give tqdm a thread lock, not its default
    multiprocessing one, whose semaphore a killed worker would leak (the resource tracker then
    warns about it after the run)."""
    die_with_parent(parent_pid)
    tqdm.set_lock(threading.RLock())


def _kill(pool: ProcessPoolExecutor) -> None:
    """Kill this driver's worker processes now and drop the queued cells."""
    for process in multiprocessing.active_children():
        process.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def run_pool(bench: Benchmark, spec: RunSpec, plans: list[CellPlan], output: Path, jobs: int,
             retries: int = 0, progress: bool = True) -> dict[str, int]:
    """Execute ``plans`` in ``jobs`` worker processes; write each result into ``output``."""
    data = dataclasses.asdict(spec)
    counts = {"ok": 0, "failed": 0}
    attempts = {plan.key: 0 for plan in plans}
    queue = list(plans)
    bar = tqdm(total=len(plans), desc=f"cells ({jobs} processes)", unit="cell", disable=not progress)
    context = multiprocessing.get_context("spawn")
    while queue:
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                   initializer=_init_worker, initargs=(os.getpid(),))
        try:
            running: dict[Future, CellPlan] = {}
            broken = False
            # after a worker died, submit nothing more: settle every cell in flight (a broken
            # pool fails them all at once), then rebuild the pool for the requeued ones
            while running or (queue and not broken):
                while queue and not broken and len(running) < jobs:
                    plan = queue.pop(0)
                    attempts[plan.key] += 1
                    running[pool.submit(_execute, data, plan.key)] = plan
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    plan = running.pop(future)
                    try:
                        cell = future.result()
                        cell["attempts"] = attempts[plan.key]
                    except BrokenProcessPool:
                        broken = True
                        error = WORKER_DIED
                    except Exception as err:  # a raising cell: its one line from the worker
                        error = describe_error(err)
                    else:
                        error = None
                    if error is not None:
                        if attempts[plan.key] <= retries:
                            queue.append(plan)
                            continue
                        cell = bench.failed(plan, error, attempts[plan.key])
                    write_json_atomic(cell_path(output, plan.key), cell)
                    counts[cell["status"]] += 1
                    bar.update(1)
        except BaseException:  # Ctrl-C, SIGTERM: finished cells are on disk, stop the rest now
            _kill(pool)
            bar.close()
            raise
        pool.shutdown(wait=True)
    bar.close()
    return counts
