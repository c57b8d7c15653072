"""Executing one cell: (model, suite split, adapter, estimators, seed) -> one result dict.

The order of work (see ``ttabench.api`` for the contracts):

1. the source pass: frozen model, eval mode, dataset order -> ``source`` accuracy and the
   ``source`` view's outputs (labels withheld);
2. the ``bn`` pass: the same weights with test-batch statistics, over the first epoch of the
   seeded stream in batches of ``batch_size`` -> ``bn`` accuracy and the ``bn`` view's outputs;
3. the trajectory: the adapter steps through the seeded stream; the probe (the first
   ``probe_size`` images of the first draw, see ``ttabench.runner.stream`` for the two probe
   draws) is snapshotted with ``adapter.predict`` in chunks at each
   checkpoint any trajectory estimator asked for; the online predictions give the
   ``adapted`` accuracy and the ``adapted`` view's outputs. Adaptation stops at the last step
   any estimator needs (or at ``steps`` when given and larger).

Every static estimator is computed once per view (``ttabench.runner.views``).
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
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
from ttabench.runner.passes import (
    FeatureHook,
    accuracy,
    batch_statistics_copy,
    check_finite,
    check_label_range,
    correct,
    has_batch_norm,
    restrict,
    source_pass,
)
from ttabench.runner.preflight import check_split_size
from ttabench.runner.stream import (
    batches_of,
    first_epoch,
    gather,
    source_batches,
    stream_indices,
    stream_start,
)
from ttabench.runner.views import View, estimate_views, safe_result


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
    num_workers: int = 0
    show_progress: bool = False
    labelled: bool = True
    counters: dict[str, int] = field(default_factory=dict)


def _count(inputs: CellInputs, name: str) -> None:
    inputs.counters[name] = inputs.counters.get(name, 0) + 1


class _Batches:
    """Serves stream batches from in-memory images or by reading the dataset."""

    def __init__(self, dataset: Dataset, images: torch.Tensor | None, labels: torch.Tensor,
                 num_workers: int) -> None:
        self.dataset, self.images, self.labels, self.num_workers = dataset, images, labels, num_workers

    def batches(self, index_batches: list[torch.Tensor]):
        if self.images is not None:
            for idx in index_batches:
                yield self.images[idx], self.labels[idx]
            return
        loader = DataLoader(self.dataset, batch_sampler=[i.tolist() for i in index_batches],
                            num_workers=self.num_workers)
        yield from loader

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is not None:
            return self.images[indices], self.labels[indices]
        return gather(self.dataset, indices)


@dataclass
class BnPass:
    """The batch-statistics pass: its accuracy and outputs, rows in stream order ``order``."""

    accuracy: float | None
    outputs: Outputs
    order: torch.Tensor


@torch.no_grad()
def bn_pass(model: nn.Module, batches: _Batches, n: int, inputs: CellInputs,
            class_subset: list[int] | None, labels_known: bool, want_features: bool) -> BnPass:
    """The batch-statistics model over the first stream epoch, in batches of ``batch_size``
    (a final batch of one image is merged into the one before): accuracy, logits and
    (``want_features``) penultimate features."""
    order = first_epoch(n, inputs.seed)
    chunks = batches_of(order, inputs.batch_size)
    bn_model = batch_statistics_copy(model)
    hook = FeatureHook(bn_model, inputs.model.classifier if want_features else None)
    right, parts = 0, []
    try:
        for x, y in batches.batches(chunks):
            logits = restrict(bn_model(to_unit_float(x).to(inputs.device)), class_subset)
            check_finite(logits, "the batch-statistics model")
            parts.append(logits.float().cpu())
            if labels_known:
                right += int(correct(logits, y, inputs.suite.label_sets).sum())
    finally:
        features = hook.close()
    _count(inputs, "bn_pass")
    seen = torch.cat(chunks)
    return BnPass(right / len(seen) if labels_known else None,
                  Outputs(logits=torch.cat(parts), features=features), seen)


def _trajectory(inputs: CellInputs, batches: _Batches, n: int, source_logits: torch.Tensor,
                trajectory: dict[str, TrajectoryEstimator], want_features: bool
                ) -> tuple[dict[str, Any], Outputs | None]:
    """Run the adapter along the seeded stream, feeding every trajectory estimator; returns
    the adaptation record and the online outputs (the ``adapted`` view's target outputs, rows
    in stream order, with the frozen logits of the same images)."""
    class_subset = inputs.suite.class_subset
    plans = {name: est.plan() for name, est in trajectory.items()}
    probe_size = max((p.probe_size for p in plans.values()), default=0)
    chunks = {p.chunk for p in plans.values() if p.probe_size}
    if len(chunks) > 1:
        raise TTABenchError(f"trajectory estimators ask for different probe chunks {sorted(chunks)}")
    chunk = chunks.pop() if chunks else 100
    draws = {p.probe_draw for p in plans.values() if p.probe_size}
    if len(draws) > 1:
        raise TTABenchError(f"trajectory estimators ask for different probe draws {sorted(draws)}")
    probe_draw = draws.pop() if draws else "stream"
    start = stream_start(probe_draw)
    wanted: dict[int, list[str]] = {}
    for name, plan in plans.items():
        for step in plan.checkpoints:
            wanted.setdefault(int(step), []).append(name)
    steps = max([inputs.steps, *wanted.keys()])
    if steps == 0 and trajectory:  # step-only estimators and no --steps: one epoch
        steps = n // inputs.batch_size
    probe_idx = first_epoch(n, inputs.seed)[: min(probe_size, n)]
    probe_images, _ = batches.take(probe_idx) if probe_size else (None, None)

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
    for est in trajectory.values():
        est.reset()

    def snapshot(step: int) -> None:
        if step not in wanted or probe_images is None:
            return
        parts = [restrict(adapter.predict(to_unit_float(part).to(inputs.device)), class_subset)
                 for part in torch.split(probe_images, chunk)]
        logits = torch.cat(parts).float().cpu()
        check_finite(logits, f"the adapted model at step {step}")
        _count(inputs, "snapshot")
        for name in wanted[step]:
            trajectory[name].on_snapshot(step, logits)

    snapshot(0)
    right = seen = 0
    index_batches = list(stream_indices(n, inputs.seed, inputs.batch_size, steps, start))
    online_logits: list[torch.Tensor] = []
    online_features: list[torch.Tensor] | None = [] if want_features else None
    progress = tqdm(total=steps, desc=f"adapt {inputs.split.name}", leave=False,
                    disable=not inputs.show_progress)
    for step, (x, y) in enumerate(batches.batches(index_batches), start=1):
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
        right += int(correct(logits, y, inputs.suite.label_sets).sum())
        seen += len(y)
        for est in trajectory.values():
            est.on_step(step, x, logits, adapter)
        snapshot(step)
        progress.update(1)
    progress.close()
    _count(inputs, "trajectory")
    context = TrajectoryContext(
        num_classes=source_logits.shape[1],
        steps_run=steps,
        probe_size=len(probe_idx),
        probe_source_logits=source_logits[probe_idx],
        dataset_size=n,
        model_id=inputs.model.model_id,
        source_val=inputs.source_val,
        model_num_classes=inputs.model.num_classes,
    )
    online = None
    if online_logits:
        taken = torch.cat(index_batches[: len(online_logits)])
        online = Outputs(logits=torch.cat(online_logits), frozen_logits=source_logits[taken],
                         features=torch.cat(online_features) if online_features else None)
    return {
        "adapted": right / seen if seen else None,
        "steps": steps,
        "probe_size": len(probe_idx),
        "probe_draw": probe_draw,
        "results": {name: safe_result(lambda est=est: est.compute(context))
                    for name, est in trajectory.items()},
        "adapter_params": adapter.params(),
        "adapter_counters": adapter.counters(),
        **({"source_data": source_facts} if source_facts else {}),
    }, online


def _skip_reason(est: Estimator, inputs: CellInputs) -> str | None:
    if "source_val" in est.needs and inputs.source_val is None:
        return f"needs a labelled source-validation split; suite {inputs.suite.name!r} has none"
    if "features" in est.needs and inputs.model.classifier is None:
        return "needs penultimate features; the model exposes no classifier layer"
    return None


def run_cell(inputs: CellInputs) -> dict[str, Any]:
    """Execute one cell and return its targets, estimator results, adapter facts and timings."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    seed_everything(inputs.seed)
    dataset = inputs.suite.dataset(inputs.split)
    n = len(dataset)
    skipped = {name: reason for name, est in inputs.estimators.items()
               if (reason := _skip_reason(est, inputs))}
    active = {name: est for name, est in inputs.estimators.items() if name not in skipped}
    check_split_size(n, inputs.split.name, active, inputs.batch_size,
                     adapts=inputs.steps > 0 or any(isinstance(e, TrajectoryEstimator)
                                                    for e in active.values()))
    want_features = any("features" in est.needs for est in active.values())
    module = inputs.model.module.to(inputs.device)

    t = time.perf_counter()
    split_pass = source_pass(module, dataset, inputs.device, classifier=inputs.model.classifier,
                             want_features=want_features, class_subset=inputs.suite.class_subset,
                             num_workers=inputs.num_workers,
                             what=f"the source model on split {inputs.split.name!r}")
    _count(inputs, "source_pass")
    labels = split_pass.labels
    if inputs.labelled:
        check_label_range(labels, split_pass.outputs.logits.shape[1],
                          f"split {inputs.split.name!r} of suite {inputs.suite.name!r}",
                          inputs.suite.label_sets)
    timings["source_pass"] = time.perf_counter() - t
    batches = _Batches(dataset, split_pass.images, labels, inputs.num_workers)
    source_logits = split_pass.outputs.logits
    static = {name: est for name, est in active.items() if isinstance(est, StaticEstimator)}
    trajectory = {name: est for name, est in active.items() if isinstance(est, TrajectoryEstimator)}
    targets: dict[str, float | None] = {"source": None, "bn": None}
    if inputs.labelled:
        targets["source"] = accuracy(source_logits, labels, inputs.suite.label_sets)
    views = {"source": View("source", Outputs(source_logits, features=split_pass.outputs.features,
                                              frozen_logits=source_logits), inputs.source_val)}
    t = time.perf_counter()
    if has_batch_norm(module) and (inputs.labelled or static):
        bn = bn_pass(module, batches, n, inputs, inputs.suite.class_subset, inputs.labelled,
                     want_features)
        targets["bn"] = bn.accuracy
        views["bn"] = View("bn", Outputs(bn.outputs.logits, features=bn.outputs.features,
                                         frozen_logits=source_logits[bn.order]),
                           inputs.source_val_bn)
    else:  # no batch normalization: the batch-statistics model is the frozen one
        targets["bn"] = targets["source"]
        views["bn"] = View("bn", views["source"].target, inputs.source_val)
    timings["bn_pass"] = time.perf_counter() - t

    t = time.perf_counter()
    per_view = estimate_views(static, views)
    timings["static_estimators"] = time.perf_counter() - t

    adaptation: dict[str, Any] = {"adapted": None, "steps": 0, "probe_size": 0,
                                  "probe_draw": None, "adapter_params": {},
                                  "adapter_counters": {}}
    results: dict[str, Any] = {}
    t = time.perf_counter()
    if trajectory or inputs.steps:
        adaptation, online = _trajectory(inputs, batches, n, source_logits, trajectory,
                                         want_features)
        results.update(adaptation.pop("results"))
        if online is not None:
            adapted_view = View("adapted", online, views["bn"].source_val)
            u = time.perf_counter()
            for name, by_view in estimate_views(
                    {k: e for k, e in static.items() if e.view is None},
                    {"adapted": adapted_view}).items():
                per_view[name].update(by_view)
            timings["static_estimators"] += time.perf_counter() - u
    timings["adaptation"] = time.perf_counter() - t
    adapted = adaptation.pop("adapted")
    targets["adapted"] = adapted if inputs.labelled else None
    timings["total"] = time.perf_counter() - start
    return {
        "n_examples": n,
        "data": {"skipped_files": int(getattr(dataset, "skipped_files", 0))},
        "targets": targets,
        "results": results,
        "views": per_view,
        "skipped": skipped,
        "adaptation": adaptation,
        "timings": timings,
    }
