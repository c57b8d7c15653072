"""Scenario cells: planning, keys, resume and the record written for each.

A scenario cell is (model, suite, scenario, adapter, estimator set, seed). Its protocol record
holds everything that decides its numbers (the suite and its record, the scenario spec and the
split order it drew, model id and weights hash, adapter and estimator parameters and plugins,
batch size, seed, torch version, device type, CPU threads); its key is ``protocol_key`` of it,
as for every cell of the host. The result lives in ``<output>/scenarios/<key>.json``, written
atomically (schema ``ttabench.scenario/1``); a rerun skips every finished key.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ttabench import registry
from ttabench.api import TrajectoryEstimator
from ttabench.errors import TTABenchError
from ttabench.paths import cache_dir
from ttabench.runner.benchmark import _instantiate, _plugin_record
from ttabench.runner.cells import environment_record, protocol_key
from ttabench.runner.preflight import check_adapter_setup, resolve_device
from ttabench.store import write_json_atomic
from ttabench.scenarios.run import ScenarioInputs, run_scenario
from ttabench.scenarios.spec import ScenarioSpec, scenario_order, scenario_pool
from ttabench.suites.images import check_num_classes

SCENARIO_SCHEMA = "ttabench.scenario/1"


@dataclass
class ScenarioRun:
    """Everything that defines a set of scenario cells; plain data."""

    output: Path
    spec: ScenarioSpec
    adapters: list[str]
    suite: str = "mnist-c"
    model: str = "mnist-cnn"
    seeds: list[int] = field(default_factory=lambda: [0])
    estimators: list[str] = field(default_factory=list)
    adapter_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    estimator_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    suite_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64
    device: str | None = None
    threads: int | None = None
    data_dir: str | None = None


def scenario_path(output: Path, key: str) -> Path:
    return Path(output) / "scenarios" / f"{key}.json"


def read_scenario(path: Path) -> dict[str, Any] | None:
    """A scenario cell's content, or None when missing, unreadable or not one."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCENARIO_SCHEMA else None


class ScenarioBench:
    """A loaded scenario run: suite, model, plugins, the split order and the planned cells.

    Everything a user can get wrong is checked here, before any cell runs."""

    def __init__(self, run: ScenarioRun) -> None:
        if run.batch_size < 2:
            raise TTABenchError(f"--batch-size must be at least 2, got {run.batch_size}")
        if not run.adapters:
            raise TTABenchError("name at least one adapter (--adapter)")
        self.run = run
        self.device = resolve_device(run.device)
        if run.threads:
            torch.set_num_threads(int(run.threads))
        self.threads = torch.get_num_threads()
        self.suite = registry.make_suite(run.suite, data_dir=run.data_dir, **run.suite_options)
        self.model = registry.load_model(run.model, cache_dir=cache_dir(),
                                         num_classes=self.suite.num_classes)
        check_num_classes(self.suite, self.model)
        self.order = scenario_order(scenario_pool(self.suite, run.spec), run.spec.order_seed)
        for split in self.order:
            size = self.suite.size(split)
            if size < run.batch_size:
                raise TTABenchError(f"split {split.name!r} has {size} images, fewer than one "
                                    f"batch of {run.batch_size}; lower --batch-size")
        self.adapter_classes = {name: registry.get("adapters", name) for name in run.adapters}
        for name, cls in self.adapter_classes.items():
            if cls.source_data_param:
                raise TTABenchError(f"adapter {name} needs labelled source data; continual "
                                    "scenarios run adapters that need none")
            check_adapter_setup(name, cls, run.adapter_params.get(name, {}), self.model,
                                None, self.suite.name)
        for name in run.estimators:
            est = self._estimator(name)
            if not isinstance(est, TrajectoryEstimator) or \
                    type(est).window_results is TrajectoryEstimator.window_results:
                raise TTABenchError(f"estimator {name} gives no per-window estimate; a "
                                    "continual scenario takes trajectory estimators with "
                                    "window_estimates (see `ttabench ls estimators`)")

    def _estimator(self, name: str) -> TrajectoryEstimator:
        return _instantiate("estimators", name, self.run.estimator_params.get(name, {}))

    def protocol(self, adapter: str, seed: int) -> dict[str, Any]:
        run = self.run
        return {
            "suite": {"name": self.suite.name, "options": run.suite_options,
                      "record": self.suite.record()},
            "scenario": {**run.spec.record(), "order": [s.name for s in self.order]},
            "model": {"spec": run.model, "id": self.model.model_id,
                      "weights_hash": self.model.weights_hash},
            "adapter": {"name": adapter, "params": run.adapter_params.get(adapter, {}),
                        "plugin": _plugin_record("adapters", adapter)},
            "estimators": {name: {"params": self._estimator(name).params(),
                                  "plugin": _plugin_record("estimators", name)}
                           for name in sorted(run.estimators)},
            "batch_size": run.batch_size,
            "seed": seed,
            "device_type": self.device.type,
            **({"threads": self.threads} if self.device.type == "cpu" else {}),
            "torch": torch.__version__,
        }

    def plan(self) -> list[tuple[str, int, dict[str, Any], str]]:
        """Every cell as (adapter, seed, protocol, key), adapters then seeds."""
        cells = []
        for adapter in self.run.adapters:
            for seed in self.run.seeds:
                protocol = self.protocol(adapter, seed)
                cells.append((adapter, seed, protocol, protocol_key(protocol)))
        return cells

    def execute(self, show_progress: bool = False) -> list[dict[str, Any]]:
        """Run every unfinished cell, write each atomically, return every cell's record."""
        records = []
        for adapter, seed, protocol, key in self.plan():
            path = scenario_path(self.run.output, key)
            done = read_scenario(path)
            if done is not None:
                records.append(done)
                continue
            started = time.time()
            result = run_scenario(ScenarioInputs(
                suite=self.suite, order=self.order, spec=self.run.spec, model=self.model,
                adapter_cls=self.adapter_classes[adapter],
                adapter_params=self.run.adapter_params.get(adapter, {}),
                estimators={name: self._estimator(name) for name in self.run.estimators},
                seed=seed, batch_size=self.run.batch_size, device=self.device),
                show_progress=show_progress)
            record = {"schema": SCENARIO_SCHEMA, "key": key, "status": "ok",
                      "adapter": adapter, "seed": seed, "protocol": protocol,
                      "environment": environment_record(self.device),
                      "started": started, **result}
            write_json_atomic(path, record)
            records.append(record)
        return records
