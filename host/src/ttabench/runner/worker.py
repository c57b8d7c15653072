"""The worker side of parallel executors (process pool, Ray): one Benchmark per process.

A worker receives the run specification as plain data and a cell key. It builds the
``Benchmark`` (suite, model, plugins) on first use and reuses it for every later cell of the
same run, then returns the finished cell as a dict for the driver to write.
"""

from __future__ import annotations

import json
from typing import Any

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec

_BENCHMARKS: dict[str, Benchmark] = {}


def benchmark_for(spec_data: dict[str, Any]) -> Benchmark:
    """This process's Benchmark for the spec, built once (explicit plugins registered first)."""
    key = json.dumps(spec_data, sort_keys=True, default=str)
    if key not in _BENCHMARKS:
        for plugin in spec_data.get("plugins", []):
            registry.add_plugin_spec(plugin)
        _BENCHMARKS[key] = Benchmark(RunSpec(**spec_data))
    return _BENCHMARKS[key]


def execute_cell(spec_data: dict[str, Any], key: str) -> dict[str, Any]:
    """Find the planned cell by its key and execute it."""
    bench = benchmark_for(spec_data)
    plans = {plan.key: plan for plan in bench.plan()}
    if key not in plans:
        raise TTABenchError(f"cell {key} is not in the worker's plan: the spec differs between "
                            "driver and worker (versions, data, device or thread count)")
    return bench.execute(plans[key])
