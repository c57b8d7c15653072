"""Run the cells of a benchmark on a Ray cluster (``ttabench run --executor ray``).

One Ray task per cell attempt. The task receives the run specification as plain data (suite
name, model spec, data locations, plugin specs: paths and ids, never tensors) and the cell's
key; each worker process builds the ``Benchmark`` once and reuses it for every cell it runs. The
task returns the finished cell (a ``Cell``) and the driver (``ttabench.runner.executor``) writes
it atomically into the output folder, so workers need no shared filesystem for results.

Resources per task come from ``[executor.ray]`` in the config: ``num_cpus`` (default 1),
``num_gpus`` (default 0; fractions such as 0.25 let several small cells share one device).
They are given to ``ray.remote`` itself, where a task with GPUs gets a fresh worker process
(Ray's ``max_calls=1`` for GPU tasks): Ray makes the task's GPU the only one visible, and a
process that started CUDA on one GPU must not run a task given another. Inside a task the
run's ``cuda`` or ``cuda:N`` is that GPU (``cuda:0``). The head node needs no GPU: it plans the
cells (``Benchmark(runs_cells=False)``: the key holds the kernel settings; each cell's
``environment`` names the GPU that ran it), and ``--device cuda`` with ``num_gpus = 0`` is
refused before any work.
A task that raises or whose worker dies is retried ``retries`` times by the driver (a new
task), then recorded as a failed cell with its error; the other cells go on. Ctrl-C cancels
what is in flight; the finished cells are already on disk, so a rerun resumes.

Ray is an optional extra: ``pip install .[ray]``.
"""

from __future__ import annotations

from typing import Any

from ttabench.errors import TTABenchError
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import CellPlan
from ttabench.runner.executor import Outcome
from ttabench.runner.preflight import planned_device
from ttabench.runner.views import describe_error
from ttabench.runner.worker import execute_cell_described, on_own_gpu


def task_device(device: str | None, options: dict[str, Any]) -> str:
    """The device of a run's Ray tasks: ``--device``, else ``cuda`` when each task gets GPUs
    (``[executor.ray] num_gpus`` > 0), else ``cpu``. A CUDA device with ``num_gpus = 0`` is
    refused before any work: Ray would hide every GPU from the tasks."""
    gpus = float(options.get("num_gpus", 0))
    if device is None:
        return "cuda" if gpus > 0 else "cpu"
    if planned_device(device).type == "cuda" and gpus <= 0:
        raise TTABenchError(f"--device {device} with --executor ray needs GPUs for its tasks: "
                            "set [executor.ray] num_gpus (e.g. --set executor.ray.num_gpus=1; "
                            "a fraction shares one GPU)")
    return device


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TTABenchError("the ray executor needs Ray: pip install '.[ray]'") from None
    return ray


def run_in_task(spec_data: dict[str, Any], key: str) -> Cell:
    """One cell in a Ray task, on the task's own GPU when it was given one."""
    import ray

    return execute_cell_described(on_own_gpu(spec_data, bool(ray.get_gpu_ids())), key)


class RayBackend:
    """One Ray task per cell attempt, every cell submitted at once (Ray schedules them by
    their resources); Ray itself retries nothing, the driver does."""

    label = "cells (ray)"

    def __init__(self, address: str | None = None, options: dict[str, Any] | None = None) -> None:
        self.ray = _import_ray()
        self.address = address
        self.options = dict(options or {})

    def start(self, bench: Benchmark) -> None:
        self._started_here = not self.ray.is_initialized()
        if self._started_here:
            init: dict[str, Any] = {"include_dashboard": False,
                                    "log_to_driver": bool(self.options.get("log_to_driver", False))}
            if self.address:
                init["address"] = self.address
            elif "num_cpus_total" in self.options:
                init["num_cpus"] = int(self.options["num_cpus_total"])
            self.ray.init(**init)
        self._task = self.remote(run_in_task)
        self._spec_data = bench.spec.to_dict()
        self._pending: dict[Any, CellPlan] = {}

    def remote(self, fn: Any) -> Any:
        """``fn`` as a Ray task with the run's resources, given to ``ray.remote`` (see the
        module docstring); Ray retries nothing, the driver does."""
        return self.ray.remote(num_cpus=float(self.options.get("num_cpus", 1)),
                               num_gpus=float(self.options.get("num_gpus", 0)),
                               max_retries=0, retry_exceptions=False)(fn)

    def accepts(self) -> bool:
        return True

    def submit(self, plan: CellPlan) -> None:
        self._pending[self._task.remote(self._spec_data, plan.key)] = plan

    def running(self) -> int:
        return len(self._pending)

    def wait(self) -> list[Outcome]:
        done, _ = self.ray.wait(list(self._pending), num_returns=1)
        plan = self._pending.pop(done[0])
        try:
            return [Outcome(plan, cell=self.ray.get(done[0]))]
        except Exception as err:  # the task raised, or its worker died
            return [Outcome(plan, error=describe_error(getattr(err, "cause", None) or err))]

    def stop(self) -> None:
        for ref in self._pending:
            self.ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started_here:
            self.ray.shutdown()
