"""Metrics (against hand-worked examples and plain slow implementations) and score maps."""

from __future__ import annotations

import copy
import doctest

import numpy as np
import pytest
from scipy import stats

from cell_builders import make_cell, skipped, trajectory
from ttabench.scoring import metrics
from ttabench.scoring.maps import build_entries


# ----------------------------------------------------------------------------- synthetic cells


def score_rec(value, target="source", scores=None, estimate=None, params=None):
    return trajectory("score", value, role="baseline", target=target, scores=scores,
                      estimate=estimate, params=params)


def direct_rec(value, target="source"):
    return trajectory("direct", value, role="baseline", target=target)


def quad(s):
    """The exact score-to-accuracy relation used in the map tests."""
    return 0.95 - 0.004 * s + 0.00001 * s**2


def make_cells(n_calib=12, n_eval=15, rng_seed=0, extra=None):
    """Calibration and eval cells; ``s`` is a score with an exact quadratic relation to the
    source accuracy, ``noise`` a useless one, ``ac`` a direct estimator off by +5 pp."""
    rng = np.random.default_rng(rng_seed)
    cells = []
    for role, n, datasets in (("calibration", n_calib, ["speckle", "saturate"]),
                              ("eval", n_eval, ["fog", "noise", "blur"])):
        for i in range(n):
            s = float(rng.uniform(0, 150))
            acc = quad(s)
            estimators = {
                "s": score_rec(s, scores={"good": s, "noise": float(rng.uniform(0, 150))}),
                "ac": direct_rec(min(1.0, acc + 0.05)),
                "skippy": skipped("needs a labelled source-validation split"),
            }
            if extra:
                estimators.update(extra(i, role, s, rng))
            cells.append(make_cell(
                f"{datasets[i % len(datasets)]}-{i}", datasets[i % len(datasets)], 1 + i % 5,
                role, {"source": acc, "bn": acc + 0.02, "adapted": acc + 0.04}, estimators,
            ))
    return cells


# ----------------------------------------------------------------------------- metrics


def slow_mae_by_dataset(est, true, datasets):
    per = {}
    for e, t, d in zip(est, true, datasets):
        per.setdefault(d, []).append(abs(e - t) * 100)
    return sum(sum(v) / len(v) for v in per.values()) / len(per)


def test_mae_by_dataset_hand_example_differs_from_plain_mae():
    est, true, ds = [0.5, 0.5, 0.9], [0.4, 0.6, 0.6], ["a", "a", "b"]
    # dataset a: (10 + 10) / 2 = 10 pp; dataset b: 30 pp; average 20 pp; plain MAE 50/3 pp
    assert metrics.mae_by_dataset(est, true, ds) == pytest.approx(20.0)
    plain = 100 * np.mean(np.abs(np.subtract(est, true)))
    assert plain == pytest.approx(50 / 3)
    assert metrics.mae_by_dataset(est, true, ds) != pytest.approx(plain)


def test_mae_by_dataset_matches_slow_implementation():
    rng = np.random.default_rng(1)
    est, true = rng.uniform(size=40), rng.uniform(size=40)
    ds = list(rng.choice(["a", "b", "c", "d"], size=40, p=[0.7, 0.1, 0.1, 0.1]))
    assert metrics.mae_by_dataset(est, true, ds) == pytest.approx(slow_mae_by_dataset(est, true, ds))


def test_docstring_examples():
    assert doctest.testmod(metrics).failed == 0


def test_worst_case_and_per_severity():
    est, true = [0.5, 0.2, 0.9, 0.7], [0.4, 0.5, 0.85, 0.7]
    assert metrics.worst_case(est, true) == pytest.approx(30.0)
    by_sev = metrics.mae_by_severity(est, true, ["a", "b", "a", "c"], [1, 1, 5, None])
    # severity 1: a 10, b 30 -> 20; severity 5: 5; no severity: 0
    assert list(by_sev) == [1, 5, None]
    assert by_sev[1] == pytest.approx(20.0)
    assert by_sev[5] == pytest.approx(5.0)
    assert by_sev[None] == pytest.approx(0.0)


def test_correlations_match_scipy_and_are_none_for_constant_input():
    rng = np.random.default_rng(2)
    x, y = rng.uniform(size=20), rng.uniform(size=20)
    assert metrics.pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert metrics.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert metrics.pearson([0.5] * 5, y[:5]) is None
    assert metrics.spearman(x[:5], [0.3] * 5) is None
    assert metrics.pearson([0.5], [0.4]) is None


def test_input_validation():
    with pytest.raises(ValueError):
        metrics.mae_by_dataset([], [], [])
    with pytest.raises(ValueError):
        metrics.mae_by_dataset([0.1, 0.2], [0.1], ["a", "a"])


def _data(n=30, seed=3):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.2, 0.9, size=n)
    est = true + rng.normal(0, 0.05, size=n)
    ds = [["a", "b", "c"][i % 3] if i < 24 else "d" for i in range(n)]
    return est, true, ds


def test_bootstrap_ci_matches_slow_resampling_contains_estimate_and_is_deterministic():
    est, true, ds = _data()
    low, high = metrics.bootstrap_ci(est, true, ds, n_boot=300, seed=7, unit="split")
    rng = np.random.default_rng(7)
    draws = rng.integers(0, len(est), size=(300, len(est)))
    values = [slow_mae_by_dataset(est[d], true[d], [ds[i] for i in d]) for d in draws]
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))
    point = metrics.mae_by_dataset(est, true, ds)
    assert low < point < high
    assert metrics.bootstrap_ci(est, true, ds, n_boot=300, seed=7, unit="split") == (low, high)
    assert metrics.bootstrap_ci(est, true, ds, n_boot=300, seed=8, unit="split") != (low, high)


def slow_dataset_bootstrap(err, ds, n_boot, seed):
    """Two-stage resampling written out: datasets with replacement, then cells within each."""
    names = sorted(set(ds))
    members = [np.asarray([i for i, d in enumerate(ds) if d == name]) for name in names]
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(names), size=(n_boot, len(names)))
    picks = [rng.integers(0, len(m), size=(n_boot, len(m))) for m in members]
    values = []
    for b in range(n_boot):
        means = [np.mean(err[members[d][picks[d][b]]]) for d in drawn[b]]
        values.append(100.0 * np.mean(means))
    return np.asarray(values)


def test_dataset_bootstrap_matches_slow_two_stage_resampling():
    est, true, ds = _data()
    values = slow_dataset_bootstrap(np.abs(est - true), ds, 300, 5)
    low, high = metrics.bootstrap_ci(est, true, ds, n_boot=300, seed=5)
    assert (low, high) == pytest.approx(tuple(np.quantile(values, [0.025, 0.975])))
    worse = true + 3 * (est - true) + 0.05
    diff = metrics.paired_difference(est, worse, true, ds, n_boot=300, seed=5)
    slow = values - slow_dataset_bootstrap(np.abs(worse - true), ds, 300, 5)
    assert diff.mean == pytest.approx(np.mean(slow))
    assert diff.p_value == pytest.approx(min(1.0, 2 * min(np.mean(slow <= 0), np.mean(slow >= 0))))
    # resampling datasets (4 here) is wider than resampling the 30 splits
    split_low, split_high = metrics.bootstrap_ci(est, true, ds, n_boot=300, seed=5, unit="split")
    assert high - low > split_high - split_low


def test_holm_matches_its_definition():
    assert metrics.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    p = [0.2, 0.001, 0.04, 0.5, 0.012]
    order = np.argsort(p)
    m = len(p)
    slow = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        slow[i] = running
    assert metrics.holm(p) == pytest.approx(slow.tolist())
    assert metrics.holm([]) == []


def test_paired_difference_sign_significance_and_slow_match():
    est, true, ds = _data()
    worse = true + 3 * (est - true) + 0.05
    better_first = metrics.paired_difference(est, worse, true, ds, n_boot=300, seed=0, unit="split")
    assert better_first.difference < 0 and better_first.high < 0 and better_first.significant
    worse_first = metrics.paired_difference(worse, est, true, ds, n_boot=300, seed=0, unit="split")
    assert worse_first.difference == pytest.approx(-better_first.difference)
    assert worse_first.low > 0 and worse_first.significant
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(est), size=(300, len(est)))
    diffs = [slow_mae_by_dataset(est[d], true[d], [ds[i] for i in d])
             - slow_mae_by_dataset(worse[d], true[d], [ds[i] for i in d]) for d in draws]
    assert better_first.mean == pytest.approx(np.mean(diffs))
    same = metrics.paired_difference(est, est, true, ds, n_boot=100)
    assert same.difference == 0 and not same.significant


# ----------------------------------------------------------------------------- maps


def _entry(entries, name):
    matches = [e for e in entries if e.name == name]
    assert matches, f"no entry {name}; have {[e.name for e in entries]}"
    return matches[0]


def _mae(entry, cells, target):
    by_key = {c.key: c for c in cells}
    keys = sorted(entry.estimates[target])
    return slow_mae_by_dataset(
        [entry.estimates[target][k] for k in keys], [by_key[k].targets[target] for k in keys],
        [by_key[k].dataset for k in keys],
    )


def test_exact_quadratic_relation_gives_zero_eval_error():
    cells = make_cells()
    entries, _ = build_entries(cells, "source")
    quad_entry, lin_entry = _entry(entries, "s (quad)"), _entry(entries, "s (lin)")
    assert quad_entry.map == "quadratic" and quad_entry.declared == "source"
    assert _mae(quad_entry, cells, "source") < 1e-6
    assert _mae(lin_entry, cells, "source") > 0.01
    assert set(quad_entry.estimates) == {"source"}  # one table, one target
    # maps are fitted per target's table: bn is source + 2 pp, so the bn map is exact too
    bn_quad = _entry(build_entries(cells, "bn")[0], "s (quad)")
    assert bn_quad.declared == "bn" and _mae(bn_quad, cells, "bn") < 1e-6
    eval_keys = {c.key for c in cells if c.role == "eval"}
    assert set(quad_entry.estimates["source"]) == eval_keys
    assert quad_entry.maps["source"].coefficients == pytest.approx([0.00001, -0.004, 0.95], abs=1e-9)


def test_every_score_estimator_fits_on_the_same_calibration_cells():
    def extra(i, role, s, rng):
        # "t" lacks a value on the first calibration cell: nobody may use that cell
        value = None if (role == "calibration" and i == 0) else s * 2 + float(rng.normal(0, 3))
        return {"t": score_rec(value)}

    cells = make_cells(extra=extra)
    for target in ("source", "bn", "adapted"):
        entries, _ = build_entries(cells, target)
        maps = [e for e in entries if e.map in ("linear", "quadratic")]
        assert {e.estimator for e in maps} == {"s", "t"}
        fitted = {frozenset(e.calibration_keys[target]) for e in maps}
        assert len(fitted) == 1
    first_calib = next(c for c in cells if c.role == "calibration")
    assert first_calib.key not in next(iter(fitted))
    assert len(next(iter(fitted))) == 11


def test_best_checkpoint_picks_informative_score_from_calibration_only():
    cells = make_cells()
    entries, _ = build_entries(cells, "source")
    for label in ("lin", "quad"):
        assert _entry(entries, f"s[best] ({label})").input == "good"
    assert _mae(_entry(entries, "s[best] (quad)"), cells, "source") < 1e-6

    perturbed = copy.deepcopy(cells)
    for cell in perturbed:
        if cell.role == "eval":
            s = cell.estimators["s"].result
            s.scores["noise"] = (s.value - 75) * 2  # now "noise" is informative on eval
            s.scores["good"] = 42.0
    entries2, _ = build_entries(perturbed, "source")
    for label in ("lin", "quad"):
        assert _entry(entries2, f"s[best] ({label})").input == "good"
        assert (_entry(entries2, f"s[best] ({label})").maps["source"].coefficients
                == _entry(entries, f"s[best] ({label})").maps["source"].coefficients)


def test_direct_own_and_skipped_estimators():
    def extra(i, role, s, rng):
        return {
            "aetta": direct_rec(quad(s) + 0.04, target="adapted"),
            "w": score_rec(s, estimate=quad(s) + 0.01),
        }

    cells = make_cells(extra=extra)
    entries, skips = build_entries(cells, "source")
    ac = _entry(entries, "ac")
    assert ac.map == "direct" and _mae(ac, cells, "source") == pytest.approx(5.0)
    aetta = _entry(entries, "aetta")
    assert aetta.declared == "source" and set(aetta.estimates) == {"source"}
    assert _mae(aetta, cells, "source") == pytest.approx(4.0)
    adapted = _entry(build_entries(cells, "adapted")[0], "aetta")
    assert _mae(adapted, cells, "adapted") == pytest.approx(0.0, abs=1e-9)
    own = _entry(entries, "w")
    assert own.map == "own" and _mae(own, cells, "source") == pytest.approx(1.0)
    assert _entry(entries, "w (quad)").map == "quadratic"  # maps too, for the fairness rule
    assert [s.name for s in skips] == ["skippy"]
    assert skips[0].reason == "needs a labelled source-validation split"
    assert skips[0].n_cells == 15


def test_too_few_calibration_cells_is_reported_as_skipped():
    cells = make_cells(n_calib=2)
    entries, skips = build_entries(cells, "source")
    names = {s.name: s.reason for s in skips}
    assert "s (quad)" in names and "at least 3" in names["s (quad)"]
    assert "s (lin)" in {e.name for e in entries}
    assert "s[best] (lin)" in names  # leave-one-out needs 3 points for a line


def test_constant_score_is_skipped_with_the_fit_error_not_a_crash():
    cells = make_cells(extra=lambda i, role, s, rng: {"flat": score_rec(0.0)})
    entries, skips = build_entries(cells, "source")
    reasons = {s.name: s.reason for s in skips}
    assert "distinct" in reasons["flat (lin)"] and "distinct" in reasons["flat (quad)"]
    assert {"s (quad)", "ac"} <= {e.name for e in entries}
