"""Run the cells of a benchmark on a Ray cluster (``ttabench run --executor ray``).

One Ray task per cell. The task receives the run specification as plain data (suite name,
model spec, data locations, plugin specs: paths and ids, never tensors) and the cell's key;
each worker process builds the ``Benchmark`` once and reuses it for every cell it runs. The
task returns the finished cell as a dict and the driver writes it atomically into the output
folder, so workers need no shared filesystem for results.

Resources per task come from ``[executor.ray]`` in the config: ``num_cpus`` (default 1),
``num_gpus`` (default 0; fractions such as 0.25 let several small cells share one device).
A task that raises or whose worker dies is retried ``retries`` times by Ray, then recorded as
a failed cell with its error; the other cells go on. Ctrl-C cancels what is in flight; the
finished cells are already on disk, so a rerun resumes.

Ray is an optional extra: ``pip install .[ray]``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec, describe_error
from ttabench.runner.worker import benchmark_for, execute_cell
from ttabench.runner.cells import CellPlan, cell_path
from ttabench.runner.store import write_json_atomic

def _import_ray():
    try:
        import ray
    except ImportError:
        raise TTABenchError("the ray executor needs Ray: pip install '.[ray]'") from None
    return ray


def run_ray(spec: RunSpec, plans: list[CellPlan], output: Path, retries: int = 0,
            address: str | None = None, options: dict[str, Any] | None = None,
            bench: Benchmark | None = None, progress: bool = True) -> dict[str, int]:
    """Execute ``plans`` as Ray tasks; write every result (ok or failed) into ``output``."""
    ray = _import_ray()
    options = dict(options or {})
    started_here = not ray.is_initialized()
    if started_here:
        init = {"include_dashboard": False, "log_to_driver": bool(options.get("log_to_driver", False))}
        if address:
            init["address"] = address
        elif "num_cpus_total" in options:
            init["num_cpus"] = int(options["num_cpus_total"])
        ray.init(**init)
    task = ray.remote(execute_cell).options(
        num_cpus=float(options.get("num_cpus", 1)),
        num_gpus=float(options.get("num_gpus", 0)),
        max_retries=retries,
        retry_exceptions=retries > 0,
    )
    spec_data = dataclasses.asdict(spec)
    pending = {task.remote(spec_data, plan.key): plan for plan in plans}
    counts = {"ok": 0, "failed": 0}
    bar = tqdm(total=len(plans), desc="cells (ray)", unit="cell", disable=not progress)
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            plan = pending.pop(done[0])
            try:
                cell = ray.get(done[0])
            except Exception as err:  # the task failed after its retries: record it
                cause = getattr(err, "cause", None) or err
                failure = bench or benchmark_for(spec_data)
                cell = failure.failed(plan, describe_error(cause), retries + 1)
            write_json_atomic(cell_path(output, plan.key), cell)
            counts[cell["status"]] += 1
            bar.update(1)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return counts
