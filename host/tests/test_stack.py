"""The monotone stack against an independent fit (scikit-learn's non-negative least squares),
its forward selection and nested leave-one-dataset-out error against plain loops, and its
`[stack]` entry in the leaderboard."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LinearRegression

from cell_builders import make_cell, static, trajectory
from ttabench.scoring import build_leaderboard
from ttabench.scoring.stack import STACK_INPUT, fit_stack, nested_lodo, select_features
from ttabench.spec import ScoringSpec

NAMES = ("good", "anti", "noise1", "noise2")


def make_points(seed: int = 0, per: int = 6, datasets: int = 6):
    """acc = 0.6 + 0.2 good - 0.1 anti + small noise; two pure-noise features."""
    rng = np.random.default_rng(seed)
    rows, ys, groups = [], [], []
    for d in range(datasets):
        shift = rng.normal(0, 0.5)
        for _ in range(per):
            good, anti = rng.normal(shift, 1), rng.normal(0, 1)
            rows.append([good, anti, rng.normal(), rng.normal()])
            ys.append(float(np.clip(0.6 + 0.2 * good - 0.1 * anti + rng.normal(0, 0.01), 0, 1)))
            groups.append(f"d{d}")
    return np.array(rows), np.array(ys), groups


def independent_fit(x, y):
    """Standardise, orient by the Spearman sign, then scikit-learn's positive least squares."""
    signs = np.array([np.sign(spearmanr(x[:, j], y).statistic) for j in range(x.shape[1])])
    mean, std = x.mean(0), x.std(0)
    model = LinearRegression(positive=True).fit((x - mean) / std * signs, y)
    return lambda rows: np.clip(model.predict((rows - mean) / std * signs), 0, 1)


def test_the_fit_matches_an_independent_positive_least_squares():
    x, y, _ = make_points()
    stack = fit_stack(x, y, NAMES)
    new = np.random.default_rng(9).normal(size=(20, 4))
    assert stack.predict(new) == pytest.approx(independent_fit(x, y)(new), abs=1e-9)
    assert stack.signs[:2] == (1.0, -1.0)  # accuracy rises with good, falls with anti
    assert all(w >= 0 for w in stack.weights)
    # monotone: raising an oriented feature never lowers the estimate
    base = np.zeros((1, 4))
    for j in range(4):
        up = base.copy()
        up[0, j] += stack.signs[j]
        assert stack.predict(up)[0] >= stack.predict(base)[0]


def _slow_lodo(x, y, groups, columns):
    errors = {}
    for held in sorted(set(groups)):
        test = np.array([g == held for g in groups])
        if columns:
            pred = independent_fit(x[~test][:, columns], y[~test])(x[test][:, columns])
        else:
            pred = np.full(test.sum(), y[~test].mean())
        errors[held] = np.mean(np.abs(pred - y[test])) * 100
    return float(np.mean(list(errors.values())))


def slow_select(x, y, groups, max_features=3):
    """Forward selection written out: add the feature lowering the LODO MAE most."""
    chosen, best = [], _slow_lodo(x, y, groups, [])
    while len(chosen) < max_features:
        trials = sorted((_slow_lodo(x, y, groups, chosen + [j]), j)
                        for j in range(x.shape[1]) if j not in chosen)
        if not trials or not trials[0][0] < best:
            break
        best, j = trials[0]
        chosen.append(j)
    return chosen, best


def test_selection_and_nested_error_match_plain_loops():
    x, y, groups = make_points()
    names, error = select_features(x, y, groups, NAMES)
    chosen, slow_error = slow_select(x, y, groups)
    assert names == tuple(NAMES[j] for j in chosen)
    assert set(names[:2]) == {"good", "anti"}
    assert error == pytest.approx(slow_error)
    # nested: the selection redone inside every fold
    errors = {}
    for held in sorted(set(groups)):
        test = np.array([g == held for g in groups])
        inner, _ = slow_select(x[~test], y[~test], [g for g in groups if g != held])
        pred = independent_fit(x[~test][:, inner], y[~test])(x[test][:, inner])
        errors[held] = np.mean(np.abs(pred - y[test])) * 100
    assert nested_lodo(x, y, groups, NAMES) == pytest.approx(np.mean(list(errors.values())))


def test_a_stacked_estimator_gets_a_stack_entry_fitted_on_calibration_only():
    x, y, groups = make_points(seed=1, per=5, datasets=8)
    cells = []
    for i, (row, acc, group) in enumerate(zip(x, y, groups)):
        role = "eval" if group in ("d6", "d7") else "calibration"
        scores = dict(zip(NAMES, map(float, row)))
        targets = {"source": acc, "bn": acc, "adapted": acc}
        cells.append(make_cell(f"{group}-{i}", group, 1 + i % 5, role, targets, {
            "st": trajectory("score", float(row[0]), scores=scores, input=STACK_INPUT),
            "plain": trajectory("score", float(row[0]), scores=scores, role="baseline"),
            "b": static("direct", {"source": acc + 0.1, "bn": acc + 0.1, "adapted": acc + 0.1}),
        }))
    lb = build_leaderboard(cells, ScoringSpec(n_boot=20))
    row = lb.table[(lb.table["entry"] == "st[stack]") & (lb.table["target"] == "bn")].iloc[0]
    assert not (lb.table["entry"] == "plain[stack]").any()  # only a stacked estimator's input
    calib = [i for i, g in enumerate(groups) if g not in ("d6", "d7")]
    cal_groups = [groups[i] for i in calib]
    names, _ = select_features(x[calib], y[calib], cal_groups, NAMES)
    assert row["input"] == "+".join(names)
    columns = [NAMES.index(n) for n in names]
    evals = [i for i in range(len(y)) if i not in calib]
    pred = independent_fit(x[calib][:, columns], y[calib])(x[evals][:, columns])
    expected = np.mean([np.mean(np.abs(pred[[groups[i] == g for i in evals]]
                                       - y[evals][[groups[i] == g for i in evals]]))
                        for g in ("d6", "d7")]) * 100
    assert row["mae"] == pytest.approx(expected)
    assert row["calib_loo"] == pytest.approx(nested_lodo(x[calib], y[calib], cal_groups, NAMES))
    assert row["n_calib"] == len(calib)
