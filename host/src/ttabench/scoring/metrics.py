"""Pure metrics that score accuracy estimates against true accuracies.

Inputs are accuracies as fractions in [0, 1] (one value per scored cell, i.e. per split and
seed) and the dataset each cell belongs to; errors are reported in percentage points (pp).
The headline number is the paper's rule: average the absolute errors over the splits of each
dataset first, then over datasets, so every dataset weighs the same whatever its split count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray


def _pair(est: ArrayLike, true: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(est, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if e.ndim != 1 or e.shape != t.shape:
        raise ValueError(f"estimates and truths must be 1-D of one length, got {e.shape}, {t.shape}")
    if e.size == 0:
        raise ValueError("no cells to score")
    return e, t


def _codes(datasets: Sequence[Any], n: int) -> tuple[np.ndarray, int]:
    if len(datasets) != n:
        raise ValueError(f"got {len(datasets)} dataset labels for {n} cells")
    _, codes = np.unique(np.asarray([str(d) for d in datasets]), return_inverse=True)
    return codes.reshape(-1), int(codes.max()) + 1


def mean_by_dataset(values: ArrayLike, datasets: Sequence[Any]) -> float:
    """Mean of per-dataset means: ``1 / D * sum_d (1 / n_d * sum_{i in d} v_i)``.

    >>> mean_by_dataset([1.0, 3.0, 10.0], ["a", "a", "b"])
    6.0
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("need a non-empty 1-D array of values")
    codes, n_datasets = _codes(datasets, v.size)
    sums = np.bincount(codes, weights=v, minlength=n_datasets)
    counts = np.bincount(codes, minlength=n_datasets)
    return float(np.mean(sums / counts))


def mae_by_dataset(est: ArrayLike, true: ArrayLike, datasets: Sequence[Any]) -> float:
    """Mean absolute error in pp, averaged per dataset first, then across datasets.

    ``MAE = 100 / D * sum_d (1 / n_d * sum_{i in d} |est_i - true_i|)`` over the D datasets
    present; dataset d holds n_d cells.

    >>> mae_by_dataset([0.5, 0.5, 0.9], [0.4, 0.6, 0.6], ["a", "a", "b"])
    20.0
    """
    e, t = _pair(est, true)
    return 100.0 * mean_by_dataset(np.abs(e - t), datasets)


def worst_case(est: ArrayLike, true: ArrayLike) -> float:
    """Largest absolute error over cells in pp: ``100 * max_i |est_i - true_i|``."""
    e, t = _pair(est, true)
    return float(100.0 * np.max(np.abs(e - t)))


def mae_by_severity(
    est: ArrayLike, true: ArrayLike, datasets: Sequence[Any], severities: Sequence[Any]
) -> dict[Any, float]:
    """``mae_by_dataset`` restricted to the cells of each severity level.

    Returns ``{severity: MAE in pp}`` in sorted order; cells without a severity (``None``,
    natural shifts) form their own group under the key ``None``, placed last.
    """
    e, t = _pair(est, true)
    if len(severities) != e.size:
        raise ValueError(f"got {len(severities)} severities for {e.size} cells")
    levels = sorted({s for s in severities if s is not None})
    if any(s is None for s in severities):
        levels.append(None)
    result: dict[Any, float] = {}
    for level in levels:
        mask = np.asarray([s == level if level is not None else s is None for s in severities])
        result[level] = mae_by_dataset(e[mask], t[mask], [d for d, m in zip(datasets, mask) if m])
    return result


def _correlation(kind: str, est: ArrayLike, true: ArrayLike) -> float | None:
    e, t = _pair(est, true)
    if e.size < 2 or np.ptp(e) == 0 or np.ptp(t) == 0:
        return None
    value = stats.pearsonr(e, t)[0] if kind == "pearson" else stats.spearmanr(e, t)[0]
    return None if not np.isfinite(value) else float(value)


def pearson(est: ArrayLike, true: ArrayLike) -> float | None:
    """Pearson correlation of estimates and truths; ``None`` for constant input or < 2 cells."""
    return _correlation("pearson", est, true)


def spearman(est: ArrayLike, true: ArrayLike) -> float | None:
    """Spearman rank correlation; ``None`` for constant input or fewer than 2 cells."""
    return _correlation("spearman", est, true)


@lru_cache(maxsize=16)
def _resample_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) read-only matrix: how often each cell is drawn in each bootstrap resample.

    Resample b draws ``rng.integers(0, n, size=(n_boot, n))[b]`` with
    ``rng = numpy.random.default_rng(seed)``: n cells with replacement. Cached, since every
    row of a leaderboard with the same number of cells uses the same resamples.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    flat = (np.arange(n_boot)[:, None] * n + draws).ravel()
    counts = np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    counts.flags.writeable = False
    return counts


def _boot_mae(counts: np.ndarray, err: np.ndarray, codes: np.ndarray, n_datasets: int) -> np.ndarray:
    """Per-dataset-averaged MAE (pp) of each resample; datasets absent from it are left out."""
    sums = np.empty((counts.shape[0], n_datasets))
    sizes = np.empty((counts.shape[0], n_datasets))
    for d in range(n_datasets):
        members = np.flatnonzero(codes == d)
        drawn = counts[:, members]
        sums[:, d] = drawn @ err[members]
        sizes[:, d] = drawn.sum(axis=1)
    present = sizes > 0
    means = np.divide(sums, sizes, out=np.zeros_like(sums), where=present)
    return np.asarray(100.0 * means.sum(axis=1) / present.sum(axis=1))


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    est: ArrayLike,
    true: ArrayLike,
    datasets: Sequence[Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mae_by_dataset`` over cells (splits).

    Each resample draws n cells with replacement from all n (plain, not stratified by
    dataset), recomputes the per-dataset-averaged MAE, and the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ``n_boot`` values.
    Deterministic for a seed.
    """
    e, t = _pair(est, true)
    codes, n_datasets = _codes(datasets, e.size)
    counts = _resample_counts(e.size, n_boot, seed)
    return _interval(_boot_mae(counts, np.abs(e - t), codes, n_datasets), level)


@dataclass(frozen=True)
class PairedDifference:
    """``MAE_a - MAE_b`` in pp on the same cells; negative means a is better."""

    difference: float  # on the full set of cells
    mean: float  # mean over bootstrap resamples
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """Whether 0 lies outside the interval."""
        return self.low > 0.0 or self.high < 0.0


def paired_difference(
    est_a: ArrayLike,
    est_b: ArrayLike,
    true: ArrayLike,
    datasets: Sequence[Any],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Bootstrap distribution of ``MAE_a - MAE_b`` with both MAEs on the same resamples.

    Resamples are drawn as in ``bootstrap_ci``; for each, ``MAE_a`` and ``MAE_b`` are the
    per-dataset-averaged MAEs of the two estimators on the resampled cells, so their
    difference cancels the cell-to-cell variation both share.
    """
    a, t = _pair(est_a, true)
    b, _ = _pair(est_b, true)
    codes, n_datasets = _codes(datasets, a.size)
    counts = _resample_counts(a.size, n_boot, seed)
    diffs = _boot_mae(counts, np.abs(a - t), codes, n_datasets) - _boot_mae(
        counts, np.abs(b - t), codes, n_datasets
    )
    low, high = _interval(diffs, level)
    point = mae_by_dataset(a, t, datasets) - mae_by_dataset(b, t, datasets)
    return PairedDifference(difference=point, mean=float(diffs.mean()), low=low, high=high)
