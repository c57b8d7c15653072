"""Executing one cell: (model, suite split, adapter, estimators, seed) -> one result dict.

The order of work (see ``ttabench.api`` for the contracts):

1. the source pass: frozen model, eval mode, dataset order -> ``source`` accuracy, and the
   ``Outputs`` handed to every static estimator (labels withheld);
2. the ``bn`` pass: the same weights with test-batch statistics, over the first epoch of the
   seeded stream in batches of ``batch_size``;
3. the trajectory: the adapter steps through the seeded stream; the probe (the first
   ``probe_size`` images of the first draw, see ``ttabench.runner.stream`` for the two probe
   draws) is snapshotted with ``adapter.predict`` in chunks at each
   checkpoint any trajectory estimator asked for; the online predictions give the
   ``adapted`` accuracy. Adaptation stops at the last step any estimator needs (or at
   ``steps`` when given and larger).
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


@torch.no_grad()
def bn_accuracy(model: nn.Module, batches: _Batches, n: int, inputs: CellInputs,
                class_subset: list[int] | None) -> float:
    """Accuracy of the batch-statistics model over the first stream epoch, in batches of
    ``batch_size`` (a final batch of one image is merged into the one before)."""
    order = first_epoch(n, inputs.seed)
    chunks = batches_of(order, inputs.batch_size)
    bn_model = batch_statistics_copy(model)
    right = 0
    for x, y in batches.batches(chunks):
        logits = restrict(bn_model(to_unit_float(x).to(inputs.device)), class_subset)
        check_finite(logits, "the batch-statistics model")
        right += int(correct(logits, y, inputs.suite.label_sets).sum())
    _count(inputs, "bn_pass")
    return right / sum(len(c) for c in chunks)


def _trajectory(inputs: CellInputs, batches: _Batches, n: int, source_logits: torch.Tensor,
                trajectory: dict[str, TrajectoryEstimator]) -> dict[str, Any]:
    """Run the adapter along the seeded stream, feeding every trajectory estimator."""
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
    progress = tqdm(total=steps, desc=f"adapt {inputs.split.name}", leave=False,
                    disable=not inputs.show_progress)
    for step, (x, y) in enumerate(batches.batches(index_batches), start=1):
        x = to_unit_float(x).to(inputs.device)
        raw = adapter(x)
        logits = restrict(raw, class_subset)
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
    return {
        "adapted": right / seen if seen else None,
        "steps": steps,
        "probe_size": len(probe_idx),
        "probe_draw": probe_draw,
        "results": {name: est.compute(context) for name, est in trajectory.items()},
        "adapter_params": adapter.params(),
        "adapter_counters": adapter.counters(),
        **({"source_data": source_facts} if source_facts else {}),
    }


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
    targets: dict[str, float | None] = {"source": None, "bn": None}
    t = time.perf_counter()
    if inputs.labelled:
        targets["source"] = accuracy(split_pass.outputs.logits, labels, inputs.suite.label_sets)
        targets["bn"] = (bn_accuracy(module, batches, n, inputs, inputs.suite.class_subset)
                         if has_batch_norm(module) else targets["source"])
    timings["bn_pass"] = time.perf_counter() - t

    results: dict[str, Any] = {}
    t = time.perf_counter()
    for name, est in active.items():
        if isinstance(est, StaticEstimator):
            results[name] = est.estimate(split_pass.outputs, inputs.source_val)
    timings["static_estimators"] = time.perf_counter() - t

    trajectory = {name: est for name, est in active.items() if isinstance(est, TrajectoryEstimator)}
    adaptation: dict[str, Any] = {"adapted": None, "steps": 0, "probe_size": 0,
                                  "probe_draw": None, "adapter_params": {},
                                  "adapter_counters": {}}
    t = time.perf_counter()
    if trajectory or inputs.steps:
        adaptation = _trajectory(inputs, batches, n, split_pass.outputs.logits, trajectory)
        results.update(adaptation.pop("results"))
    timings["adaptation"] = time.perf_counter() - t
    adapted = adaptation.pop("adapted")
    targets["adapted"] = adapted if inputs.labelled else None
    timings["total"] = time.perf_counter() - start
    return {
        "n_examples": n,
        "data": {"skipped_files": int(getattr(dataset, "skipped_files", 0))},
        "targets": targets,
        "results": results,
        "skipped": skipped,
        "adaptation": adaptation,
        "timings": timings,
    }
