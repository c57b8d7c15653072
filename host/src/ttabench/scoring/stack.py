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
from scipy.stats import rankdata

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


def _orientation(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of ``x``: mean, standard deviation and the sign of its Spearman correlation
    with ``y`` (0 where the column is constant or uncorrelated in rank)."""
    means, scales = x.mean(axis=0), x.std(axis=0)
    rx = rankdata(x, axis=0) - (len(y) + 1) / 2
    ry = rankdata(y) - (len(y) + 1) / 2
    signs = np.sign(np.round(ry @ rx, 9)) * (scales > 0)
    return means, scales, signs


def fit_stack(x: np.ndarray, y: np.ndarray, features: Sequence[str]) -> StackMap:
    """The stack of the module docstring on all columns of ``x`` (one per name in
    ``features``); TTABenchError when a column is constant or has no direction."""
    x = np.asarray(x, dtype=np.float64).reshape(len(y), len(features))
    y = np.asarray(y, dtype=np.float64)
    means, scales, signs = _orientation(x, y)
    for j, name in enumerate(features):
        if signs[j] == 0:
            raise TTABenchError(f"stack feature {name!r} has no direction on the fitted points")
    z = (x - means) / np.where(scales > 0, scales, 1.0) * signs
    weights = nnls(z, y - y.mean())[0] if len(features) else np.zeros(0)
    return StackMap(tuple(features), tuple(map(float, means)), tuple(map(float, scales)),
                    tuple(map(float, signs)), tuple(map(float, weights)), float(y.mean()))


class _Folds:
    """The leave-one-dataset-out folds of (x, y): per fold the oriented, standardised training
    and held-out columns of every feature (``fit_stack`` restated once per fold, so a column
    subset is fitted by one small non-negative least squares)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        self.y, self.groups = y, groups
        self.folds = []
        for group in np.unique(groups):
            test = groups == group
            means, scales, signs = _orientation(x[~test], y[~test])
            scale = np.where(scales > 0, scales, 1.0)
            self.folds.append((test, (x[~test] - means) / scale * signs,
                               (x[test] - means) / scale * signs, y[~test], signs != 0))

    def error(self, columns: list[int]) -> float:
        """LODO MAE (pp) of the stack on ``columns``: the mean over folds (= datasets) of the
        held-out dataset's mean absolute error; ``inf`` when a fold cannot fit one."""
        errors = []
        for test, z_train, z_test, y_train, usable in self.folds:
            if not usable[columns].all():
                return math.inf
            weights = (nnls(z_train[:, columns], y_train - y_train.mean())[0] if columns
                       else np.zeros(0))
            pred = np.clip(y_train.mean() + z_test[:, columns] @ weights, 0.0, 1.0)
            errors.append(np.abs(pred - self.y[test]).mean())
        return 100.0 * float(np.mean(errors))


def _forward(x: np.ndarray, y: np.ndarray, groups: np.ndarray, max_features: int
             ) -> tuple[list[int], float]:
    folds = _Folds(x, y, groups)
    chosen: list[int] = []
    best = folds.error([])
    while len(chosen) < max_features:
        trials = [(folds.error([*chosen, j]), j) for j in range(x.shape[1]) if j not in chosen]
        if not trials:
            break
        error, j = min(trials, key=lambda t: (t[0], t[1]))
        if not error < best:
            break
        best = error
        chosen.append(j)
    return chosen, best


def _groups(datasets: Sequence[str]) -> np.ndarray:
    groups = np.asarray([str(d) for d in datasets])
    if len(np.unique(groups)) < 2:
        raise TTABenchError("a stack is chosen by leave-one-dataset-out: it needs calibration "
                            "cells of at least two datasets")
    return groups


def select_features(x: np.ndarray, y: np.ndarray, datasets: Sequence[str],
                    features: Sequence[str], max_features: int = MAX_FEATURES
                    ) -> tuple[tuple[str, ...], float]:
    """Forward selection (module docstring): the chosen feature names, in the order they were
    added, and the LODO MAE (pp) of the stack on them (the constant map's when none helps).
    Ties go to the earlier name of ``features``."""
    chosen, best = _forward(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                            _groups(datasets), max_features)
    return tuple(features[j] for j in chosen), best


def nested_lodo(x: np.ndarray, y: np.ndarray, datasets: Sequence[str],
                features: Sequence[str], max_features: int = MAX_FEATURES) -> float:
    """The stack's calibration error with its selection inside the loop: each dataset
    predicted by the stack selected and fitted on the other datasets alone (pp; ``inf`` when
    some fold has fewer than two datasets left to select on)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    groups = _groups(datasets)
    preds = np.empty(len(y))
    for group in np.unique(groups):
        test = groups == group
        if len(np.unique(groups[~test])) < 2:
            return math.inf
        columns, _ = _forward(x[~test], y[~test], groups[~test], max_features)
        fitted = fit_stack(x[~test][:, columns], y[~test], [features[c] for c in columns])
        preds[test] = fitted.predict(x[test][:, columns])
    return mae_by_dataset(preds, y, list(groups))


__all__ = ["MAX_FEATURES", "STACK_INPUT", "StackMap", "fit_stack", "nested_lodo",
           "select_features"]
