"""The interval of an estimate on a folder of unlabelled images: the finite sample (a bootstrap
over the folder's images) and, where known, the calibration error of the map.

**Sampling.** The folder's n images are resampled with replacement, ``B`` times; resample b is
row ``b`` of ``bootstrap_indices(n, B, seed)`` (``numpy.random.default_rng(seed).integers(0, n,
(B, n))``). A static estimator is recomputed on the rows of its view's outputs each resample
picks (``static_replicates``; outputs are not recomputed, so the batch-statistics view keeps
the statistics of the folder's own batches); the sampling interval is the 2.5th and 97.5th
percentiles of the B accuracies (numpy's linear interpolation). A trajectory estimator needs
one adaptation per resample, so B is small (``--bootstrap``) and the interval is normal:
``a +- z * sd`` of the B accuracies (``ddof=1``), ``z = 1.96``.

**Calibration.** ``q``, the 95% quantile of the absolute leave-one-dataset-out errors of the
map on the meta-set (``conformal_quantile``: the ``ceil(0.95 (m + 1))``-th smallest of m, the
largest when m < 19).

**Together**, the two halves added in quadrature, as independent errors::

    low  = a - sqrt((a - s_low)^2 + q^2),   high = a + sqrt((s_high - a)^2 + q^2)

clipped to [0, 1], with ``a`` the estimate on the folder itself and ``[s_low, s_high]`` the
sampling interval. It is meant to cover the accuracy on the population the folder was drawn
from 95% of the time when the folder's shift errs like the meta-set's families.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ttabench.api import EstimateResult, Outputs, StaticEstimator
from ttabench.records import ViewResult
from ttabench.runner.views import View, safe_result

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5th percentile


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """``(resamples, n)`` indices drawn with replacement (module docstring)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resampled(outputs: Outputs, rows: np.ndarray) -> Outputs:
    """The outputs of the images at ``rows`` (a fresh object: nothing derived is shared)."""
    index = torch.as_tensor(np.asarray(rows), dtype=torch.long)

    def take(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor[index]

    return Outputs(outputs.logits[index], labels=take(outputs.labels),
                   features=take(outputs.features), frozen_logits=take(outputs.frozen_logits))


def static_replicates(est: StaticEstimator, view: View, accuracy: Callable[[ViewResult],
                      float | None], indices: np.ndarray) -> np.ndarray:
    """The accuracy of ``est`` on each resample of the view's target outputs (NaN where it
    fails or gives none); source val is not resampled."""
    out = np.full(len(indices), np.nan)
    def compute(target: Outputs) -> Callable[[], EstimateResult]:
        return lambda: est.estimate(target, view.source_val)

    for b, rows in enumerate(indices):
        result = safe_result(compute(resampled(view.target, rows)))
        value = accuracy(result) if result.failed is None else None
        if value is not None:
            out[b] = value
    return out


def percentile_interval(replicates: np.ndarray) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the finite replicates."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    low, high = np.percentile(finite, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(low), float(high)


def normal_interval(point: float, replicates: np.ndarray) -> tuple[float, float]:
    """``point +- Z * sd(replicates)`` (``ddof=1``; zero width with one replicate)."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    spread = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return point - Z * spread, point + Z * spread


def conformal_quantile(errors: np.ndarray, level: float = LEVEL) -> float:
    """The ``ceil(level (m + 1))``-th smallest of the m absolute errors (the largest when that
    rank exceeds m)."""
    ordered = np.sort(np.abs(np.asarray(errors, dtype=np.float64)))
    rank = min(math.ceil(level * (len(ordered) + 1)), len(ordered))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class Interval:
    """An estimate's interval and its two halves (module docstring)."""

    low: float
    high: float
    sampling: tuple[float, float]
    calibration_q: float | None

    @classmethod
    def combine(cls, point: float, sampling: tuple[float, float],
                calibration_q: float | None) -> Interval:
        q = calibration_q or 0.0
        low = point - math.hypot(point - sampling[0], q)
        high = point + math.hypot(sampling[1] - point, q)
        return cls(max(0.0, low), min(1.0, high), sampling, calibration_q)


__all__ = ["Interval", "LEVEL", "Z", "bootstrap_indices", "conformal_quantile",
           "normal_interval", "percentile_interval", "resampled", "static_replicates"]
