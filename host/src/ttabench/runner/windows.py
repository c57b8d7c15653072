"""Per-window scoring of a stream: each window of ``W`` steps has its online accuracy, and every
estimator an estimate of it.

Window ``w`` holds steps ``wW + 1`` to ``(w + 1)W`` (complete windows only; a last partial one
is not scored). Its truth is the adapted model's online accuracy there,
``acc_w = sum(correct[wW:(w+1)W]) / sum(images[wW:(w+1)W])``. Its estimates:

- a static estimator (computed in every view, or in the ``adapted`` view) is computed on the
  window's online outputs (its rows of the ``adapted`` view's target outputs, with the frozen
  logits of the same images) against the ``adapted`` view's source-validation outputs;
- a trajectory estimator gives its own per window (``TrajectoryEstimator.window_results``), or
  none.
"""

from __future__ import annotations

from dataclasses import replace

from ttabench.api import Outputs, StaticEstimator, TrajectoryEstimator
from ttabench.records import ViewResult, WindowRecord
from ttabench.runner.views import View, describe_error, estimate_in_view, view_result


def window_accuracy(correct: list[int], images: list[int], window: int) -> list[float]:
    """``acc_w`` of every complete window (see the module docstring)."""
    return [sum(correct[start:start + window]) / sum(images[start:start + window])
            for start in range(0, len(correct) - window + 1, window)]


def window_outputs(online: Outputs, record: WindowRecord) -> list[Outputs]:
    """The online outputs of each complete window (rows of ``online`` in stream order)."""
    out = []
    first = 0
    for start in range(0, len(record.images_per_step) - record.window + 1, record.window):
        rows = slice(first, first + sum(record.images_per_step[start:start + record.window]))
        first = rows.stop
        out.append(replace(online, logits=online.logits[rows],
                           frozen_logits=None if online.frozen_logits is None
                           else online.frozen_logits[rows],
                           features=None if online.features is None else online.features[rows]))
    return out


def static_windows(static: dict[str, StaticEstimator], adapted: View,
                   record: WindowRecord) -> dict[str, list[ViewResult]]:
    """Every static estimator of the ``adapted`` view (its own ``view`` None or ``adapted``)
    on each window's online outputs."""
    parts = window_outputs(adapted.target, record)
    return {name: [estimate_in_view(est, View("adapted", part, adapted.source_val))
                   for part in parts]
            for name, est in static.items() if est.view in (None, "adapted")}


def trajectory_windows(trajectory: dict[str, TrajectoryEstimator],
                       record: WindowRecord) -> dict[str, list[ViewResult]]:
    """Each trajectory estimator's per-window results, one per complete window (a window it
    gave none for is recorded failed); estimators that give none are left out."""
    count = len(record.images_per_step) // record.window
    out: dict[str, list[ViewResult]] = {}
    for name, est in trajectory.items():
        try:
            given = est.window_results(record.window)
        except Exception as err:  # one estimator fails alone
            out[name] = [ViewResult(failed=describe_error(err))] * count
            continue
        if given is None:
            continue
        results = [view_result(r) for r in given[:count]]
        missing = ViewResult(failed=f"{name} gave {len(given)} window estimates for {count} "
                                    "windows")
        out[name] = results + [missing] * (count - len(results))
    return out
