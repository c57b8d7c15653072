"""Running one continual-scenario cell: one adapter over the whole scenario stream, no reset.

Per step the adapter adapts on the batch and its logits are the online predictions; the
record keeps, per window of ``W`` steps, the online accuracy
``acc_w = (sum of correct predictions in steps [wW, (w+1)W)) / (images in those steps)``,
the steps at which the adapter's ``resets`` counter grew (its resets, e.g. RDumb's schedule or
a guard's decisions), and each observing estimator's per-window estimates with their mean
absolute error against ``acc_w``.

An observing estimator is a ``TrajectoryEstimator`` (its ``on_step`` sees every batch) that
has a method ``window_estimates(window: int) -> list[float]``: one accuracy estimate per
window, for the adapted model's online predictions in that window. One that also has
``window_features() -> list[dict[str, float]]`` has them kept beside its estimates (what a
map from features to accuracy is fitted on, on calibration scenarios).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch

from ttabench.api import Adapter, LoadedModel, Suite, TrajectoryEstimator, to_unit_float
from ttabench.errors import TTABenchError
from ttabench.runner.execute import seed_everything
from ttabench.runner.passes import correct
from ttabench.scenarios.spec import ScenarioSpec
from ttabench.scenarios.stream import scenario_batches


@dataclass
class ScenarioInputs:
    """Everything one scenario cell needs, already loaded."""

    suite: Suite
    order: list[Any]
    spec: ScenarioSpec
    model: LoadedModel
    adapter_cls: type[Adapter]
    adapter_params: dict[str, Any]
    estimators: dict[str, TrajectoryEstimator]
    seed: int
    batch_size: int
    device: torch.device


def windowed_accuracy(correct_per_step: list[int], images_per_step: list[int],
                      window: int) -> list[float]:
    """``acc_w = sum(correct[wW:(w+1)W]) / sum(images[wW:(w+1)W])`` (a last partial window
    counts the steps it has)."""
    out = []
    for start in range(0, len(correct_per_step), window):
        hits = sum(correct_per_step[start:start + window])
        seen = sum(images_per_step[start:start + window])
        out.append(hits / seen)
    return out


def mean_absolute_error(estimates: list[float], truths: list[float]) -> float:
    """``(1/n) sum_w |estimate_w - truth_w|`` as a fraction."""
    if len(estimates) != len(truths) or not truths:
        raise TTABenchError(f"{len(estimates)} window estimates for {len(truths)} windows")
    return sum(abs(e - t) for e, t in zip(estimates, truths)) / len(truths)


def run_scenario(inputs: ScenarioInputs, show_progress: bool = False) -> dict[str, Any]:
    """Adapt along the scenario and return the cell's results (see the module docstring)."""
    seed_everything(inputs.seed)
    device = inputs.device
    model = copy.deepcopy(inputs.model.module).to(device)
    adapter = inputs.adapter_cls(model, **inputs.adapter_params)
    for est in inputs.estimators.values():
        est.reset()
    subset = inputs.suite.class_subset
    label_sets = inputs.suite.label_sets
    hits: list[int] = []
    seen: list[int] = []
    segments: list[int] = []
    reset_steps: list[int] = []
    resets_before = int(adapter.counters().get("resets", 0))
    started = time.perf_counter()
    batches = scenario_batches(inputs.suite, inputs.order, inputs.spec, inputs.seed,
                               inputs.batch_size)
    if show_progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=len(inputs.order) * inputs.spec.steps_per_split,
                       desc=f"{inputs.adapter_cls.name} seed {inputs.seed}", leave=False)
    for batch in batches:
        x = to_unit_float(batch.images).to(device)
        for est in inputs.estimators.values():
            est.before_step(batch.step + 1, x, adapter, subset)
        logits = adapter(x)
        if subset is not None:
            logits = logits[:, subset]
        hits.append(int(correct(logits, batch.labels, label_sets).sum()))
        seen.append(len(batch.labels))
        segments.append(batch.segment)
        resets_now = int(adapter.counters().get("resets", 0))
        if resets_now > resets_before:
            reset_steps.append(batch.step)
        resets_before = resets_now
        for est in inputs.estimators.values():
            est.on_step(batch.step + 1, x, logits, adapter)
    window = inputs.spec.window
    truth = windowed_accuracy(hits, seen, window)
    estimates: dict[str, Any] = {}
    for name, est in inputs.estimators.items():
        results = est.window_results(window) or []
        values = [float(r.value) for r in results]
        estimates[name] = {"windows": values, "mae": mean_absolute_error(values, truth),
                           "params": est.params(), "features": [r.scores for r in results]}
    return {
        "online_accuracy": sum(hits) / sum(seen),
        "window_accuracy": truth,
        "correct_per_step": hits,
        "segment_per_step": segments,
        "reset_steps": reset_steps,
        "adapter_counters": adapter.counters(),
        "adapter_params": adapter.params(),
        "estimators": estimates,
        "seconds": time.perf_counter() - started,
    }
