"""Model views: every static estimator is computed once per view of the cell's model.

Each accuracy target has a view, the outputs of the model whose accuracy it is:

- ``source``: the frozen eval-mode model (running statistics) over the split in dataset order,
  and source val through the same frozen model;
- ``bn``: the same weights normalizing with test-batch statistics: the logits (and features)
  of the ``bn`` target's own pass, in exactly its batches of ``batch_size`` over the first
  stream epoch; source val through the batch-statistics model in dataset order, in batches of
  ``batch_size`` (a final batch of one merged into the one before);
- ``adapted``: the adapter's online logits along the trajectory (every step's batch, the
  outputs the ``adapted`` accuracy counts); source val as the adapter's model gives it before
  it adapts (``Adapter.source_val_reference``): a fresh adapter's own ``predict`` over source
  val in the batches above (``"predict"``, the default: LAME, ``bn-alpha``, ROID's prior
  correction), or, where the adapter declares it the same, the ``bn`` view's (``"bn"``:
  adapters that normalize with test-batch statistics from the first step, the
  entropy-minimization family, SAR, DeYO, CoTTA) or the frozen model's (``"source"``:
  ``source``, ``bn-ema``, RoTTA's robust BatchNorm).
  A pass of source val through the adapting model would need a model state per step.

No view costs a forward pass beyond the one its target already needs (plus one source-val pass
per process for the batch-statistics model, and one per ``"predict"`` adapter). Each view's target outputs carry the frozen
model's logits on the same samples (``Outputs.frozen_logits``), for estimators that compare
models. A static estimator with ``view`` set is computed on that view only; its result is
view-free. An estimator that raises or returns a non-finite value in one view records a failure
for that view alone.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ttabench.api import Adapter, EstimateResult, Outputs, StaticEstimator, to_unit_float
from ttabench.errors import TTABenchError
from ttabench.records import VIEWS, ViewResult
from ttabench.runner.passes import (
    FeatureHook,
    batch_statistics_copy,
    check_finite,
    integer_labels,
    restrict,
)
from ttabench.runner.stream import batches_of


@dataclass
class View:
    """One model view: its target outputs (labels withheld) and its source-val outputs."""

    name: str
    target: Outputs
    source_val: Outputs | None


@torch.no_grad()
def val_outputs(predict: Callable[[torch.Tensor], torch.Tensor], model: torch.nn.Module,
                dataset: Dataset, device: torch.device, batch_size: int, *,
                classifier: str | None, want_features: bool, class_subset: list[int] | None,
                what: str) -> Outputs:
    """Labelled source val through ``predict`` (features: the input of ``model``'s
    ``classifier``): dataset order, batches of ``batch_size`` (a final batch of one merged into
    the one before)."""
    chunks = batches_of(torch.arange(len(dataset)), batch_size)
    loader = DataLoader(dataset, batch_sampler=[c.tolist() for c in chunks])
    hook = FeatureHook(model, classifier if want_features else None)
    logits, labels = [], []
    try:
        for x, y in loader:
            logits.append(restrict(predict(to_unit_float(x).to(device)), class_subset).float().cpu())
            labels.append(integer_labels(y, "the source-validation split"))
    finally:
        features = hook.close()
    out = torch.cat(logits)
    check_finite(out, what)
    return Outputs(out, torch.cat(labels), features)


def batch_statistics_val(model: torch.nn.Module, dataset: Dataset, device: torch.device,
                         batch_size: int, *, classifier: str | None, want_features: bool,
                         class_subset: list[int] | None) -> Outputs:
    """Labelled source val through the batch-statistics model (the ``bn`` view, and the
    ``adapted`` view of adapters that normalize with batch statistics from their first step)."""
    bn_model = batch_statistics_copy(model).to(device)
    return val_outputs(bn_model, bn_model, dataset, device, batch_size, classifier=classifier,
                       want_features=want_features, class_subset=class_subset,
                       what="the batch-statistics model on source-validation data")


def adapter_val(adapter: Adapter, dataset: Dataset, device: torch.device, batch_size: int, *,
                classifier: str | None, want_features: bool,
                class_subset: list[int] | None) -> Outputs:
    """Labelled source val through a fresh adapter's ``predict`` (nothing adapts): the
    ``adapted`` view's reference for an adapter whose ``source_val_reference`` is
    ``"predict"``."""
    return val_outputs(adapter.predict, adapter.model, dataset, device, batch_size,
                       classifier=classifier, want_features=want_features,
                       class_subset=class_subset,
                       what=f"adapter {adapter.name!r} on source-validation data")


def describe_error(err: BaseException) -> str:
    """The message of a TTABenchError, else ``Type: message (file:line)``, on one line."""
    if isinstance(err, TTABenchError):
        return str(err)
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" ({Path(frame.filename).name}:{frame.lineno})" if frame else ""
    return f"{type(err).__name__}: {err}{where}".replace("\n", " ")


def _finite(value: float | None) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def view_result(result: EstimateResult) -> ViewResult:
    """A result as recorded; a non-finite value, estimate or score is a failure."""
    bad = [name for name, v in (("value", result.value), ("estimate", result.estimate),
                                *result.scores.items()) if not _finite(v)]
    if result.value is None or bad:
        return ViewResult(failed=f"non-finite {', '.join(bad) or 'value'}")
    return ViewResult(value=float(result.value),
                      estimate=None if result.estimate is None else float(result.estimate),
                      scores={k: float(v) for k, v in result.scores.items()},
                      extras=dict(result.extras))


def safe_result(compute: Callable[[], EstimateResult]) -> ViewResult:
    """``compute()`` as recorded; any exception is recorded as a failure, alone."""
    try:
        return view_result(compute())
    except Exception as err:  # one estimator in one view fails alone
        return ViewResult(failed=describe_error(err))


def estimate_in_view(est: StaticEstimator, view: View) -> ViewResult:
    """``est.estimate`` on one view; any exception is recorded as that view's failure."""
    return safe_result(lambda: est.estimate(view.target, view.source_val))


def estimate_views(estimators: dict[str, StaticEstimator],
                   views: dict[str, View]) -> dict[str, dict[str, ViewResult]]:
    """``{estimator: {view: result}}`` for the given views, in ``VIEWS`` order; an estimator
    with ``view`` set gets only that view's result (when that view is present)."""
    out: dict[str, dict[str, ViewResult]] = {}
    for name, est in estimators.items():
        wanted = [est.view] if est.view is not None else [v for v in VIEWS if v in views]
        out[name] = {v: estimate_in_view(est, views[v]) for v in wanted if v in views}
    return out
