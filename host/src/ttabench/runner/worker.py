"""The worker side of parallel executors (process pool, Ray): one Benchmark per process.

A worker receives the run specification as plain data and a cell key. It builds the
``Benchmark`` (suite, model, plugins) and plans its cells on first use, and reuses both for
every later cell of the same run: a cell is looked up by its key in that plan. It returns the
finished cell (``ttabench.records.Cell``) for the driver to write.

A worker given a GPU of its own (a ``--jobs`` worker on a CUDA run, see
``ttabench.runner.pool``; a Ray task with ``num_gpus``) sees that GPU alone, through
``CUDA_VISIBLE_DEVICES`` set before CUDA starts, so the run's ``cuda`` or ``cuda:N`` is its
``cuda:0`` (``on_own_gpu``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import CellPlan
from ttabench.runner.views import describe_error
from ttabench.spec import RunSpec


@dataclass
class _Loaded:
    """A run as loaded in this process: its Benchmark and its planned cells by key."""

    bench: Benchmark
    plans: dict[str, CellPlan]


_LOADED: dict[str, _Loaded] = {}

#: Whether this process was given a GPU of its own (``give_gpu``).
_OWN_GPU = False


def give_gpu(gpu: str) -> None:
    """Make GPU ``gpu`` (a physical id or UUID) the only one this process sees; before CUDA
    starts in it (a worker's first act)."""
    global _OWN_GPU
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    _OWN_GPU = True


def on_own_gpu(spec_data: dict[str, Any], own_gpu: bool) -> dict[str, Any]:
    """The spec as a process with a GPU of its own runs it: a CUDA device is its ``cuda:0``
    (the run's ``cuda:N`` names the GPU among the driver's, not among the one visible here)."""
    device = spec_data.get("device")
    if own_gpu and device and str(device).startswith("cuda"):
        return {**spec_data, "device": "cuda:0"}
    return spec_data


def _loaded(spec_data: dict[str, Any]) -> _Loaded:
    """This process's loaded run for the spec, built and planned once (explicit plugins
    registered first)."""
    spec_data = on_own_gpu(spec_data, _OWN_GPU)
    key = json.dumps(spec_data, sort_keys=True, default=str)
    if key not in _LOADED:
        for plugin in spec_data.get("plugins", []):
            registry.add_plugin_spec(plugin)
        bench = Benchmark(RunSpec.from_dict(spec_data))
        _LOADED[key] = _Loaded(bench, {plan.key: plan for plan in bench.plan()})
    return _LOADED[key]


def execute_cell(spec_data: dict[str, Any], key: str) -> Cell:
    """Find the planned cell by its key and execute it."""
    loaded = _loaded(spec_data)
    if key not in loaded.plans:
        raise TTABenchError(f"cell {key} is not in the worker's plan: the spec differs between "
                            "driver and worker (versions, data, device or thread count)")
    return loaded.bench.execute(loaded.plans[key])


def execute_cell_described(spec_data: dict[str, Any], key: str) -> Cell:
    """``execute_cell`` as a worker task runs it: an error is re-raised as a TTABenchError
    holding its one-line description, made here, because the traceback it names does not
    cross the process boundary (the driver records the same line as a local run would)."""
    try:
        return execute_cell(spec_data, key)
    except Exception as err:
        raise TTABenchError(describe_error(err)) from None
