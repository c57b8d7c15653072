"""Cross-model rank correlation against slow direct implementations."""

from __future__ import annotations

import doctest
import itertools
import math

import numpy as np
import pytest

from ttabench.scoring import cross_model
from ttabench.scoring.cross_model import rank_correlation, split_correlation


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties given the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def slow_spearman(x: list[float], y: list[float]) -> float:
    """Pearson correlation of the tie-averaged ranks."""
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def slow_kendall_tau_b(x: list[float], y: list[float]) -> float:
    """``(C - D) / sqrt((C + D + T_x) (C + D + T_y))`` over all pairs; T_x: ties in x only."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if sx == 0 and sy == 0:
            continue
        if sx == 0:
            tx += 1
        elif sy == 0:
            ty += 1
        elif sx == sy:
            c += 1
        else:
            d += 1
    return (c - d) / math.sqrt((c + d + tx) * (c + d + ty))


def test_doctests() -> None:
    assert doctest.testmod(cross_model).failed == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_correlations_match_slow_formulas_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = list(np.round(rng.random(9), 1))  # one decimal: ties
    y = list(np.round(rng.random(9), 1))
    assert split_correlation(x, y, "spearman") == pytest.approx(slow_spearman(x, y), abs=1e-12)
    assert split_correlation(x, y, "kendall") == pytest.approx(slow_kendall_tau_b(x, y), abs=1e-12)


def test_constant_or_single_inputs_have_no_correlation() -> None:
    assert split_correlation([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], "spearman") is None
    assert split_correlation([0.1, 0.2], [0.4, 0.4], "kendall") is None
    assert split_correlation([0.1], [0.4], "kendall") is None
    with pytest.raises(ValueError, match="method"):
        split_correlation([0.1, 0.2], [0.3, 0.4], "pearson")


def _table(seed: int) -> list[tuple[float, float, str, str, str]]:
    """Cells (estimate, truth, model, split, dataset): 5 models, 4 datasets of 1-3 splits."""
    rng = np.random.default_rng(seed)
    splits = {"fog": ["fog-1", "fog-3", "fog-5"], "snow": ["snow-2", "snow-4"],
              "blur": ["blur-1"], "noise": ["noise-1", "noise-5"]}
    cells = []
    for dataset, names in splits.items():
        for split in names:
            truth = rng.random(5)
            for m in range(5):
                cells.append((truth[m] + 0.3 * rng.normal(), truth[m], f"m{m}", split, dataset))
    return cells


def slow_rank_correlation(cells: list, method: str, n_boot: int, seed: int,
                          level: float) -> tuple[float, float, float]:
    """Per split the slow correlation; mean per dataset, then over datasets; the bootstrap
    drawn as ``metrics._dataset_resamples`` draws it, one resample at a time."""
    corr = slow_spearman if method == "spearman" else slow_kendall_tau_b
    per_split: dict[str, tuple[str, float]] = {}
    for split in dict.fromkeys(c[3] for c in cells):
        rows = [c for c in cells if c[3] == split]
        per_split[split] = (rows[0][4], corr([r[0] for r in rows], [r[1] for r in rows]))
    datasets = sorted({d for d, _ in per_split.values()})
    members = {d: [v for dd, v in per_split.values() if dd == d] for d in datasets}
    value = sum(sum(v) / len(v) for v in members.values()) / len(datasets)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(datasets), size=(n_boot, len(datasets)))
    picks = {d: rng.integers(0, len(members[d]), size=(n_boot, len(members[d]))) for d in datasets}
    samples = []
    for b in range(n_boot):
        means = [sum(members[datasets[k]][j] for j in picks[datasets[k]][b]) / len(members[datasets[k]])
                 for k in drawn[b]]
        samples.append(sum(means) / len(means))
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return value, float(low), float(high)


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_rank_correlation_matches_a_slow_direct_implementation(method: str) -> None:
    cells = _table(3)
    est, true, models, splits, datasets = (list(col) for col in zip(*cells))
    got = rank_correlation(est, true, models, splits, datasets, method, n_boot=200, seed=5,
                           level=0.9)
    value, low, high = slow_rank_correlation(cells, method, 200, 5, 0.9)
    assert got.value == pytest.approx(value, abs=1e-12)
    assert (got.low, got.high) == pytest.approx((low, high), abs=1e-12)
    assert low < value < high and got.undefined == ()
    assert set(got.per_dataset) == {"fog", "snow", "blur", "noise"} and len(got.per_split) == 8


def test_seeds_are_averaged_and_undefined_splits_reported() -> None:
    cells = _table(4)
    # a second seed of every cell, estimates shifted per model by a rank-changing amount
    shifted = [(e + (0.5 if m == "m0" else 0.0), t, m, s, d) for e, t, m, s, d in cells]
    both = cells + shifted
    est, true, models, splits, datasets = (list(col) for col in zip(*both))
    averaged = [((e1 + e2) / 2, t, m, s, d) for (e1, t, m, s, d), (e2, *_rest) in zip(cells, shifted)]
    got = rank_correlation(est, true, models, splits, datasets, n_boot=50)
    assert got.value == pytest.approx(slow_rank_correlation(averaged, "spearman", 50, 0, 0.95)[0],
                                      abs=1e-12)
    flat = [(0.5, t, m, "flat", "flat") for _, t, m, _, _ in cells[:5]]  # constant estimates
    est, true, models, splits, datasets = (list(col) for col in zip(*(cells + flat)))
    got = rank_correlation(est, true, models, splits, datasets, n_boot=50)
    assert got.undefined == ("flat",) and "flat" not in got.per_dataset


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="one estimate"):
        rank_correlation([0.1], [0.2, 0.3], ["a"], ["s"], ["d"])
    with pytest.raises(ValueError, match="two datasets"):
        rank_correlation([0.1, 0.2], [0.2, 0.3], ["a", "b"], ["s", "s"], ["d", "e"])
    with pytest.raises(ValueError, match="no split"):
        rank_correlation([0.1, 0.1], [0.2, 0.3], ["a", "b"], ["s", "s"], ["d", "d"])
    with pytest.raises(ValueError, match="non-finite"):
        rank_correlation([float("nan")], [0.2], ["a"], ["s"], ["d"])


def test_the_leaderboard_ranks_the_models_of_a_run_per_split() -> None:
    """A leaderboard of cells of three models has a cross-model table: per (target, entry) the
    mean over datasets of the mean over their splits of Spearman's rho across the models."""
    from scipy.stats import spearmanr

    from cell_builders import make_cell, static
    from ttabench.scoring.leaderboard import build_leaderboard
    from ttabench.spec import ScoringSpec

    rng = np.random.default_rng(0)
    splits = [("fog-1", "fog"), ("fog-2", "fog"), ("snow-1", "snow")]
    truth = {(m, s): float(rng.uniform(0.3, 0.9)) for m in range(3) for s, _ in splits}
    guess = {k: float(np.clip(v + rng.normal(0, 0.15), 0.01, 0.99)) for k, v in truth.items()}
    cells = [make_cell(s, d, 1, "eval", {"source": truth[(m, s)]},
                       {"ac": static("direct", {"source": guess[(m, s)]})}, model=f"m{m}")
             for m in range(3) for s, d in splits]
    cells += [make_cell("clean", "clean", None, "calibration", {"source": 0.9},
                        {"ac": static("direct", {"source": 0.8})}, model=f"m{m}")
              for m in range(3)]
    board = build_leaderboard(cells, ScoringSpec(n_boot=20))
    row = board.cross_model[(board.cross_model["target"] == "source")
                            & (board.cross_model["entry"] == "ac")].iloc[0]

    def rho(split: str) -> float:
        return float(spearmanr([guess[(m, split)] for m in range(3)],
                               [truth[(m, split)] for m in range(3)])[0])

    expected = ((rho("fog-1") + rho("fog-2")) / 2 + rho("snow-1")) / 2
    assert row["spearman"] == pytest.approx(expected, abs=1e-12)
    assert (row["n_models"], row["n_splits"], row["n_datasets"]) == (3, 3, 2)
    assert row["ci_low"] <= row["spearman"] <= row["ci_high"]
    single = build_leaderboard([c for c in cells if c.model == "m0"], ScoringSpec(n_boot=20))
    assert single.cross_model.empty  # one model: nothing to rank
