"""Named kinds of score-to-accuracy maps, for any score estimator.

- ``lin`` / ``quad``: least-squares polynomials of degree 1 / 2 (``fit_polynomial``);
- ``iso``: a monotone step map, isotonic regression (pool adjacent violators) of accuracy on the
  score, increasing or decreasing as the calibration points' Spearman correlation says, linear
  between the fitted points and constant outside them;
- ``logit-lin`` / ``logit-quad``: a polynomial fitted in logit space,
  ``logit(acc) = p(score)``, ``acc = sigmoid(p(score))``, with accuracies clipped to
  [``EPS``, 1 - ``EPS``] before the logit: a map that saturates near 0 and 1 instead of
  leaving [0, 1].

Every map's output is clipped to [0, 1]. ``loo_predictions`` holds out one group (dataset) at
a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sklearn.isotonic import isotonic_regression

from ttabench.calibration import fit_polynomial
from ttabench.errors import TTABenchError
from ttabench.spec import MAP_KINDS, check_map_kinds

EPS = 1e-3
_DEGREE = {"lin": 1, "quad": 2, "logit-lin": 1, "logit-quad": 2}
#: Calibration points a map of each kind needs (degree + 1; two for a monotone step map).
MIN_POINTS = {kind: _DEGREE.get(kind, 1) + 1 for kind in MAP_KINDS}


@dataclass(frozen=True)
class FittedMap:
    """A fitted map: polynomial coefficients (highest power first) for the polynomial kinds,
    knots ``(xs, ys)`` for ``iso``."""

    kind: str
    coefficients: tuple[float, ...] = ()
    knots: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())

    def __call__(self, score: np.ndarray | float) -> np.ndarray:
        x = np.asarray(score, dtype=np.float64)
        if self.kind == "iso":
            out = np.interp(x, np.asarray(self.knots[0]), np.asarray(self.knots[1]))
        elif self.kind.startswith("logit-"):
            out = 1.0 / (1.0 + np.exp(-np.polyval(self.coefficients, x)))
        else:
            out = np.polyval(self.coefficients, x)
        return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float64)


def _isotonic(x: np.ndarray, y: np.ndarray) -> FittedMap:
    """Isotonic regression of ``y`` on ``x`` (scikit-learn's ``IsotonicRegression`` restated:
    equal scores pooled into their weighted mean accuracy, pool adjacent violators on the
    distinct scores, increasing unless the Spearman correlation is negative), as knots."""
    distinct, inverse = np.unique(x, return_inverse=True)
    weights = np.bincount(inverse).astype(np.float64)
    means = np.bincount(inverse, weights=y) / weights
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    increasing = len(distinct) == 1 or float(rx @ ry) >= 0  # constant: no direction
    fitted = isotonic_regression(means, sample_weight=weights, increasing=increasing)
    return FittedMap("iso", knots=(tuple(map(float, distinct)), tuple(map(float, fitted))))


def fit_map_kind(kind: str, x: Sequence[float] | np.ndarray,
                 y: Sequence[float] | np.ndarray) -> FittedMap:
    """Fit a map of ``kind`` (one of ``MAP_KINDS``) from scores ``x`` to accuracies ``y``."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if kind not in MAP_KINDS:
        raise TTABenchError(f"unknown map kind {kind!r}; choose from {', '.join(MAP_KINDS)}")
    if len(xs) != len(ys) or len(xs) < 2:
        raise TTABenchError(f"a map needs at least 2 (score, accuracy) pairs, got {len(xs)}")
    if kind == "iso":
        return _isotonic(xs, ys)
    target = ys
    if kind.startswith("logit-"):
        clipped = np.clip(ys, EPS, 1.0 - EPS)
        target = np.log(clipped / (1.0 - clipped))
    return FittedMap(kind, coefficients=tuple(fit_polynomial(xs, target, _DEGREE[kind])))


def loo_predictions(kind: str, x: np.ndarray, y: np.ndarray, groups: Sequence[str],
                    held_out: Sequence[str] | None = None,
                    extra: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Leave-one-group-out predictions: the points of group g are predicted by a map fitted
    on every other point (plus the ``extra`` (x, y) points, e.g. synthetic calibration
    shifts). Only the groups in ``held_out`` (default: all) are predicted; others are NaN."""
    groups_arr = np.asarray(groups)
    preds = np.full(len(x), np.nan)
    for group in (np.unique(groups_arr) if held_out is None else held_out):
        test = groups_arr == group
        train_x, train_y = x[~test], y[~test]
        if extra is not None:
            train_x = np.concatenate([train_x, extra[0]])
            train_y = np.concatenate([train_y, extra[1]])
        preds[test] = fit_map_kind(kind, train_x, train_y)(x[test])
    return preds


__all__ = ["EPS", "FittedMap", "MAP_KINDS", "MIN_POINTS", "check_map_kinds", "fit_map_kind",
           "loo_predictions"]
