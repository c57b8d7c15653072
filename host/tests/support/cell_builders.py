"""Cell records for scoring tests, built from ``ttabench.records`` (never string-keyed dicts)."""

from __future__ import annotations

import hashlib
from typing import Any

from ttabench.records import VIEWS, Cell, EstimatorRecord, ViewResult


def result(value: float, kind: str = "score", estimate: float | None = None,
           scores: dict[str, float] | None = None) -> ViewResult:
    """One view's result; a direct estimator's estimate is its value."""
    return ViewResult(value=value, estimate=value if kind == "direct" else estimate,
                      scores=dict(scores or {}))


def static(kind: str, per_view: dict[str, float], role: str = "baseline",
           failed: dict[str, str] | None = None) -> EstimatorRecord:
    """A static estimator computed in each view of ``per_view`` (``failed``: view -> error)."""
    views = {v: result(x, kind) for v, x in per_view.items()}
    views.update({v: ViewResult(failed=why) for v, why in (failed or {}).items()})
    return EstimatorRecord(target="source", kind=kind, role=role, views=views)


def trajectory(kind: str, value: float, role: str = "candidate", target: str = "bn",
               scores: dict[str, float] | None = None, estimate: float | None = None,
               params: dict[str, Any] | None = None, input: str | None = None) -> EstimatorRecord:
    """A view-free (trajectory) estimator."""
    return EstimatorRecord(target=target, kind=kind, role=role, trajectory=True,
                           params=dict(params or {}), input=input,
                           result=result(value, kind, estimate, scores))


def skipped(reason: str, role: str = "baseline") -> EstimatorRecord:
    return EstimatorRecord(target="source", kind="direct", role=role, skipped=reason)


def make_cell(name: str, dataset: str, severity: int | None, role: str,
              targets: dict[str, float], estimators: dict[str, EstimatorRecord],
              adapter: str = "rdumb", status: str = "ok", seed: int = 0,
              model: str = "tiny-cnn") -> Cell:
    key = hashlib.sha256(f"{name}/{adapter}/{role}/{seed}/{model}".encode()).hexdigest()[:16]
    return Cell(
        key=key, status=status, suite="tiny", model=model, adapter=adapter, seed=seed,
        split={"name": name, "dataset": dataset, "severity": severity, "role": role},
        error=None if status == "ok" else "RuntimeError: out of memory", n_examples=256,
        targets=targets, estimators=estimators, timings={"total": 1.0},
    )


def every_view(value_of) -> dict[str, float]:
    """``{view: value_of(view)}`` for every view."""
    return {v: value_of(v) for v in VIEWS}
