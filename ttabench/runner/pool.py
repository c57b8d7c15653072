"""Run cells in parallel worker processes on this machine (``ttabench run --jobs N``).

Each worker process builds the Benchmark once (``ttabench.runner.worker``) and runs one cell
at a time with ``threads`` intra-op threads; the driver writes every result atomically as it
arrives. Cells are independent and seeded, so the results equal a sequential run's. A cell
that raises is retried ``retries`` times, then recorded as failed; when a worker process dies,
the cells it was running count an attempt and the pool is rebuilt for the rest.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from tqdm import tqdm

from ttabench.runner.benchmark import Benchmark, RunSpec, describe_error
from ttabench.runner.cells import CellPlan, cell_path
from ttabench.runner.store import write_json_atomic
from ttabench.runner.worker import execute_cell


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
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            running: dict[Future, CellPlan] = {}
            broken = False
            while (queue or running) and not broken:
                while queue and len(running) < 2 * jobs:
                    plan = queue.pop(0)
                    attempts[plan.key] += 1
                    running[pool.submit(execute_cell, data, plan.key)] = plan
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    plan = running.pop(future)
                    try:
                        cell = future.result()
                    except Exception as err:  # a raising cell, or a worker that died
                        broken = broken or isinstance(err, BrokenProcessPool)
                        if attempts[plan.key] <= retries:
                            queue.append(plan)
                            continue
                        cell = bench.failed(plan, describe_error(err), attempts[plan.key])
                    write_json_atomic(cell_path(output, plan.key), cell)
                    counts[cell["status"]] += 1
                    bar.update(1)
            queue = list(running.values()) + queue if broken else queue
    bar.close()
    return counts
