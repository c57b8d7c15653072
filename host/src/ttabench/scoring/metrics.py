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

from ttabench.spec import BOOT_UNITS

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




@lru_cache(maxsize=64)
def _dataset_resamples(codes: tuple[int, ...], n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-stage resamples over datasets: ``(weights, counts)``.

    Resample b draws D datasets with replacement (``weights[b, d]``: how often dataset d was
    drawn) and, within every dataset, its n_d cells with replacement (``counts[b, i]``: how
    often cell i was drawn; one draw per dataset and resample, shared by its repeated copies).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    code_array = np.asarray(codes)
    n_datasets = int(code_array.max()) + 1
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_datasets, size=(n_boot, n_datasets))
    weights = np.stack([np.bincount(row, minlength=n_datasets) for row in drawn]).astype(np.float64)
    counts = np.zeros((n_boot, code_array.size))
    for d in range(n_datasets):
        members = np.flatnonzero(code_array == d)
        picks = rng.integers(0, members.size, size=(n_boot, members.size))
        for j in range(members.size):
            counts[:, members[j]] = (picks == j).sum(axis=1)
    weights.flags.writeable = False
    counts.flags.writeable = False
    return weights, counts


def boot_mae_samples(err: np.ndarray, datasets: Sequence[Any], n_boot: int, seed: int,
                     unit: str = "dataset") -> np.ndarray:
    """Per-dataset-averaged MAE (pp) of each bootstrap resample of absolute errors ``err``:
    ``100 * boot_mean_samples(err, ...)``. The same (n, datasets, n_boot, seed) always gives the
    same resamples, so two estimators' samples are paired."""
    return 100.0 * boot_mean_samples(err, datasets, n_boot, seed, unit)


def boot_mean_samples(values: np.ndarray, datasets: Sequence[Any], n_boot: int, seed: int,
                      unit: str = "dataset") -> np.ndarray:
    """``mean_by_dataset`` of each bootstrap resample of per-cell ``values``.

    ``unit="dataset"``: resample datasets, then cells within each (``_dataset_resamples``);
    resample b gives ``sum_d w_bd m_bd / D`` with ``m_bd`` the mean resampled value of dataset
    d. ``unit="split"``: resample cells (splits) as if independent (``_resample_counts``).
    """
    if unit not in BOOT_UNITS:
        raise ValueError(f"unit must be one of {BOOT_UNITS}, got {unit!r}")
    codes, n_datasets = _codes(datasets, values.size)
    if unit == "split":
        return _boot_mean(_resample_counts(values.size, n_boot, seed), values, codes, n_datasets)
    weights, counts = _dataset_resamples(tuple(int(c) for c in codes), n_boot, seed)
    means = np.empty((n_boot, n_datasets))
    for d in range(n_datasets):
        members = np.flatnonzero(codes == d)
        means[:, d] = counts[:, members] @ values[members] / members.size
    return np.asarray((weights * means).sum(axis=1) / n_datasets, dtype=np.float64)


def _boot_mean(counts: np.ndarray, values: np.ndarray, codes: np.ndarray,
               n_datasets: int) -> np.ndarray:
    """Per-dataset-averaged mean of each resample; datasets absent from it are left out."""
    sums = np.empty((counts.shape[0], n_datasets))
    sizes = np.empty((counts.shape[0], n_datasets))
    for d in range(n_datasets):
        members = np.flatnonzero(codes == d)
        drawn = counts[:, members]
        sums[:, d] = drawn @ values[members]
        sizes[:, d] = drawn.sum(axis=1)
    present = sizes > 0
    means = np.divide(sums, sizes, out=np.zeros_like(sums), where=present)
    return np.asarray(means.sum(axis=1) / present.sum(axis=1))


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of bootstrap ``samples``."""
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
    unit: str = "dataset",
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mae_by_dataset``.

    Each resample (``boot_mae_samples``: over datasets then splits within them by default, or
    over splits with ``unit="split"``) recomputes the per-dataset-averaged MAE; the interval is
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the ``n_boot`` values.
    Deterministic for a seed.
    """
    e, t = _pair(est, true)
    return percentile_interval(boot_mae_samples(np.abs(e - t), datasets, n_boot, seed, unit), level)


@dataclass(frozen=True)
class PairedDifference:
    """``MAE_a - MAE_b`` in pp on the same cells; negative means a is better."""

    difference: float  # on the full set of cells
    mean: float  # mean over bootstrap resamples
    low: float
    high: float
    p_value: float = 1.0  # two-sided bootstrap p-value of "no difference" (uncorrected)

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
    unit: str = "dataset",
) -> PairedDifference:
    """Bootstrap distribution of ``MAE_a - MAE_b`` with both MAEs on the same resamples.

    Resamples are drawn as in ``bootstrap_ci`` (``unit``); for each, ``MAE_a`` and ``MAE_b``
    are the per-dataset-averaged MAEs of the two estimators on the resampled cells, so their
    difference cancels the variation both share. ``p_value = min(1, 2 min(P(d <= 0),
    P(d >= 0)))`` over the resampled differences d.
    """
    a, t = _pair(est_a, true)
    b, _ = _pair(est_b, true)
    diffs = (boot_mae_samples(np.abs(a - t), datasets, n_boot, seed, unit)
             - boot_mae_samples(np.abs(b - t), datasets, n_boot, seed, unit))
    low, high = percentile_interval(diffs, level)
    point = mae_by_dataset(a, t, datasets) - mae_by_dataset(b, t, datasets)
    p_value = min(1.0, 2.0 * min(float(np.mean(diffs <= 0)), float(np.mean(diffs >= 0))))
    return PairedDifference(difference=point, mean=float(diffs.mean()), low=low, high=high,
                            p_value=p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error control), in the input order.

    Sorted ascending ``p_(1) <= ... <= p_(m)``: ``adj_(j) = max_{i <= j} min(1, (m - i + 1) p_(i))``.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = round(running, 12)
    return adjusted
