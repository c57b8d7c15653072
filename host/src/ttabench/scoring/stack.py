"""A monotone stack: one low-capacity map from several label-free scores to an accuracy.

A score estimator whose ``score_input`` is ``STACK_INPUT`` asks the leaderboard to fit, besides
its 1-D maps, one stack over its named ``scores`` (its features), entry ``<est>[stack]``.

Model, for the chosen features S (columns of the calibration matrix X, accuracies y)::

    acc(x) = clip(mean(y) + sum_{j in S} w_j * s_j * (x_j - m_j) / d_j, 0, 1),   w_j >= 0

with ``m_j``, ``d_j`` the mean and standard deviation of feature j on the fitted points and
``s_j`` the sign of its Spearman correlation with the accuracy there (the direction each score
moves with accuracy). ``w`` is the non-negative least-squares solution on the centred points,
so the map is additive and monotone in every feature, in the direction its calibration points
show: no interactions, no sign flips, at most ``MAX_FEATURES`` weights.

Features are chosen by forward selection on leave-one-dataset-out error
(``ttabench.scoring.lodo``): starting from the constant map, add the feature whose addition
lowers the LODO MAE most; stop when none does or at ``MAX_FEATURES``. The stack's own
calibration error is nested: for every held-out dataset the selection is redone on the
other datasets alone, then the map fitted there predicts the held-out one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls
from scipy.stats import spearmanr

from ttabench.errors import TTABenchError
from ttabench.scoring.metrics import mae_by_dataset

#: The ``score_input`` of an estimator whose named scores are the features of one stack.
STACK_INPUT = "stack"
MAX_FEATURES = 3


@dataclass(frozen=True)
class StackMap:
    """A fitted stack (module docstring): ``features`` in order, with their standardisation,
    direction and non-negative weight, and the intercept (the mean fitted accuracy)."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    signs: tuple[float, ...]
    weights: tuple[float, ...]
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Accuracies (clipped to [0, 1]) of rows ``x`` (columns in ``features`` order)."""
        rows = np.atleast_2d(np.asarray(x, dtype=np.float64))
        z = (rows - np.asarray(self.means)) / np.asarray(self.scales) * np.asarray(self.signs)
        return np.asarray(np.clip(self.intercept + z @ np.asarray(self.weights), 0.0, 1.0))

    def __call__(self, scores: Mapping[str, float]) -> float:
        """The accuracy of one cell's named scores."""
        return float(self.predict(np.array([[scores[f] for f in self.features]]))[0])


def fit_stack(x: np.ndarray, y: np.ndarray, features: Sequence[str]) -> StackMap:
    """The stack of the module docstring on all columns of ``x`` (one per name in
    ``features``); TTABenchError when a column is constant or has no direction."""
    x = np.asarray(x, dtype=np.float64).reshape(len(y), len(features))
    y = np.asarray(y, dtype=np.float64)
    means, scales = x.mean(axis=0), x.std(axis=0)
    signs = []
    for j, name in enumerate(features):
        rho = spearmanr(x[:, j], y).statistic if scales[j] > 0 else math.nan
        if not np.isfinite(rho) or rho == 0:
            raise TTABenchError(f"stack feature {name!r} has no direction on the fitted points")
        signs.append(1.0 if rho > 0 else -1.0)
    z = (x - means) / np.where(scales > 0, scales, 1.0) * np.asarray(signs)
    weights = nnls(z, y - y.mean())[0] if len(features) else np.zeros(0)
    return StackMap(tuple(features), tuple(map(float, means)), tuple(map(float, scales)),
                    tuple(signs), tuple(map(float, weights)), float(y.mean()))


def _lodo(x: np.ndarray, y: np.ndarray, groups: np.ndarray, columns: list[int],
          names: Sequence[str]) -> float:
    """LODO MAE (pp) of the stack on ``columns``; ``inf`` when a fold cannot be fitted."""
    preds = np.empty(len(y))
    for group in np.unique(groups):
        test = groups == group
        try:
            fitted = fit_stack(x[~test][:, columns], y[~test], [names[c] for c in columns])
        except TTABenchError:
            return math.inf
        preds[test] = fitted.predict(x[test][:, columns])
    return mae_by_dataset(preds, y, list(groups))


def select_features(x: np.ndarray, y: np.ndarray, datasets: Sequence[str],
                    features: Sequence[str], max_features: int = MAX_FEATURES
                    ) -> tuple[tuple[str, ...], float]:
    """Forward selection (module docstring): the chosen feature names, in the order they were
    added, and the LODO MAE (pp) of the stack on them (the constant map's when none helps).
    Ties go to the earlier name of ``features``."""
    x = np.asarray(x, dtype=np.float64)
    groups = np.asarray([str(d) for d in datasets])
    if len(np.unique(groups)) < 2:
        raise TTABenchError("a stack is chosen by leave-one-dataset-out: it needs calibration "
                            "cells of at least two datasets")
    chosen: list[int] = []
    best = _lodo(x, y, groups, [], features)
    while len(chosen) < max_features:
        trials = [(_lodo(x, y, groups, [*chosen, j], features), j)
                  for j in range(len(features)) if j not in chosen]
        if not trials:
            break
        error, j = min(trials, key=lambda t: (t[0], t[1]))
        if not error < best:
            break
        best = error
        chosen.append(j)
    return tuple(features[j] for j in chosen), best


def nested_lodo(x: np.ndarray, y: np.ndarray, datasets: Sequence[str],
                features: Sequence[str], max_features: int = MAX_FEATURES) -> float:
    """The stack's calibration error with its selection inside the loop: each dataset
    predicted by the stack selected and fitted on the other datasets alone (pp; ``inf`` when
    some fold has fewer than two datasets left to select on)."""
    x = np.asarray(x, dtype=np.float64)
    groups = np.asarray([str(d) for d in datasets])
    preds = np.empty(len(y))
    for group in np.unique(groups):
        test = groups == group
        try:
            names, _ = select_features(x[~test], y[~test], list(groups[~test]), features,
                                       max_features)
        except TTABenchError:
            return math.inf
        columns = [list(features).index(n) for n in names]
        fitted = fit_stack(x[~test][:, columns], y[~test], names)
        preds[test] = fitted.predict(x[test][:, columns])
    return mae_by_dataset(preds, y, list(groups))


__all__ = ["MAX_FEATURES", "STACK_INPUT", "StackMap", "fit_stack", "nested_lodo",
           "select_features"]
