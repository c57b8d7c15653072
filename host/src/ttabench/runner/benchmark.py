"""A benchmark: the resolved run specification, its planned cells, and executing them.

``Benchmark`` loads the suite, the model and the plugins once (per process), plans the cells
(the stream's cells over the selected splits x adapter x seed; ``ttabench.runner.streams``),
and executes one cell by its plan into a typed ``ttabench.records.Cell``. Executors
(``ttabench.runner.executor``: in this process, a process pool or a Ray cluster) decide where
cells run; results are always written by the process that owns the output folder.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ttabench import registry
from ttabench.api import (
    Estimator,
    Outputs,
    PoolEstimator,
    SplitSpec,
    StaticEstimator,
    Suite,
    TrajectoryEstimator,
)
from ttabench.errors import TTABenchError
from ttabench.paths import cache_dir
from ttabench.records import Cell, EstimatorRecord, read_cell
from ttabench.runner.cells import (
    CellPlan,
    cell_key,
    cell_path,
    environment_record,
    group_key,
    in_shard,
    is_finished,
    locations,
)
from ttabench.runner.decoded_cache import LoaderOptions
from ttabench.runner.device_facts import check_same_facts, configure_device, device_facts
from ttabench.runner.execute import (
    CellInputs,
    CellOutput,
    build_adapter,
    run_cell,
    seed_everything,
)
from ttabench.runner.logit_cache import FOLDER as LOGIT_FOLDER
from ttabench.runner.logit_cache import LogitCache, source_val_record, view_record
from ttabench.runner.passes import check_label_range
from ttabench.runner.preflight import (
    check_adapter_setup,
    check_batch_statistics,
    check_calibrations,
    check_compute_options,
    check_severities,
    check_some_split_fits,
    check_steps,
    check_stream_length,
    check_stream_seeds,
    planned_device,
    resolve_device,
)
from ttabench.runner.streams import stream_cells, stream_record
from ttabench.runner.resources import cpu_cores, default_threads, default_workers
from ttabench.runner.shared import SharedCache
from ttabench.runner.views import adapter_reference, reference_passes, reference_record
from ttabench.spec import PRECISIONS, RunSpec
from ttabench.suites.images import check_num_classes


def _instantiate(kind: str, name: str, params: dict[str, Any]) -> Any:
    cls = registry.get(kind, name)
    try:
        return cls(**params)
    except TypeError as err:
        raise TTABenchError(f"{kind[:-1]} {name!r}: bad parameters {params}: {err}") from None


def plugin_record(kind: str, name: str) -> dict[str, Any]:
    """Name, kind, object path, distribution and version of a plugin (not its load status)."""
    record = asdict(registry.info(kind, name))
    record.pop("status", None)
    return record


class Benchmark:
    """A loaded run: suite, model, plugins, and the planned cells."""

    def __init__(self, spec: RunSpec, show_progress: bool = False, runs_cells: bool = True,
                 suite: Suite | None = None) -> None:
        """``runs_cells`` False: this process only plans and records the cells, which run
        elsewhere (a Ray driver): the device is not looked for here, and the key holds the
        settings of ``device_facts`` but not the GPU model (each cell's ``environment`` names
        the GPU that ran it). ``suite``: the loaded suite, when another Benchmark of the run
        (another model) loaded it already."""
        self.spec = spec
        self.show_progress = show_progress
        self.device = resolve_device(spec.device) if runs_cells else planned_device(spec.device)
        check_compute_options(self.device, spec.precision, spec.channels_last, PRECISIONS)
        configure_device(self.device, spec.deterministic, runs_cells)
        here = device_facts(self.device, gpu_known=runs_cells)
        if spec.device_facts is None:
            spec.device_facts = here
        elif runs_cells:
            check_same_facts(spec.device_facts, here)
        self.device_facts = spec.device_facts
        cores = cpu_cores()
        torch.set_num_threads(int(spec.threads or default_threads(cores, spec.jobs)))
        # The intra-op thread count changes the numbers on the CPU, so the key records the
        # count in effect, and worker processes are told it explicitly through the spec.
        self.threads = spec.threads = torch.get_num_threads()
        self.suite = suite or registry.make_suite(spec.suite, data_dir=spec.data_dir,
                                                  **spec.suite_options)
        self.model = registry.load_model(spec.model, cache_dir=cache_dir(),
                                         num_classes=self.suite.num_classes,
                                         options=spec.model_options)
        check_num_classes(self.suite, self.model)
        workers = spec.num_workers
        if workers is None:
            workers = default_workers(cores, spec.jobs, self.suite.streams_from_disk)
        self.loader = LoaderOptions(workers=workers, pin_memory=self.device.type == "cuda")
        every: dict[str, Estimator] = {
            name: _instantiate("estimators", name, spec.estimator_params.get(name, {}))
            for name in spec.estimators
        }
        #: The estimators a cell runs; those that compare models (``PoolEstimator``) are
        #: computed from the logit cache once every model's cells are done
        #: (``ttabench.runner.rescore``), so they are in no cell's key.
        self.estimators = {n: e for n, e in every.items() if not isinstance(e, PoolEstimator)}
        self.pool_estimators = {n: e for n, e in every.items() if isinstance(e, PoolEstimator)}
        check_steps(spec.steps, self.estimators, spec.stream)
        self.cache = (LogitCache(Path(spec.output) / LOGIT_FOLDER)
                      if spec.logit_cache and spec.output else None)
        check_calibrations(self.estimators, {"model": self.model.model_id,
                                             "num_classes": self.model.num_classes,
                                             "precision": spec.precision})
        self.adapter_classes = {name: registry.get("adapters", name) for name in spec.adapters}
        needs_source = any(cls.source_data_param for cls in self.adapter_classes.values())
        self.source_data = self.suite.source_val() if needs_source else None
        for name, cls in self.adapter_classes.items():
            check_adapter_setup(name, cls, spec.adapter_params.get(name, {}), self.model,
                                self.source_data, self.suite.name)
        check_batch_statistics(spec.batch_size, spec.stream.stats_window, self.model.module)
        self.counters: dict[str, int] = {}
        self._source_val: Outputs | None = None
        self._source_val_done = False
        self._source_val_bn: Outputs | None = None
        self._source_val_entries: dict[str, str] = {}
        self._source_val_adapted: dict[str, Outputs | None] = {}
        self.shared = SharedCache()
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

    def protocol(self, split: SplitSpec, adapter: str, seed: int,
                 order: list[SplitSpec] | None = None,
                 order_seed: int | None = None) -> dict[str, Any]:
        """The protocol record of one cell (what its key hashes, ``cell_key``)."""
        suite, model, _ = locations(self.suite, self.spec.suite_options, self.model,
                                    self.spec.model)
        return {
            "suite": suite,
            "split": asdict(split),
            "stream": stream_record(self.spec.stream, order or [split], order_seed,
                                    self.spec.batch_size),
            "model": model,
            "adapter": {"name": adapter, "params": self.spec.adapter_params.get(adapter, {}),
                        "plugin": plugin_record("adapters", adapter),
                        **self._source_data_record(adapter)},
            "estimators": {name: {"params": est.params(),
                                  "plugin": plugin_record("estimators", name)}
                           for name, est in sorted(self.estimators.items())},
            "batch_size": self.spec.batch_size,
            "steps": self.spec.steps,
            "seed": seed,
            "data_path": {"cache_mib": self.spec.cache_mib},
            **({"reference": reference_record()} if self._uses_source_val() else {}),
            "compute": {"precision": self.spec.precision,
                        "channels_last": self.spec.channels_last},
            "device_type": self.device.type,
            **({"cuda": self.device_facts} if self.device_facts else {}),
            **({"threads": self.threads} if self.device.type == "cpu" else {}),
            "torch": torch.__version__,
            **({"preset": self.spec.preset} if self.spec.preset else {}),
        }

    def _uses_source_val(self) -> bool:
        return any("source_val" in est.needs for est in self.estimators.values())

    def _source_data_record(self, adapter: str) -> dict[str, Any]:
        """What decides an adapter's source data (how many images, batch size), for the key."""
        cls = self.adapter_classes[adapter]
        if not cls.source_data_param:
            return {}
        samples = min(cls.source_data_samples, len(self.source_data))
        return {"source_data": {"split": "source_val", "samples": samples,
                                "batch_size": self.spec.batch_size, "seed": "the cell's seed"}}

    def plan(self) -> list[CellPlan]:
        """Every cell of the run, in a fixed order (the stream's cells, then seed, then adapter:
        the cells of a group, which share their adapter-independent work, one after another);
        planned once per process (a worker looks up every cell it runs in it)."""
        if self._plans is not None:
            return list(self._plans)
        cells = []
        selected = self.selected_splits()
        if self.spec.stream.resets:
            self._check_sizes(selected)
        else:
            check_stream_seeds(self.spec.seeds)
        for split, order, order_seed in stream_cells(self.spec.stream, selected):
            check_stream_length(self.spec.stream, self.suite, order, self.spec.batch_size,
                                self.estimators, split.name)
            for seed in self.spec.seeds:
                for adapter in self.spec.adapters:
                    protocol = self.protocol(split, adapter, seed, order, order_seed)
                    cells.append(CellPlan(split, seed, protocol, cell_key(protocol),
                                          None if self.spec.stream.resets else order))
        self._plans = cells
        return list(cells)

    def _check_sizes(self, splits: list) -> None:
        """Refuse a batch or probe larger than every selected split (``check_some_split_fits``),
        with the estimators a cell would run (those whose needs the suite and model meet)."""
        has_val = any("source_val" in e.needs for e in self.estimators.values()) and \
            self.suite.source_val() is not None
        active = {name: est for name, est in self.estimators.items()
                  if ("source_val" not in est.needs or has_val)
                  and ("features" not in est.needs or self.model.classifier is not None)}
        adapts = self.spec.steps > 0 or any(isinstance(e, TrajectoryEstimator)
                                            for e in active.values())
        check_some_split_fits(((s.name, self.suite.size(s)) for s in splits), active,
                              self.spec.batch_size, adapts)

    # ------------------------------------------------------------------ execution
    def source_val(self) -> Outputs | None:
        """Labelled source-validation outputs, computed once per process when needed."""
        needed = self._uses_source_val() or self.cache is not None or any(
            "source_val" in est.needs for est in self.pool_estimators.values())
        if not needed or self._source_val_done:
            return self._source_val
        self._source_val_done = True
        dataset = self.suite.source_val()
        if dataset is None:
            return None
        want = any("features" in est.needs for est in self.estimators.values())
        seed_everything(0)
        self._source_val, self._source_val_bn = reference_passes(
            self.model.module, dataset, self.device,
            max(self.spec.batch_size, self.spec.stream.stats_window), self.loader,
            precision=self.spec.precision, channels_last=self.spec.channels_last,
            classifier=self.model.classifier, want_features=want,
            class_subset=self.suite.class_subset)
        check_label_range(self._source_val.labels, self._source_val.logits.shape[1],
                          f"the source-validation split of suite {self.suite.name!r}")
        return self._source_val

    def source_val_bn(self) -> Outputs | None:
        """Source val through the batch-statistics model (see ``ttabench.runner.views``)."""
        self.source_val()
        return self._source_val_bn

    def source_val_adapted(self, adapter: str) -> Outputs | None:
        """Source val as ``adapter``'s model gives it before adapting, the ``adapted`` view's
        reference (``Adapter.source_val_reference``): the batch-statistics model's, the frozen
        model's, or a fresh adapter's ``predict`` over it (computed once per process)."""
        cls = self.adapter_classes[adapter]
        if cls.source_val_reference == "source":
            return self.source_val()
        if cls.source_val_reference == "bn" or self.source_val() is None:
            return self.source_val_bn()
        if adapter not in self._source_val_adapted:
            seed_everything(0)
            fresh, _ = build_adapter(cls, self.model.module,
                                     self.spec.adapter_params.get(adapter, {}), self.device,
                                     self.source_data, self.spec.batch_size, 0, self.loader)
            self._source_val_adapted[adapter] = adapter_reference(
                fresh, self.suite.source_val(), self.device,
                max(self.spec.batch_size, self.spec.stream.stats_window), self.loader,
                precision=self.spec.precision, channels_last=self.spec.channels_last,
                classifier=self.model.classifier,
                want_features=any("features" in e.needs for e in self.estimators.values()),
                class_subset=self.suite.class_subset)
        return self._source_val_adapted[adapter]

    def execute(self, plan: CellPlan) -> Cell:
        """Run one cell and return its finished record."""
        adapter = plan.protocol["adapter"]["name"]
        inputs = CellInputs(
            suite=self.suite, split=plan.split, model=self.model,
            adapter_cls=self.adapter_classes[adapter],
            adapter_params=dict(self.spec.adapter_params.get(adapter, {})),
            estimators=self.estimators, seed=plan.seed, batch_size=self.spec.batch_size,
            steps=self.spec.steps, device=self.device, source_val=self.source_val(),
            source_val_bn=self.source_val_bn(), source_val_adapted=self.source_val_adapted(adapter),
            source_data=self.source_data, loader=self.loader,
            cache_bytes=self.spec.cache_mib << 20, precision=self.spec.precision,
            channels_last=self.spec.channels_last,
            show_progress=self.show_progress, counters=self.counters,
            stream=self.spec.stream, order=plan.order,
            shared=self.shared, group=group_key(plan.protocol),
        )
        out = run_cell(inputs)
        outputs = self._keep_outputs(plan, out) if self.cache is not None else {}
        estimators: dict[str, EstimatorRecord] = {}
        for name, est in self.estimators.items():
            record = EstimatorRecord(
                target=est.target, kind=est.kind,
                role="baseline" if name in self.spec.baselines else "candidate",
                params=est.params(), plugin=plan.protocol["estimators"][name]["plugin"],
                trajectory=isinstance(est, TrajectoryEstimator),
                input=est.score_input, skipped=out.skipped.get(name),
                windows=out.windows.get(name, []))
            if record.skipped is None and name in out.results:
                record.result = out.results[name]
            elif record.skipped is None and isinstance(est, StaticEstimator) and est.view is not None:
                record.result = out.views[name].get(est.view)
            elif record.skipped is None:
                record.views = out.views[name]
            estimators[name] = record
        return self._cell(plan, "ok", None, 1, n_examples=out.n_examples, data=out.data,
                          targets=out.targets, estimators=estimators,
                          adaptation=out.adaptation, timings=out.timings, windows=out.steps,
                          outputs=outputs)

    def _keep_outputs(self, plan: CellPlan, out: CellOutput) -> dict[str, str]:
        """Store the cell's view outputs and the model's source-val outputs in the logit
        cache (``ttabench.runner.logit_cache``); their digests, by view."""
        assert self.cache is not None
        trajectory = [n for n, e in self.estimators.items() if isinstance(e, TrajectoryEstimator)]
        digests: dict[str, str] = {}
        for view, seen in out.view_outputs.items():
            outputs = seen.target
            record = view_record(plan.protocol, view, trajectory, outputs.features is not None)
            if view == "source":
                digests[view] = self.cache.put(record, outputs)
            else:
                rows = (out.online_rows if view == "adapted"
                        else torch.arange(len(outputs.logits)))
                digests[view] = self.cache.put(record, outputs, frozen=digests["source"],
                                               frozen_rows=rows)
        return {**digests, **self._source_val_in_cache(plan.protocol)}

    def _source_val_in_cache(self, protocol: dict[str, Any]) -> dict[str, str]:
        """The entries of this model's source-val outputs in each view (the ``adapted`` view's
        is the cell's adapter's reference, ``source_val_adapted``), each stored once per
        process."""
        assert self.cache is not None
        adapter = protocol["adapter"]["name"]
        batch = max(self.spec.batch_size, self.spec.stream.stats_window)
        found = {}
        for view, name, compute in (
                ("source", "source", self.source_val), ("bn", "bn", self.source_val_bn),
                ("adapted", f"adapted:{adapter}", lambda: self.source_val_adapted(adapter))):
            if name not in self._source_val_entries:
                val = compute()
                if val is None:
                    continue
                record = source_val_record(protocol, view, batch, val.features is not None)
                self._source_val_entries[name] = self.cache.put(record, val)
            found[f"source_val:{view}"] = self._source_val_entries[name]
        return found

    def _cell(self, plan: CellPlan, status: str, error: str | None, attempts: int,
              **body: Any) -> Cell:
        where = locations(self.suite, self.spec.suite_options, self.model, self.spec.model)[2]
        return Cell(key=plan.key, status=status, error=error, attempts=attempts,
                    suite=self.suite.name, model=self.spec.model,
                    adapter=plan.protocol["adapter"]["name"], seed=plan.seed,
                    split=asdict(plan.split), protocol=plan.protocol,
                    environment=environment_record(self.device), location=where, **body)

    def failed(self, plan: CellPlan, error: str, attempts: int) -> Cell:
        """The record of a cell that failed: kept so the leaderboard can list it."""
        return self._cell(plan, "failed", error, attempts)


def pending_cells(plans: list[CellPlan], output: Path, shard: tuple[int, int] | None) -> list[CellPlan]:
    """Cells of this shard without a finished result in ``output``."""
    return [p for p in plans if in_shard(p.key, shard) and not is_finished(output, p.key)]


def collect_cells(output: Path, plans: list[CellPlan]) -> list[Cell]:
    """The readable result files of the planned cells in ``output``."""
    cells = []
    for plan in plans:
        path = cell_path(output, plan.key)
        if path.exists():
            try:
                cells.append(read_cell(path))
            except TTABenchError:  # damaged: a rerun computes it again
                continue
    return cells
