"""Model views: every static estimator is computed once per view of the cell's model.

Each accuracy target has a view, the outputs of the model whose accuracy it is:

- ``source``: the frozen eval-mode model (running statistics) over the split in dataset order,
  and source val through the same frozen model;
- ``bn``: the same weights normalizing with test-batch statistics: the logits (and features)
  of the ``bn`` target's own pass, in exactly its batches of ``batch_size`` over the first
  stream epoch; source val through the batch-statistics model in batches of ``batch_size``
  drawn from a seeded shuffle of it (``reference_passes``; a final batch of one merged into the
  one before);
- ``adapted``: the adapter's online logits along the trajectory (every step's batch, the
  outputs the ``adapted`` accuracy counts); source val as the adapter's model gives it before
  it adapts (``Adapter.source_val_reference``): a fresh adapter's own ``predict`` over source
  val in the batches above (``"predict"``, the default: LAME, ``bn-alpha``, ROID's prior
  correction), or, where the adapter declares it the same, the ``bn`` view's (``"bn"``:
  adapters that normalize with test-batch statistics from the first step, the
  entropy-minimization family, SAR, DeYO, CoTTA) or the frozen model's (``"source"``:
  ``source``, ``bn-ema``, RoTTA's robust BatchNorm). A pass of source val through the
  adapting model would need a model state per step.

No view costs a forward pass beyond the one its target already needs (plus, once per process,
the batch-statistics model on source val, from the same read as the frozen model's pass, and
a ``"predict"`` adapter's pass over it). Each view's target outputs carry the frozen
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
from typing import Any

import torch
from torch.utils.data import Dataset

from ttabench.api import Adapter, EstimateResult, Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.records import VIEWS, ViewResult
from ttabench.runner.compute import compute_context, prepare_model
from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.passes import model_passes, split_passes


@dataclass
class View:
    """One model view: its target outputs (labels withheld) and its source-val outputs."""

    name: str
    target: Outputs
    source_val: Outputs | None


#: The seed of the shuffle that batches labelled source val for the reference passes
#: (recorded in every cell's protocol as ``reference``).
REFERENCE_SEED = 0


def reference_record() -> dict[str, Any]:
    """How the labelled reference is batched, for the protocol of a cell that uses it."""
    return {"source_val_order": "seeded shuffle", "seed": REFERENCE_SEED}


def reference_order(n: int) -> torch.Tensor:
    """The order source val is batched in for every reference pass: ``randperm(n)`` drawn with
    ``REFERENCE_SEED``."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(REFERENCE_SEED))


def reference_passes(model: torch.nn.Module, dataset: Dataset, device: torch.device,
                     batch_size: int, loader: LoaderOptions, *, precision: str,
                     channels_last: bool, classifier: str | None, want_features: bool,
                     class_subset: list[int] | None) -> tuple[Outputs, Outputs]:
    """Labelled source val through the frozen model (``source`` view) and through the
    batch-statistics model (``bn`` and ``adapted`` views), from one read of each image.

    Batches of ``batch_size`` are cut from ``randperm(len(dataset))`` drawn with
    ``REFERENCE_SEED`` (``batches_of``: a final batch of one joins the one before), never from
    file order: a folder split lists its images class by class, so file-order batches would
    hold one or two classes and batch statistics unlike any test batch's. Rows come back in
    dataset order, labelled. Without batch normalization both are the same outputs.

    Computed as the cells compute (``ttabench.runner.compute``): under the run's precision
    and memory format, so a view never compares bf16 target outputs with an fp32 reference.
    """
    reader = StreamReader(dataset, DecodedCache(len(dataset), 0), loader)
    model = prepare_model(model, device, channels_last)
    with compute_context(precision, device):
        passes = split_passes(model, reader, reference_order(len(dataset)), batch_size, device,
                              channels_last=channels_last, classifier=classifier,
                              want_features=want_features, class_subset=class_subset,
                              what="the source model on source-validation data")
    labels = passes.labels
    source = Outputs(passes.source.logits, labels, passes.source.features)
    if passes.bn is passes.source:
        return source, source
    return source, Outputs(passes.bn.logits, labels, passes.bn.features)


def adapter_reference(adapter: Adapter, dataset: Dataset, device: torch.device,
                      batch_size: int, loader: LoaderOptions, *, precision: str,
                      channels_last: bool, classifier: str | None, want_features: bool,
                      class_subset: list[int] | None) -> Outputs:
    """Labelled source val through a fresh adapter's ``predict`` (nothing adapts), in the
    batches and under the compute facts of ``reference_passes``, rows in dataset order: the
    ``adapted`` view's reference for an adapter whose ``source_val_reference`` is
    ``"predict"``."""
    reader = StreamReader(dataset, DecodedCache(len(dataset), 0), loader)
    with compute_context(precision, device):
        (outputs,), labels = model_passes(
            [(adapter.predict, adapter.model, f"adapter {adapter.name!r}")], reader,
            reference_order(len(dataset)), batch_size, device, channels_last=channels_last,
            classifier=classifier if want_features else None, class_subset=class_subset,
            what=f"adapter {adapter.name!r} on source-validation data")
    return Outputs(outputs.logits, labels, outputs.features)


def describe_error(err: BaseException) -> str:
    """The message of a TTABenchError, else ``Type: message (file:line)``, on one line; out
    of GPU memory also names the options that make a cell need less."""
    if isinstance(err, TTABenchError):
        return str(err)
    if isinstance(err, torch.cuda.OutOfMemoryError):
        first = " ".join(str(err).split(".")[0].split())
        return (f"out of GPU memory ({first}); lower --batch-size, or --jobs when several cells "
                "share a GPU")
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
