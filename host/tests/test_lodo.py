"""Leave-one-dataset-out choices against a slow direct implementation: the calibration error
of every map kind, the chosen baseline and candidate, and the score of a `[best]` entry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from cell_builders import make_cell, static, trajectory
from ttabench.scoring import build_leaderboard, format_console
from ttabench.scoring.leaderboard import to_html, to_markdown
from ttabench.scoring.lodo import lodo_mae, nested_choice_lodo
from ttabench.spec import ScoringSpec
from ttabench.scoring.report_html import render, report_from_leaderboard

DATASETS = ("speckle", "blur", "spatter", "saturate", "rotate")


def make_cells():
    """Five calibration datasets x 5 severities, two eval datasets. ``near`` is a score with
    a dataset-specific offset (each dataset alone is fitted exactly by its own severities);
    ``far`` is a noisy score with one relation shared by every dataset. The candidate ``c``
    carries both as named scores."""
    rng = np.random.default_rng(3)
    offsets = dict(zip(DATASETS + ("fog", "snow"), rng.uniform(-0.6, 0.6, 7)))
    cells = []
    for role, datasets in (("calibration", DATASETS), ("eval", ("fog", "snow"))):
        for dataset in datasets:
            for severity in range(1, 6):
                acc = float(np.clip(0.95 - 0.12 * severity + rng.normal(0, 0.03), 0.05, 1))
                near = offsets[dataset] + 4.0 * acc
                far = acc + rng.normal(0, 0.04)
                targets = {"source": acc, "bn": acc, "adapted": acc}
                cells.append(make_cell(
                    f"{dataset}-{severity}", dataset, severity, role, targets,
                    {"near": static("score", {"source": near, "bn": near, "adapted": near}),
                     "far": static("score", {"source": far, "bn": far, "adapted": far}),
                     "c": trajectory("score", far, scores={"near": near, "far": far})}))
    return cells


def slow_lodo(kind: str, x, y, datasets) -> float:
    """Every dataset predicted by a map fitted on the other datasets, written out plainly."""
    x, y, datasets = np.asarray(x), np.asarray(y), np.asarray(datasets)
    errors = {}
    for held in sorted(set(datasets)):
        train, test = datasets != held, datasets == held
        if kind in ("lin", "quad"):
            coef = np.polyfit(x[train], y[train], 1 if kind == "lin" else 2)
            pred = np.clip(np.polyval(coef, x[test]), 0, 1)
        else:
            increasing = np.corrcoef(np.argsort(np.argsort(x[train])), y[train])[0, 1] >= 0
            iso = IsotonicRegression(increasing=bool(increasing), out_of_bounds="clip")
            pred = np.clip(iso.fit(x[train], y[train]).predict(x[test]), 0, 1)
        errors[held] = np.mean(np.abs(pred - y[test])) * 100
    return float(np.mean(list(errors.values())))


def _points(cells, name):
    calib = [c for c in cells if c.role == "calibration"]
    return (np.array([c.estimators[name].views["source"].value for c in calib]),
            np.array([c.targets["source"] for c in calib]), [c.dataset for c in calib])


@pytest.fixture(scope="module")
def cells():
    return make_cells()


@pytest.fixture(scope="module")
def lb(cells):
    return build_leaderboard(cells, ScoringSpec(n_boot=20, map_kinds=("lin", "quad", "iso")))


def _row(lb, entry, target="source"):
    rows = lb.table[(lb.table["entry"] == entry) & (lb.table["target"] == target)]
    assert len(rows) == 1, entry
    return rows.iloc[0]


def test_calibration_error_of_every_kind_is_leave_one_dataset_out(cells, lb):
    for name in ("near", "far"):
        x, y, datasets = _points(cells, name)
        for kind in ("lin", "quad", "iso"):
            expected = slow_lodo(kind, x, y, datasets)
            assert lodo_mae(kind, x, y, datasets) == pytest.approx(expected)
            assert _row(lb, f"{name} ({kind})")["calib_loo"] == pytest.approx(expected)


def test_the_chosen_baseline_is_the_lowest_leave_one_dataset_out_error(cells, lb):
    errors = {}
    for name in ("near", "far"):
        x, y, datasets = _points(cells, name)
        errors.update({f"{name} ({k})": slow_lodo(k, x, y, datasets)
                       for k in ("lin", "quad", "iso")})
    expected = min(errors, key=errors.get)
    choice = lb.choices[lb.choices["target"] == "source"].iloc[0]
    assert choice["chosen_baseline"] == expected == "far (lin)"
    assert choice["chosen_calib_loo"] == pytest.approx(errors[expected])
    assert choice["n_calib_datasets"] == len(DATASETS)
    # the candidate's entries are chosen the same way, among candidates only
    cand = {e: _row(lb, e)["calib_loo"] for e in lb.table["entry"]
            if str(e).startswith("c") and not np.isnan(_row(lb, e)["calib_loo"])}
    assert choice["chosen_candidate"] == min(cand, key=cand.get)


def test_best_score_is_chosen_by_leave_one_dataset_out(cells, lb):
    for kind in ("lin", "quad", "iso"):
        slow = {name: slow_lodo(kind, *_points(cells, name)) for name in ("near", "far")}
        assert _row(lb, f"c[best] ({kind})", "bn")["input"] == min(slow, key=slow.get)


def test_a_best_entry_has_its_choice_inside_the_calibration_loop(cells, lb):
    points = {name: _points(cells, name) for name in ("near", "far")}
    y, datasets = points["far"][1], np.asarray(points["far"][2])
    for kind in ("lin", "iso"):
        errors = []
        for held in sorted(set(datasets)):
            rest = datasets != held
            inner = {name: slow_lodo(kind, x[rest], y[rest], datasets[rest])
                     for name, (x, _, _) in points.items()}
            best = min(sorted(inner), key=inner.get)
            x = points[best][0]
            errors.append(_fit_predict(kind, x[rest], y[rest], x[~rest], y[~rest]))
        assert _row(lb, f"c[best] ({kind})", "bn")["calib_loo"] == pytest.approx(np.mean(errors))


def test_nested_choice_against_slow_loops_where_the_choice_moves():
    rng = np.random.default_rng(0)
    datasets = np.repeat([f"d{i}" for i in range(6)], 3)
    y = rng.uniform(0.3, 0.9, len(datasets))
    scores = {f"s{j}": y + rng.normal(0, 0.1, len(y)) for j in range(5)}
    for kind in ("lin", "iso"):
        errors, picks = [], set()
        for held in sorted(set(datasets)):
            rest = datasets != held
            inner = {n: slow_lodo(kind, x[rest], y[rest], datasets[rest]) for n, x in scores.items()}
            best = min(sorted(inner), key=inner.get)
            picks.add(best)
            errors.append(_fit_predict(kind, scores[best][rest], y[rest], scores[best][~rest],
                                       y[~rest]))
        assert len(picks) > 1  # the data exercise a choice that changes between folds
        candidates = {n: (kind, x) for n, x in scores.items()}
        assert nested_choice_lodo(candidates, y, list(datasets)) == pytest.approx(np.mean(errors))
        overall = min(sorted(scores), key=lambda n: slow_lodo(kind, scores[n], y, datasets))
        assert np.mean(errors) != pytest.approx(slow_lodo(kind, scores[overall], y, datasets))


def _fit_predict(kind, x, y, x_new, y_new) -> float:
    """MAE (pp) on (x_new, y_new) of a ``kind`` map fitted on (x, y), written out plainly."""
    if kind == "lin":
        pred = np.polyval(np.polyfit(x, y, 1), x_new)
    else:
        increasing = np.corrcoef(np.argsort(np.argsort(x)), y)[0, 1] >= 0
        pred = IsotonicRegression(increasing=bool(increasing), out_of_bounds="clip").fit(
            x, y).predict(x_new)
    return float(np.mean(np.abs(np.clip(pred, 0, 1) - y_new)) * 100)


def test_every_output_says_how_choices_were_made(cells, lb):
    report = render(report_from_leaderboard(lb, cells))
    for text in (format_console(lb), to_markdown(lb), to_html(lb), report):
        assert "leave-one-dataset-out" in text
        assert "over 5 calibration datasets" in text
        assert "chosen candidate" in text
