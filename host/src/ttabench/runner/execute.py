"""Executing one cell: (model, its stream, adapter, estimators, seed) -> ``CellOutput``.

The cell's stream (``ttabench.runner.streams``: one split, or several for a continual,
gradual or mixed stream) gives the order its images are first seen in (the epoch) and the
adaptation's batches. The order of work (see ``ttabench.api`` for the contracts):

1. the source and ``bn`` passes, from one read of each image (``split_passes``): the frozen
   model in eval mode -> ``source`` accuracy and the ``Outputs`` handed to every static
   estimator (labels withheld); the same weights with test-batch statistics -> ``bn``, both
   over the stream's epoch in batches of ``batch_size`` (of the stats window when it is
   larger, ``ttabench.runner.small_batch``). The decoded images
   stay in a ``DecodedCache`` within ``cache_bytes`` (the probe always), and the stream reads
   only what it lacks (``decodes`` in the cell's ``data`` record);
2. the trajectory: the adapter steps through the seeded stream; the probe (the first
   ``probe_size`` images of the first draw, see ``ttabench.runner.stream`` for the two probe
   draws) is snapshotted with ``adapter.predict`` in chunks at each
   checkpoint any trajectory estimator asked for; the online predictions give the
   ``adapted`` accuracy and the ``adapted`` view's outputs. Adaptation stops at the last step
   any estimator needs (or at ``steps`` when given and larger) for ``reset-each-split``; the
   other kinds run their whole stream. Every hook of every trajectory estimator is called in
   every kind (``_trajectory``, the one per-step loop);
3. per window of ``W`` steps, the online accuracy and every estimator's estimate of it
   (``ttabench.runner.windows``).

Every static estimator is computed once per view (``ttabench.runner.views``).
"""

from __future__ import annotations

import contextlib
import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from ttabench.api import (
    Adapter,
    Estimator,
    LoadedModel,
    Outputs,
    SplitSpec,
    StaticEstimator,
    Suite,
    TrajectoryContext,
    TrajectoryEstimator,
    to_unit_float,
)
from ttabench.errors import TTABenchError
from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.first_snapshot import step0_snapshot
from ttabench.runner.passes import (
    FeatureHook,
    accuracy,
    check_finite,
    check_label_range,
    correct,
    restrict,
    split_passes,
)
from ttabench.runner.preflight import check_split_size
from ttabench.runner.stream import source_batches, stream_start
from ttabench.records import ViewResult, WindowRecord
from ttabench.runner.small_batch import SlidingWindow
from ttabench.runner.streams import CellStream, cell_stream
from ttabench.runner.views import View, estimate_views, safe_result
from ttabench.runner.windows import static_windows, trajectory_windows, window_accuracy
from ttabench.spec import RunSpec, StreamSpec


def compute_context(inputs: CellInputs) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 on CUDA when ``precision == "bf16"``, else nothing."""
    if inputs.precision == "bf16":
        return torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class CellInputs:
    """Everything one cell needs, already loaded."""

    suite: Suite
    split: SplitSpec
    model: LoadedModel
    adapter_cls: type[Adapter]
    adapter_params: dict[str, Any]
    estimators: dict[str, Estimator]
    seed: int
    batch_size: int
    steps: int
    device: torch.device
    source_val: Outputs | None = None
    source_val_bn: Outputs | None = None
    source_data: Dataset | None = None
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    cache_bytes: int = RunSpec.cache_mib << 20
    precision: str = "fp32"
    channels_last: bool = False
    show_progress: bool = False
    labelled: bool = True
    counters: dict[str, int] = field(default_factory=dict)
    #: The stream (its kind decides what ``order`` means); ``order``: the splits a multi-split
    #: stream reads, in order (None: ``[split]``).
    stream: StreamSpec = field(default_factory=StreamSpec)
    order: list[SplitSpec] | None = None


def _count(inputs: CellInputs, name: str) -> None:
    inputs.counters[name] = inputs.counters.get(name, 0) + 1


@dataclass(frozen=True)
class ProbeSetup:
    """What the trajectory estimators ask of the probe: its size, snapshot chunk and draw,
    and the steps at which each one wants a snapshot."""

    size: int
    chunk: int
    draw: str
    wanted: dict[int, list[str]]


def probe_setup(trajectory: dict[str, TrajectoryEstimator]) -> ProbeSetup:
    """The estimators' plans merged; they must agree on the chunk and the draw."""
    plans = {name: est.plan() for name, est in trajectory.items()}
    chunks = {p.chunk for p in plans.values() if p.probe_size}
    if len(chunks) > 1:
        raise TTABenchError(f"trajectory estimators ask for different probe chunks {sorted(chunks)}")
    draws = {p.probe_draw for p in plans.values() if p.probe_size}
    if len(draws) > 1:
        raise TTABenchError(f"trajectory estimators ask for different probe draws {sorted(draws)}")
    wanted: dict[int, list[str]] = {}
    for name, plan in plans.items():
        for step in plan.checkpoints:
            wanted.setdefault(int(step), []).append(name)
    return ProbeSetup(size=max((p.probe_size for p in plans.values()), default=0),
                      chunk=chunks.pop() if chunks else 100,
                      draw=draws.pop() if draws else "stream", wanted=wanted)


@dataclass
class Trajectory:
    """What the adaptation along a cell's stream gave: the adaptation record, the online outputs
    (the ``adapted`` view's target outputs, rows in stream order, with the frozen logits of the
    same images), the step record and each trajectory estimator's results (whole and per
    window)."""

    adaptation: dict[str, Any]
    online: Outputs | None
    steps: WindowRecord
    results: dict[str, ViewResult]
    windows: dict[str, list[ViewResult]]
    #: ``online_rows[i]``: the row of the pass outputs (dataset order) of online row ``i``.
    online_rows: torch.Tensor | None = None


def _adapter(inputs: CellInputs) -> tuple[Adapter, dict[str, Any] | None]:
    """The cell's adapter on a fresh copy of the model (with its source data when it takes
    some), inside the sliding window of ``stats_window`` images when batches are smaller."""
    model = copy.deepcopy(inputs.model.module).to(inputs.device)
    params = dict(inputs.adapter_params)
    source_facts = None
    if inputs.adapter_cls.source_data_param:
        if inputs.source_data is None:
            raise TTABenchError(f"adapter {inputs.adapter_cls.name!r} needs the suite's labelled "
                                "source-validation split")
        batches_of_source, source_facts = source_batches(
            inputs.source_data, inputs.adapter_cls.source_data_samples, inputs.batch_size,
            inputs.seed)
        params[inputs.adapter_cls.source_data_param] = batches_of_source
    adapter = inputs.adapter_cls(model, **params)
    if inputs.stream.stats_window > inputs.batch_size:
        adapter = SlidingWindow(adapter, inputs.stream.stats_window)
    return adapter, source_facts


def _trajectory(inputs: CellInputs, reader: StreamReader, stream: CellStream, rows: torch.Tensor,
                source_logits: torch.Tensor, trajectory: dict[str, TrajectoryEstimator],
                probe: ProbeSetup, want_features: bool,
                bn_logits: torch.Tensor | None = None) -> Trajectory:
    """Run the adapter along the cell's stream, feeding every trajectory estimator every hook
    (``before_step``, ``on_step``, ``on_snapshot`` at its checkpoints). ``rows[i]`` is image
    ``i``'s row of the pass outputs (``source_logits``, ``bn_logits``), which spare the step-0
    snapshot the chunks it already holds."""
    class_subset = inputs.suite.class_subset
    wanted, chunk, probe_draw = probe.wanted, probe.chunk, probe.draw
    epoch_order = stream.epoch
    probe_idx = epoch_order[: min(probe.size, len(epoch_order))]
    probe_images = reader.take(probe_idx) if probe.size else None
    adapter, source_facts = _adapter(inputs)
    for est in trajectory.values():
        est.reset()

    def predict(part_rows: slice) -> torch.Tensor:
        assert probe_images is not None
        part = to_unit_float(probe_images[part_rows]).to(inputs.device)
        return restrict(adapter.predict(part), class_subset).float().cpu()

    def snapshot(step: int) -> None:
        if step not in wanted or probe_images is None:
            return
        if step == 0:  # the bn pass's rows where they are the same (first_snapshot)
            logits, _ = step0_snapshot(
                predict, probe_idx, chunk, epoch_order, stats_batch(inputs),
                None if bn_logits is None else bn_logits[rows[probe_idx]])
        else:
            logits = torch.cat([predict(slice(start, start + chunk))
                                for start in range(0, len(probe_idx), chunk)])
        check_finite(logits, f"the adapted model at step {step}")
        _count(inputs, "snapshot")
        for name in wanted[step]:
            trajectory[name].on_snapshot(step, logits)

    snapshot(0)
    record = WindowRecord(window=inputs.stream.window)
    resets = int(adapter.counters().get("resets", 0))
    online_logits: list[torch.Tensor] = []
    online_features: list[torch.Tensor] | None = [] if want_features else None
    progress = tqdm(total=len(stream.steps), desc=f"adapt {inputs.split.name}", leave=False,
                    disable=not inputs.show_progress)
    for step, (x, y) in enumerate(reader.batches(stream.steps), start=1):
        x = to_unit_float(x).to(inputs.device)
        for est in trajectory.values():
            est.before_step(step, x, adapter, class_subset)
        hook = FeatureHook(adapter.model, inputs.model.classifier if online_features is not None
                           else None)
        try:
            raw = adapter(x)
        finally:
            features = hook.close()
        if online_features is not None:  # kept only when the step ran one forward pass
            online_features = (online_features + [features]
                               if features is not None and len(features) == len(x) else None)
        logits = restrict(raw, class_subset)
        online_logits.append(logits.detach().float().cpu())
        check_finite(logits, f"the adapter at step {step}")
        record.correct_per_step.append(int(correct(logits, y, inputs.suite.label_sets).sum()))
        record.images_per_step.append(len(y))
        record.segment_per_step.append(stream.segments[step - 1])
        now = int(adapter.counters().get("resets", 0))
        if now > resets:
            record.reset_steps.append(step - 1)
        resets = now
        for est in trajectory.values():
            est.on_step(step, x, logits, adapter)
        snapshot(step)
        progress.update(1)
    progress.close()
    _count(inputs, "trajectory")
    context = TrajectoryContext(
        num_classes=source_logits.shape[1],
        steps_run=len(stream.steps),
        probe_size=len(probe_idx),
        probe_source_logits=source_logits[rows[probe_idx]],
        dataset_size=len(epoch_order),
        model_id=inputs.model.model_id,
        source_val=inputs.source_val,
        model_num_classes=inputs.model.num_classes,
    )
    online = online_rows = None
    if online_logits:
        online_rows = rows[torch.cat(stream.steps[: len(online_logits)])]
        online = Outputs(logits=torch.cat(online_logits), frozen_logits=source_logits[online_rows],
                         features=torch.cat(online_features) if online_features else None)
    seen = sum(record.images_per_step)
    results = {name: safe_result(lambda est=est: est.compute(context))
               for name, est in trajectory.items()}  # window_results come after compute
    return Trajectory(
        adaptation={
            "adapted": sum(record.correct_per_step) / seen if seen else None,
            "steps": len(stream.steps),
            "probe_size": len(probe_idx),
            "probe_draw": probe_draw,
            "adapter_params": adapter.params(),
            "adapter_counters": adapter.counters(),
            **({"source_data": source_facts} if source_facts else {}),
        },
        online=online, steps=record, results=results,
        windows=trajectory_windows(trajectory, record), online_rows=online_rows)


@dataclass
class CellOutput:
    """What one cell computed: ``results`` (view-free: trajectory estimators and static ones
    with a ``view``), ``views`` (every other static estimator, per view), ``skipped`` (why an
    estimator was not run), the rest as the cell record holds it (``ttabench.records.Cell``)."""

    n_examples: int
    data: dict[str, Any]
    targets: dict[str, float | None]
    results: dict[str, ViewResult]
    views: dict[str, dict[str, ViewResult]]
    skipped: dict[str, str]
    adaptation: dict[str, Any]
    timings: dict[str, float]
    #: Per estimator its result per window (``ttabench.runner.windows``); the step record.
    windows: dict[str, list[ViewResult]] = field(default_factory=dict)
    steps: WindowRecord | None = None
    #: Each view's target outputs (what the logit cache keeps), and the rows of the
    #: ``source`` view's outputs that the ``adapted`` view's rows are (``online_rows``).
    outputs: dict[str, Outputs] = field(default_factory=dict)
    online_rows: torch.Tensor | None = None

    def result(self, name: str, view: str) -> ViewResult | None:
        """Estimator ``name``'s result in ``view`` (its view-free one when it has that)."""
        return self.results.get(name) or self.views.get(name, {}).get(view)


def _skip_reason(est: Estimator, inputs: CellInputs) -> str | None:
    if "source_val" in est.needs and inputs.source_val is None:
        return f"needs a labelled source-validation split; suite {inputs.suite.name!r} has none"
    if "features" in est.needs and inputs.model.classifier is None:
        return "needs penultimate features; the model exposes no classifier layer"
    return None


def stats_batch(inputs: CellInputs) -> int:
    """The batch of the batch-statistics passes: the stream's batch, or the stats window when
    it is larger (``ttabench.runner.small_batch``)."""
    return max(inputs.batch_size, inputs.stream.stats_window)


def run_cell(inputs: CellInputs) -> CellOutput:
    """Execute one cell and return its targets, estimator results, adapter facts and timings."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    seed_everything(inputs.seed)
    skipped = {name: reason for name, est in inputs.estimators.items()
               if (reason := _skip_reason(est, inputs))}
    active = {name: est for name, est in inputs.estimators.items() if name not in skipped}
    trajectory = {name: est for name, est in active.items() if isinstance(est, TrajectoryEstimator)}
    probe = probe_setup(trajectory)
    adapts = bool(trajectory or inputs.steps) or not inputs.stream.resets
    steps = max([inputs.steps, *probe.wanted.keys()])
    if steps == 0 and trajectory:  # step-only estimators and no --steps: one epoch
        steps = -1
    stream = cell_stream(inputs.stream, inputs.suite, inputs.order or [inputs.split], inputs.seed,
                         inputs.batch_size, steps if adapts else 0, stream_start(probe.draw),
                         inputs.loader)
    n = len(stream.epoch)
    check_split_size(n, inputs.split.name, active, inputs.batch_size, adapts=adapts)
    if adapts and max(probe.wanted, default=0) > len(stream.steps):
        raise TTABenchError(f"the stream has {len(stream.steps)} steps, fewer than the last "
                            f"checkpoint ({max(probe.wanted)}) an estimator needs")
    want_features = any("features" in est.needs for est in active.values())
    module = inputs.model.module.to(inputs.device)
    if inputs.channels_last:
        module = module.to(memory_format=torch.channels_last)

    t = time.perf_counter()
    cache = DecodedCache(stream.size, inputs.cache_bytes if adapts else 0,
                         keep_first=probe.size if adapts else 0)
    reader = StreamReader(stream.dataset, cache, inputs.loader)
    with compute_context(inputs):
        passes = split_passes(module, reader, stream.epoch, stats_batch(inputs), inputs.device,
                              classifier=inputs.model.classifier, want_features=want_features,
                              class_subset=inputs.suite.class_subset,
                              what=f"the source model on split {inputs.split.name!r}")
    _count(inputs, "source_pass")
    _count(inputs, "bn_pass")
    labels = passes.labels
    if inputs.labelled:
        check_label_range(labels, passes.source.logits.shape[1],
                          f"split {inputs.split.name!r} of suite {inputs.suite.name!r}",
                          inputs.suite.label_sets)
    timings["source_and_bn_pass"] = time.perf_counter() - t
    # the passes' rows are the epoch's images by index: rows[i] is image i's row
    rows = torch.full((stream.size,), -1, dtype=torch.long)
    rows[torch.sort(stream.epoch).values] = torch.arange(n)
    static = {name: est for name, est in active.items() if isinstance(est, StaticEstimator)}
    targets: dict[str, float | None] = {"source": None, "bn": None}
    if inputs.labelled:
        targets["source"] = accuracy(passes.source.logits, labels, inputs.suite.label_sets)
        targets["bn"] = accuracy(passes.bn.logits, labels, inputs.suite.label_sets)
    # both passes are in the same row order, so the frozen logits align row by row
    source_logits = passes.source.logits
    views = {
        "source": View("source", Outputs(source_logits, features=passes.source.features,
                                         frozen_logits=source_logits), inputs.source_val),
        "bn": View("bn", Outputs(passes.bn.logits, features=passes.bn.features,
                                 frozen_logits=source_logits),
                   inputs.source_val_bn if passes.bn is not passes.source else inputs.source_val),
    }

    t = time.perf_counter()
    per_view = estimate_views(static, views)
    timings["static_estimators"] = time.perf_counter() - t

    adaptation: dict[str, Any] = {"adapted": None, "steps": 0, "probe_size": 0,
                                  "probe_draw": None, "adapter_params": {},
                                  "adapter_counters": {}}
    results: dict[str, ViewResult] = {}
    windows: dict[str, list[ViewResult]] = {}
    record = None
    outputs = {name: view.target for name, view in views.items()}
    online_rows = None
    timings["adaptation"] = 0.0
    if adapts:
        t = time.perf_counter()
        with compute_context(inputs):
            run = _trajectory(inputs, reader, stream, rows, source_logits, trajectory, probe,
                              want_features, passes.bn.logits)
        timings["adaptation"] = time.perf_counter() - t
        adaptation, results, windows, record = run.adaptation, run.results, run.windows, run.steps
        if inputs.labelled:
            record.accuracy = window_accuracy(record.correct_per_step, record.images_per_step,
                                              record.window)
        if run.online is not None:  # timed as static estimation alone, not as adaptation
            outputs["adapted"], online_rows = run.online, run.online_rows
            adapted_view = View("adapted", run.online, views["bn"].source_val)
            t = time.perf_counter()
            for name, by_view in estimate_views(
                    {k: e for k, e in static.items() if e.view is None},
                    {"adapted": adapted_view}).items():
                per_view[name].update(by_view)
            windows.update(static_windows(static, adapted_view, record))
            timings["static_estimators"] += time.perf_counter() - t
    adapted = adaptation.pop("adapted")
    targets["adapted"] = adapted if inputs.labelled else None
    timings["total"] = time.perf_counter() - start
    return CellOutput(
        n_examples=n,
        data={"skipped_files": sum(inputs.suite.skipped_files.get(s.name, 0)
                                   for s in stream.splits),
              "decodes": reader.decodes, "decodes_per_image": reader.decodes / n,
              "cached_images": cache.cached, "cache_bytes_used": cache.used_bytes,
              "loader_workers": inputs.loader.workers, "pin_memory": inputs.loader.pin_memory},
        targets=targets, results=results, views=per_view, skipped=skipped,
        adaptation=adaptation, timings=timings, windows=windows, steps=record,
        outputs=outputs, online_rows=online_rows)
