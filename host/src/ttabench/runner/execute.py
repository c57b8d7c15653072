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

Every static estimator is computed once per view (``ttabench.runner.views``). Step 1 and the
static estimates in the ``source`` and ``bn`` views do not depend on the adapter: they are
computed once per group of cells that differ only in it and reused (``ttabench.runner.shared``).
"""

from __future__ import annotations

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
)
from ttabench.errors import TTABenchError
from ttabench.runner.compute import (
    HostCopies,
    batch_to_device,
    compute_context,
    first_non_finite_row,
    prepare_model,
)
from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.first_snapshot import step0_snapshot
from ttabench.runner.passes import (
    StepFeatures,
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
from ttabench.runner.shared import RandomState, SharedCache, SharedWork
from ttabench.runner.streams import CellStream, cell_stream
from ttabench.runner.views import View, estimate_views, safe_result
from ttabench.runner.windows import static_windows, trajectory_windows, window_accuracy
from ttabench.spec import RunSpec, StreamSpec


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
    #: Source val as the adapter sees it before adapting: the ``adapted`` view's reference
    #: (``Adapter.source_val_reference``, ``Benchmark.source_val_adapted``).
    source_val_adapted: Outputs | None = None
    source_data: Dataset | None = None
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    cache_bytes: int = RunSpec.cache_mib << 20
    #: A cache of the stream's decoded images shared with other cells of the same stream (its
    #: own budget applies); None: the cell makes its own, of ``cache_bytes``.
    decoded: DecodedCache | None = None
    precision: str = "fp32"
    channels_last: bool = False
    show_progress: bool = False
    labelled: bool = True
    counters: dict[str, int] = field(default_factory=dict)
    #: The stream (its kind decides what ``order`` means); ``order``: the splits a multi-split
    #: stream reads, in order (None: ``[split]``).
    stream: StreamSpec = field(default_factory=StreamSpec)
    order: list[SplitSpec] | None = None
    #: Where the adapter-independent work of the cell's group (``group``, the cell's key
    #: without its adapter) is kept between cells; None: computed for this cell alone.
    shared: SharedCache | None = None
    group: str | None = None


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


def build_adapter(cls: type[Adapter], module: torch.nn.Module, params: dict[str, Any],
                  device: torch.device, source_data: Dataset | None, batch_size: int,
                  seed: int, loader: LoaderOptions) -> tuple[Adapter, dict[str, Any] | None]:
    """``cls`` on a fresh copy of ``module`` (with its source data, ``source_batches`` drawn
    with ``seed``, when it takes some) and the facts of that data."""
    model = copy.deepcopy(module).to(device)
    params = dict(params)
    source_facts = None
    if cls.source_data_param:
        if source_data is None:
            raise TTABenchError(f"adapter {cls.name!r} needs the suite's labelled "
                                "source-validation split")
        batches_of_source, source_facts = source_batches(
            source_data, cls.source_data_samples, batch_size, seed, loader)
        params[cls.source_data_param] = batches_of_source
    return cls(model, **params), source_facts


def _adapter(inputs: CellInputs) -> tuple[Adapter, dict[str, Any] | None]:
    """The cell's adapter (``build_adapter``), inside the sliding window of ``stats_window``
    images when batches are smaller."""
    adapter, source_facts = build_adapter(inputs.adapter_cls, inputs.model.module,
                                          inputs.adapter_params, inputs.device,
                                          inputs.source_data, inputs.batch_size, inputs.seed,
                                          inputs.loader)
    if inputs.stream.stats_window > inputs.batch_size:
        adapter = SlidingWindow(adapter, inputs.stream.stats_window)
    return adapter, source_facts


def _trajectory(inputs: CellInputs, reader: StreamReader, stream: CellStream, rows: torch.Tensor,
                source_logits: torch.Tensor, trajectory: dict[str, TrajectoryEstimator],
                probe: ProbeSetup, want_features: bool,
                bn_logits: torch.Tensor | None = None,
                views: dict[str, View] | None = None) -> Trajectory:
    """Run the adapter along the cell's stream, feeding every trajectory estimator every hook
    (``before_step``, ``on_step``, ``on_snapshot`` at its checkpoints). ``rows[i]`` is image
    ``i``'s row of the pass outputs (``source_logits``, ``bn_logits``), which spare the step-0
    snapshot the chunks it already holds; ``views`` (the static views, on every image of the
    cell's stream) are handed to the estimators in their context."""
    class_subset = inputs.suite.class_subset
    wanted, chunk, probe_draw = probe.wanted, probe.chunk, probe.draw
    epoch_order = stream.epoch
    probe_idx = epoch_order[: min(probe.size, len(epoch_order))]
    # the probe stays on the device, as the dataset gives it (uint8: a quarter of float32)
    probe_images = reader.take(probe_idx).to(inputs.device) if probe.size else None
    adapter, source_facts = _adapter(inputs)
    for est in trajectory.values():
        est.reset()

    def predict(part_rows: slice) -> torch.Tensor:
        assert probe_images is not None
        part = batch_to_device(probe_images[part_rows], inputs.device, inputs.channels_last)
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
    # no step waits for the device: outputs come back without a wait (HostCopies) and are
    # checked and counted once the trajectory has run
    online_logits = HostCopies()
    online_features: HostCopies | None = HostCopies() if want_features else None
    labels: list[torch.Tensor] = []
    progress = tqdm(total=len(stream.steps), desc=f"adapt {inputs.split.name}", leave=False,
                    disable=not inputs.show_progress)
    for step, (x, y) in enumerate(reader.batches(stream.steps), start=1):
        x = batch_to_device(x, inputs.device, inputs.channels_last)
        for est in trajectory.values():
            est.before_step(step, x, adapter, class_subset)
        hook = StepFeatures(adapter, inputs.model.classifier if online_features is not None
                            else None, online_features, len(x))
        try:
            raw = adapter(x)
        finally:
            hook.remove()
        if online_features is not None and not hook.usable():
            online_features = None  # a step without the declared features (feature_call None)
        logits = restrict(raw, class_subset)
        online_logits.add(logits)
        labels.append(y)
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
    logits_seen = online_logits.gather()
    if logits_seen is not None:
        if (bad := first_non_finite_row(logits_seen)) is not None:
            step_of_row = int(np.searchsorted(np.cumsum(record.images_per_step), bad, "right")) + 1
            check_finite(logits_seen[bad:bad + 1], f"the adapter at step {step_of_row}")
        right = correct(logits_seen, torch.cat(labels), inputs.suite.label_sets)
        record.correct_per_step = [int(part.sum()) for part in right.split(record.images_per_step)]
    features_seen = online_features.gather() if online_features is not None else None
    context = TrajectoryContext(
        num_classes=source_logits.shape[1],
        steps_run=len(stream.steps),
        probe_size=len(probe_idx),
        probe_source_logits=source_logits[rows[probe_idx]],
        dataset_size=len(epoch_order),
        model_id=inputs.model.model_id,
        source_val=inputs.source_val,
        model_num_classes=inputs.model.num_classes,
        precision=inputs.precision,
        views={name: (view.target, view.source_val) for name, view in (views or {}).items()},
    )
    online = online_rows = None
    if logits_seen is not None:
        online_rows = rows[torch.cat(stream.steps[: len(labels)])]
        online = Outputs(logits=logits_seen, frozen_logits=source_logits[online_rows],
                         features=features_seen)
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
    #: The views the static estimators were computed on (``source``, ``bn``, and ``adapted``
    #: when the cell adapted), for a caller that recomputes them (``ttabench estimate``'s
    #: bootstrap over images) or keeps them (the logit cache), and the rows of the ``source``
    #: view's outputs that the ``adapted`` view's rows are (``online_rows``).
    view_outputs: dict[str, View] = field(default_factory=dict)
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


def _shared_work(inputs: CellInputs, active: dict[str, Estimator], probe: ProbeSetup,
                 adapts: bool, steps: int) -> SharedWork:
    """The cell's adapter-independent work (``ttabench.runner.shared``): its stream, the source
    and bn passes from one read of each image, the ``source`` and ``bn`` targets and views, and
    every static estimate in those views."""
    timings: dict[str, float] = {}
    stream = cell_stream(inputs.stream, inputs.suite, inputs.order or [inputs.split], inputs.seed,
                         inputs.batch_size, steps if adapts else 0, stream_start(probe.draw),
                         inputs.loader)
    n = len(stream.epoch)
    check_split_size(n, inputs.split.name, active, inputs.batch_size, adapts=adapts)
    if adapts and max(probe.wanted, default=0) > len(stream.steps):
        raise TTABenchError(f"the stream has {len(stream.steps)} steps, fewer than the last "
                            f"checkpoint ({max(probe.wanted)}) an estimator needs")
    want_features = any("features" in est.needs for est in active.values())
    module = prepare_model(inputs.model.module, inputs.device, inputs.channels_last)

    t = time.perf_counter()
    cache = inputs.decoded if inputs.decoded is not None else DecodedCache(
        stream.size, inputs.cache_bytes if adapts else 0, keep_first=probe.size if adapts else 0)
    reader = StreamReader(stream.dataset, cache, inputs.loader)
    with compute_context(inputs.precision, inputs.device):
        passes = split_passes(module, reader, stream.epoch, stats_batch(inputs), inputs.device,
                              channels_last=inputs.channels_last, classifier=inputs.model.classifier, want_features=want_features,
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
    static = estimate_views(_static(active), views)
    timings["static_estimators"] = time.perf_counter() - t
    return SharedWork(stream=stream, cache=cache, passes=passes, rows=rows, targets=targets,
                      views=views, static=static, timings=timings, decodes=reader.decodes,
                      random_state=RandomState.now())


def _static(estimators: dict[str, Estimator]) -> dict[str, StaticEstimator]:
    return {name: est for name, est in estimators.items() if isinstance(est, StaticEstimator)}


def run_cell(inputs: CellInputs) -> CellOutput:
    """Execute one cell and return its targets, estimator results, adapter facts and timings.

    The adapter-independent work comes from ``inputs.shared`` when a cell of the same group
    (``inputs.group``) computed it, else is computed here (and kept there)."""
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
    shared = inputs.shared if inputs.shared is not None else SharedCache()
    work, computed = shared.get(inputs.group,
                                lambda: _shared_work(inputs, active, probe, adapts, steps))
    work.random_state.restore()  # as right after the passes, computed here or not
    timings.update(work.timings if computed else dict.fromkeys(work.timings, 0.0))
    stream, targets = work.stream, dict(work.targets)
    n = len(stream.epoch)
    reader = StreamReader(stream.dataset, work.cache, inputs.loader)
    static = _static(active)
    want_features = any("features" in est.needs for est in active.values())
    per_view = work.static_results()
    views = dict(work.views)  # this cell's: the shared static views, its own adapted one

    adaptation: dict[str, Any] = {"adapted": None, "steps": 0, "probe_size": 0,
                                  "probe_draw": None, "adapter_params": {},
                                  "adapter_counters": {}}
    results: dict[str, ViewResult] = {}
    windows: dict[str, list[ViewResult]] = {}
    record = None
    online_rows = None
    timings["adaptation"] = 0.0
    if adapts:
        t = time.perf_counter()
        with compute_context(inputs.precision, inputs.device):
            run = _trajectory(inputs, reader, stream, work.rows, work.passes.source.logits,
                              trajectory, probe, want_features, work.passes.bn.logits,
                              work.views)
        timings["adaptation"] = time.perf_counter() - t
        adaptation, results, windows, record = run.adaptation, run.results, run.windows, run.steps
        if inputs.labelled:
            record.accuracy = window_accuracy(record.correct_per_step, record.images_per_step,
                                              record.window)
        if run.online is not None:  # timed as static estimation alone, not as adaptation
            online_rows = run.online_rows
            adapted_view = views["adapted"] = View("adapted", run.online,
                                                   inputs.source_val_adapted)
            t = time.perf_counter()
            for name, by_view in estimate_views(
                    {k: e for k, e in static.items() if e.view in (None, "adapted")},
                    {"adapted": adapted_view}).items():
                per_view[name].update(by_view)
            windows.update(static_windows(static, adapted_view, record))
            timings["static_estimators"] += time.perf_counter() - t
    adapted = adaptation.pop("adapted")
    targets["adapted"] = adapted if inputs.labelled else None
    timings["total"] = time.perf_counter() - start
    decodes = reader.decodes + (work.decodes if computed else 0)
    return CellOutput(
        n_examples=n,
        data={"skipped_files": sum(inputs.suite.skipped_files.get(s.name, 0)
                                   for s in stream.splits),
              "passes": "computed" if computed else "reused",
              "decodes": decodes, "decodes_per_image": decodes / n,
              "cached_images": work.cache.cached, "cache_bytes_used": work.cache.used_bytes,
              "loader_workers": inputs.loader.workers, "pin_memory": inputs.loader.pin_memory},
        targets=targets, results=results, views=per_view, skipped=skipped,
        adaptation=adaptation, timings=timings, windows=windows, steps=record,
        view_outputs=views, online_rows=online_rows)
