"""A benchmark: the resolved run specification, its planned cells, and executing them.

``Benchmark`` loads the suite, the model and the plugins once (per process), plans the cells
(every selected split x adapter x seed), and executes one cell by its plan. Executors
(``ttabench.runner.executor``: in this process, a process pool or a Ray cluster) decide where
cells run; results are always written by the process that owns the output folder.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ttabench import registry
from ttabench.api import Estimator, Outputs, StaticEstimator, TrajectoryEstimator
from ttabench.errors import TTABenchError
from ttabench.paths import cache_dir
from ttabench.runner.cells import (
    CELL_SCHEMA,
    CellPlan,
    cell_path,
    environment_record,
    in_shard,
    is_finished,
    protocol_key,
    read_cell,
)
from ttabench.records import EstimatorRecord
from ttabench.runner.decoded_cache import DEFAULT_CACHE_MIB, LoaderOptions
from ttabench.runner.execute import PRECISIONS, CellInputs, run_cell, seed_everything
from ttabench.runner.passes import check_label_range, has_batch_norm, source_pass
from ttabench.runner.preflight import (
    check_adapter_setup,
    check_compute_options,
    check_severities,
    check_steps,
    resolve_device,
)
from ttabench.runner.resources import cpu_cores, default_threads, default_workers
from ttabench.runner.views import batch_statistics_val
from ttabench.suites.images import check_num_classes


@dataclass
class RunSpec:
    """Everything that defines a benchmark run; plain data, so it can travel to workers."""

    suite: str
    model: str
    adapters: list[str]
    estimators: list[str]
    suite_options: dict[str, Any] = field(default_factory=dict)
    adapter_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    estimator_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    batch_size: int = 64
    steps: int = 0
    splits: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=list)
    data_dir: str | None = None
    device: str | None = None
    #: DataLoader workers per cell; None: ``default_workers`` (4 at most, for suites that
    #: stream from disk, else 0).
    num_workers: int | None = None
    plugins: list[str] = field(default_factory=list)
    #: CPU threads per process; None: ``default_threads(cores, jobs)``.
    threads: int | None = None
    #: Cells running in parallel processes on this machine (sizes threads and workers).
    jobs: int = 1
    #: Byte budget (MiB) of the decoded images a cell keeps for its stream (0: the probe only).
    cache_mib: int = DEFAULT_CACHE_MIB
    #: ``"fp32"``, or ``"bf16"`` (autocast on CUDA); a protocol fact, it changes the numbers.
    precision: str = "fp32"
    #: Model weights and activations in channels_last memory format (CUDA only).
    channels_last: bool = False
    #: Extra keyword options of the model source (``trust_pickle`` from ``--trust-pickle``).
    model_options: dict[str, Any] = field(default_factory=dict)
    #: The estimators that are the configuration's baselines (role ``baseline``); the others
    #: (named by ``--estimator``) are candidates.
    baselines: list[str] = field(default_factory=list)
    #: The protocol preset of the run and its deviations (``ttabench.preset.record``), or None.
    preset: dict[str, Any] | None = None


def _instantiate(kind: str, name: str, params: dict[str, Any]) -> Any:
    cls = registry.get(kind, name)
    try:
        return cls(**params)
    except TypeError as err:
        raise TTABenchError(f"{kind[:-1]} {name!r}: bad parameters {params}: {err}") from None


def _plugin_record(kind: str, name: str) -> dict[str, Any]:
    """Name, kind, object path, distribution and version of a plugin (not its load status)."""
    record = asdict(registry.info(kind, name))
    record.pop("status", None)
    return record


class Benchmark:
    """A loaded run: suite, model, plugins, and the planned cells."""

    def __init__(self, spec: RunSpec, show_progress: bool = False) -> None:
        self.spec = spec
        self.show_progress = show_progress
        self.device = resolve_device(spec.device)
        check_compute_options(self.device, spec.precision, spec.channels_last, PRECISIONS)
        cores = cpu_cores()
        torch.set_num_threads(int(spec.threads or default_threads(cores, spec.jobs)))
        # The intra-op thread count changes the numbers on the CPU, so the key records the
        # count in effect, and worker processes are told it explicitly through the spec.
        self.threads = spec.threads = torch.get_num_threads()
        self.suite = registry.make_suite(spec.suite, data_dir=spec.data_dir, **spec.suite_options)
        self.model = registry.load_model(spec.model, cache_dir=cache_dir(),
                                         num_classes=self.suite.num_classes,
                                         options=spec.model_options)
        check_num_classes(self.suite, self.model)
        workers = spec.num_workers
        if workers is None:
            workers = default_workers(cores, spec.jobs, self.suite.streams_from_disk)
        self.loader = LoaderOptions(workers=workers, pin_memory=self.device.type == "cuda")
        self.estimators: dict[str, Estimator] = {
            name: _instantiate("estimators", name, spec.estimator_params.get(name, {}))
            for name in spec.estimators
        }
        check_steps(spec.steps, self.estimators)
        self.adapter_classes = {name: registry.get("adapters", name) for name in spec.adapters}
        needs_source = any(cls.source_data_param for cls in self.adapter_classes.values())
        self.source_data = self.suite.source_val() if needs_source else None
        for name, cls in self.adapter_classes.items():
            check_adapter_setup(name, cls, spec.adapter_params.get(name, {}), self.model,
                                self.source_data, self.suite.name)
        self.counters: dict[str, int] = {}
        self._source_val: Outputs | None = None
        self._source_val_done = False
        self._source_val_bn: Outputs | None = None
        self._plans: list[CellPlan] | None = None

    # ------------------------------------------------------------------ planning
    def selected_splits(self) -> list:
        """The suite's splits narrowed by ``splits`` glob patterns and ``severities``."""
        check_severities(self.spec.severities, self.suite)
        out = []
        for split in self.suite.splits():
            if self.spec.splits and not any(
                fnmatch.fnmatch(split.name, p) or fnmatch.fnmatch(split.dataset, p)
                for p in self.spec.splits
            ):
                continue
            if self.spec.severities and split.severity not in self.spec.severities \
                    and split.severity is not None:
                continue
            out.append(split)
        if not out:
            raise TTABenchError(
                f"no split of suite {self.suite.name!r} matches --splits {self.spec.splits} "
                f"--severities {self.spec.severities}; available: "
                + ", ".join(s.name for s in self.suite.splits()[:20])
            )
        return out

    def protocol(self, split, adapter: str, seed: int) -> dict[str, Any]:
        """The protocol record of one cell (what its key hashes)."""
        return {
            "suite": {"name": self.suite.name, "options": self.spec.suite_options,
                      "record": self.suite.record()},
            "split": asdict(split),
            "model": {"spec": self.spec.model, "id": self.model.model_id,
                      "weights_hash": self.model.weights_hash,
                      "num_classes": self.model.num_classes,
                      "preprocessing": self.model.preprocessing},
            "adapter": {"name": adapter, "params": self.spec.adapter_params.get(adapter, {}),
                        "plugin": _plugin_record("adapters", adapter),
                        **self._source_data_record(adapter)},
            "estimators": {name: {"params": est.params(),
                                  "plugin": _plugin_record("estimators", name)}
                           for name, est in sorted(self.estimators.items())},
            "batch_size": self.spec.batch_size,
            "steps": self.spec.steps,
            "seed": seed,
            "data_path": {"cache_mib": self.spec.cache_mib},
            "compute": {"precision": self.spec.precision,
                        "channels_last": self.spec.channels_last},
            "device_type": self.device.type,
            **({"threads": self.threads} if self.device.type == "cpu" else {}),
            "torch": torch.__version__,
            **({"preset": self.spec.preset} if self.spec.preset else {}),
        }

    def _source_data_record(self, adapter: str) -> dict[str, Any]:
        """What decides an adapter's source data (how many images, batch size), for the key."""
        cls = self.adapter_classes[adapter]
        if not cls.source_data_param:
            return {}
        samples = min(cls.source_data_samples, len(self.source_data))
        return {"source_data": {"split": "source_val", "samples": samples,
                                "batch_size": self.spec.batch_size, "seed": "the cell's seed"}}

    def plan(self) -> list[CellPlan]:
        """Every cell of the run, in a fixed order (split, adapter, seed); planned once per
        process (a worker looks up every cell it runs in it)."""
        if self._plans is not None:
            return list(self._plans)
        cells = []
        for split in self.selected_splits():
            for adapter in self.spec.adapters:
                for seed in self.spec.seeds:
                    protocol = self.protocol(split, adapter, seed)
                    cells.append(CellPlan(split, seed, protocol, protocol_key(protocol)))
        self._plans = cells
        return list(cells)

    # ------------------------------------------------------------------ execution
    def source_val(self) -> Outputs | None:
        """Labelled source-validation outputs, computed once per process when needed."""
        needed = any("source_val" in est.needs for est in self.estimators.values())
        if not needed or self._source_val_done:
            return self._source_val
        self._source_val_done = True
        dataset = self.suite.source_val()
        if dataset is None:
            return None
        want = any("features" in est.needs for est in self.estimators.values())
        seed_everything(0)
        result = source_pass(self.model.module.to(self.device), dataset, self.device,
                             classifier=self.model.classifier, want_features=want,
                             class_subset=self.suite.class_subset,
                             what="the source model on source-validation data")
        check_label_range(result.labels, result.outputs.logits.shape[1],
                          f"the source-validation split of suite {self.suite.name!r}")
        self._source_val = Outputs(result.outputs.logits, result.labels, result.outputs.features)
        if has_batch_norm(self.model.module):
            self._source_val_bn = batch_statistics_val(
                self.model.module, dataset, self.device, self.spec.batch_size,
                classifier=self.model.classifier, want_features=want,
                class_subset=self.suite.class_subset)
        else:
            self._source_val_bn = self._source_val
        return self._source_val

    def source_val_bn(self) -> Outputs | None:
        """Source val through the batch-statistics model (see ``ttabench.runner.views``)."""
        self.source_val()
        return self._source_val_bn

    def execute(self, plan: CellPlan) -> dict[str, Any]:
        """Run one cell and return its finished record (``ttabench.records.Cell`` as a dict)."""
        adapter = plan.protocol["adapter"]["name"]
        inputs = CellInputs(
            suite=self.suite, split=plan.split, model=self.model,
            adapter_cls=self.adapter_classes[adapter],
            adapter_params=dict(self.spec.adapter_params.get(adapter, {})),
            estimators=self.estimators, seed=plan.seed, batch_size=self.spec.batch_size,
            steps=self.spec.steps, device=self.device, source_val=self.source_val(),
            source_val_bn=self.source_val_bn(), source_data=self.source_data, loader=self.loader,
            cache_bytes=self.spec.cache_mib << 20, precision=self.spec.precision,
            channels_last=self.spec.channels_last,
            show_progress=self.show_progress, counters=self.counters,
        )
        out = run_cell(inputs)
        estimators: dict[str, Any] = {}
        for name, est in self.estimators.items():
            record = EstimatorRecord(
                target=est.target, kind=est.kind,
                role="baseline" if name in self.spec.baselines else "candidate",
                params=est.params(), plugin=plan.protocol["estimators"][name]["plugin"],
                trajectory=isinstance(est, TrajectoryEstimator),
                input=est.score_input, skipped=out["skipped"].get(name))
            if record.skipped is None and name in out["results"]:
                record.result = out["results"][name]
            elif record.skipped is None and isinstance(est, StaticEstimator) and est.view is not None:
                record.result = out["views"][name].get(est.view)
            elif record.skipped is None:
                record.views = out["views"][name]
            estimators[name] = asdict(record)
        return self._cell(plan, "ok", None, 1, {
            "n_examples": out["n_examples"], "data": out["data"], "targets": out["targets"],
            "estimators": estimators, "adaptation": out["adaptation"], "timings": out["timings"],
        })

    def _cell(self, plan: CellPlan, status: str, error: str | None, attempts: int,
              body: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": CELL_SCHEMA, "key": plan.key, "status": status, "error": error,
            "attempts": attempts, "suite": self.suite.name, "model": self.spec.model,
            "adapter": plan.protocol["adapter"]["name"], "seed": plan.seed,
            "split": asdict(plan.split), "protocol": plan.protocol,
            "environment": environment_record(self.device), **body,
        }

    def failed(self, plan: CellPlan, error: str, attempts: int) -> dict[str, Any]:
        """The record of a cell that failed: kept so the leaderboard can list it."""
        return self._cell(plan, "failed", error, attempts, {"targets": {}, "estimators": {}})


def pending_cells(plans: list[CellPlan], output: Path, shard: tuple[int, int] | None) -> list[CellPlan]:
    """Cells of this shard without a finished result in ``output``."""
    return [p for p in plans if in_shard(p.key, shard) and not is_finished(output, p.key)]


def collect_cells(output: Path, plans: list[CellPlan]) -> list[dict[str, Any]]:
    """The result files of the planned cells that exist in ``output``."""
    cells = []
    for plan in plans:
        cell = read_cell(cell_path(output, plan.key))
        if cell is not None:
            cells.append(cell)
    return cells
