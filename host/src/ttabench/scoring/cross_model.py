"""Cross-model scoring: does an estimator rank a pool's models as their true accuracies do?

ODP-Bench's question (ICCV 2025), beside MAE: on one distribution, a good estimator orders the
models of a pool by accuracy even where its absolute estimates are off. Inputs are one value
per cell (model x split, seeds averaged first); for each split the rank correlation across
models between estimated and true accuracy (Spearman's rho or Kendall's tau-b) is computed,
then averaged over the splits of each dataset and over datasets (every dataset weighs the same,
as for MAE). The interval is a percentile bootstrap over datasets, then splits within each
(``metrics.boot_mean_samples``; ``unit="split"`` resamples splits alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from ttabench.scoring.metrics import boot_mean_samples, mean_by_dataset, percentile_interval

RANK_METHODS: tuple[str, ...] = ("spearman", "kendall")


@dataclass(frozen=True)
class RankCorrelation:
    """The cross-model rank correlation of one estimator.

    ``value``: mean over datasets of the mean over their splits of the per-split correlation;
    ``low``/``high``: its bootstrap interval; ``per_dataset``: each dataset's mean;
    ``per_split``: each scored split's correlation; ``undefined``: splits left out because
    the estimates or the truths are equal for every model there, or fewer than two models
    ran on them (no ranking to compare).
    """

    method: str
    value: float
    low: float
    high: float
    per_dataset: dict[str, float]
    per_split: dict[str, float]
    undefined: tuple[str, ...]


def split_correlation(est: Sequence[float], true: Sequence[float], method: str) -> float | None:
    """Spearman's rho or Kendall's tau-b (ties averaged) of two equally long lists, or None when
    one is constant or they hold fewer than two values.

    >>> round(split_correlation([0.1, 0.2, 0.3], [0.5, 0.9, 0.7], "kendall"), 12)  # (2 - 1) / 3
    0.333333333333
    """
    if method not in RANK_METHODS:
        raise ValueError(f"method must be one of {RANK_METHODS}, got {method!r}")
    e, t = np.asarray(est, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if e.shape != t.shape or e.ndim != 1:
        raise ValueError(f"estimates and truths must be 1-D of one length, got {e.shape}, {t.shape}")
    if e.size < 2 or np.ptp(e) == 0 or np.ptp(t) == 0:
        return None
    value = stats.spearmanr(e, t)[0] if method == "spearman" else stats.kendalltau(e, t)[0]
    return float(value)


def _cells(est: Sequence[float], true: Sequence[float], models: Sequence[Any],
           splits: Sequence[Any], datasets: Sequence[Any]
           ) -> tuple[dict[str, dict[str, tuple[float, float]]], dict[str, str]]:
    """``{split: {model: (mean estimate, mean truth)}}`` (seeds averaged) and each split's
    dataset; ValueError for ragged input or a split in two datasets."""
    n = len(est)
    if not n or not len(true) == len(models) == len(splits) == len(datasets) == n:
        raise ValueError(f"need one estimate, truth, model, split and dataset per cell, got "
                         f"{n}, {len(true)}, {len(models)}, {len(splits)}, {len(datasets)}")
    sums: dict[str, dict[str, list[float]]] = {}
    dataset_of: dict[str, str] = {}
    for e, t, model, split, dataset in zip(est, true, models, splits, datasets):
        if not (np.isfinite(e) and np.isfinite(t)):
            raise ValueError(f"cell ({model}, {split}) has a non-finite estimate or truth")
        if dataset_of.setdefault(str(split), str(dataset)) != str(dataset):
            raise ValueError(f"split {split} is in two datasets: {dataset_of[str(split)]}, {dataset}")
        acc = sums.setdefault(str(split), {}).setdefault(str(model), [0.0, 0.0, 0.0])
        acc[0], acc[1], acc[2] = acc[0] + float(e), acc[1] + float(t), acc[2] + 1.0
    means = {split: {model: (s[0] / s[2], s[1] / s[2]) for model, s in per.items()}
             for split, per in sums.items()}
    return means, dataset_of


def rank_correlation(est: Sequence[float], true: Sequence[float], models: Sequence[Any],
                     splits: Sequence[Any], datasets: Sequence[Any], method: str = "spearman",
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     unit: str = "dataset") -> RankCorrelation:
    """Cross-model rank correlation of estimated vs true accuracy (module docstring).

    One entry per cell: its estimate, true accuracy, model, split and the split's dataset.
    Cells of one (model, split) are averaged first (seeds). ValueError when no split has a
    ranking to compare.
    """
    means, dataset_of = _cells(est, true, models, splits, datasets)
    per_split: dict[str, float] = {}
    undefined = []
    for split, per_model in means.items():
        pairs = list(per_model.values())
        value = split_correlation([p[0] for p in pairs], [p[1] for p in pairs], method)
        if value is None:
            undefined.append(split)
        else:
            per_split[split] = value
    if not per_split:
        raise ValueError(f"no split ranks two models of different estimates and truths "
                         f"({len(undefined)} split(s), all undefined)")
    values = np.asarray(list(per_split.values()))
    split_datasets = [dataset_of[split] for split in per_split]
    per_dataset = {d: float(np.mean([v for s, v in per_split.items() if dataset_of[s] == d]))
                   for d in sorted(set(split_datasets))}
    low, high = percentile_interval(boot_mean_samples(values, split_datasets, n_boot, seed, unit),
                                    level)
    return RankCorrelation(method=method, value=mean_by_dataset(values, split_datasets), low=low,
                           high=high, per_dataset=per_dataset, per_split=per_split,
                           undefined=tuple(undefined))
