"""``ttabench run --dry-run``: the planned cells and every protocol fact that decides their
numbers, printed before anything runs (nothing is computed, nothing is written)."""

from __future__ import annotations

import copy
from typing import Any

from ttabench.api import TrajectoryEstimator
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import CellPlan
from ttabench.runner.device_facts import device_line


def _fmt(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def trajectory_facts(bench: Benchmark) -> dict[str, Any]:
    """Probe size, probe draw, chunk and the steps the adaptation will run."""
    plans = [est.plan() for est in bench.estimators.values()
             if isinstance(est, TrajectoryEstimator)]
    probe = max((p.probe_size for p in plans), default=0)
    last = max((max(p.checkpoints, default=0) for p in plans), default=0)
    return {
        "probe_size": probe,
        "probe_draw": sorted({p.probe_draw for p in plans if p.probe_size}) or None,
        "chunk": sorted({p.chunk for p in plans if p.probe_size}) or None,
        "checkpoints": sorted({k for p in plans for k in p.checkpoints}),
        "steps": max(bench.spec.steps, last),
    }


def describe(bench: Benchmark, plans: list[CellPlan]) -> list[str]:
    """The lines ``--dry-run`` prints."""
    spec, model, suite = bench.spec, bench.model, bench.suite
    facts = trajectory_facts(bench)
    lines = [
        f"suite {suite.name}: {len(suite.splits())} splits, {suite.num_classes} classes"
        + (f", logits restricted to {len(suite.class_subset)}" if suite.class_subset else "")
        + (f", {len(suite.label_sets)} label sets" if suite.label_sets else "")
        + f", source val: {'yes' if suite.source_val() is not None else 'none'}",
        f"model {model.model_id} ({model.num_classes} classes, weights {model.weights_hash[:16]}), "
        f"device {device_line(bench.device, bench.device_facts, bench.threads)}",
        f"batch size {spec.batch_size}, seeds {spec.seeds}, steps {facts['steps']} "
        f"(--steps {spec.steps}; checkpoints {facts['checkpoints']})",
        f"probe: {facts['probe_size']} images, draw {facts['probe_draw']}, chunk {facts['chunk']}",
        f"stream {spec.stream.name}: window {spec.stream.window} steps"
        + ("" if spec.stream.resets else
           f", {spec.stream.steps_per_split or 'one pass of'} steps per split")
        + (", splits in the suite's order" if spec.stream.split_order == "suite" else "")
        + ("" if spec.stream.shuffle else ", each split in the files' order (not shuffled)")
        + (f", delta {spec.stream.delta}" if spec.stream.correlated else "")
        + (f", batch statistics over the last {spec.stream.stats_window} images"
           if spec.stream.stats_window > spec.batch_size else ""),
    ]
    for name, cls in bench.adapter_classes.items():
        adapter = cls(copy.deepcopy(model.module), **spec.adapter_params.get(name, {}))
        lines.append(f"adapter {name}: {_fmt(adapter.params())}")
    for name, est in bench.estimators.items():
        cal = est.calibration
        line = f"estimator {name} (target {est.target}, {est.kind}): {_fmt(est.params())}"
        if cal is not None:
            line += (f"; calibration {cal.id} maps {cal.input} to {cal.target} accuracy, "
                     f"fitted for {cal.fitted_for}")
        lines.append(line)
    for name, pool_est in bench.pool_estimators.items():
        lines.append(f"estimator {name} (target {pool_est.target}, {pool_est.kind}, compares "
                     f"models in views {', '.join(pool_est.views)}): {_fmt(pool_est.params())}; "
                     "computed from the logit cache once every model's cells are done")
    lines.append(f"{len(plans)} cells of model {spec.model}:")
    lines.append("key               split | dataset | role | adapter | seed | images | epochs")
    for plan in plans:
        images = sum(suite.size(split) for split in plan.order or [plan.split])
        epochs = facts["steps"] * spec.batch_size / images if images and not plan.order else 1.0
        lines.append(f"{plan.key}  {plan.split.name} | {plan.split.dataset} | {plan.split.role} "
                     f"| {plan.protocol['adapter']['name']} | {plan.seed} | {images} "
                     f"| {epochs:.2f}"
                     + (f"\n                  order: {', '.join(s.name for s in plan.order)}"
                        if plan.order else ""))
    return lines
