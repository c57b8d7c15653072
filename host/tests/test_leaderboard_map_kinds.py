"""Map kinds as leaderboard options: every kind asked for maps every score estimator, each
checked against a fit made by hand; unknown kinds are one error line before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cell_builders import every_view, make_cell, static, trajectory
from cli_checks import no_cells, one_line_error
from ttabench.spec import ScoringSpec
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.store import write_json_atomic
from ttabench.scoring import build_leaderboard
from ttabench.scoring.map_kinds import EPS

KINDS = ("lin", "quad", "iso", "logit-lin", "logit-quad")


def make_cells():
    """``s`` = exp(-4 acc) in every view (monotone, not linear); the candidate ``t`` has the
    scores ``good`` (= 1 - bn accuracy) and ``noise`` (random)."""
    rng = np.random.default_rng(1)
    cells = []
    for role, n, datasets in (("calibration", 9, ["a", "b", "c"]), ("eval", 12, ["d", "e"])):
        for i in range(n):
            acc = float(rng.uniform(0.2, 0.9))
            targets = {"source": acc, "bn": acc + 0.05, "adapted": acc + 0.08}
            cells.append(make_cell(
                f"{datasets[i % len(datasets)]}-{i}", datasets[i % len(datasets)], 1, role,
                targets,
                {"s": static("score", every_view(lambda v, t=targets: float(np.exp(-4 * t[v])))),
                 "t": trajectory("score", 0.0, scores={"good": 1.0 - targets["bn"],
                                                       "noise": float(rng.uniform())})}))
    return cells


def _points(cells, role, target):
    chosen = [c for c in cells if c.role == role]
    x = np.array([c.estimators["s"].views[target].value for c in chosen])
    y = np.array([c.targets[target] for c in chosen])
    return x, y, [c.dataset for c in chosen]


def _mae(pred, y, datasets):
    per = {}
    for p, t, d in zip(pred, y, datasets):
        per.setdefault(d, []).append(abs(p - t) * 100)
    return float(np.mean([np.mean(v) for v in per.values()]))


def _row(lb, entry, target):
    rows = lb.table[(lb.table["entry"] == entry) & (lb.table["target"] == target)]
    assert len(rows) == 1, entry
    return rows.iloc[0]


@pytest.fixture(scope="module")
def cells():
    return make_cells()


@pytest.fixture(scope="module")
def lb(cells):
    return build_leaderboard(cells, ScoringSpec(n_boot=20, map_kinds=KINDS))


def test_every_kind_maps_every_score_estimator(lb):
    for target in ("source", "bn"):
        names = set(lb.table[lb.table["target"] == target]["entry"])
        for kind in KINDS:
            assert {f"s ({kind})", f"t ({kind})", f"t[best] ({kind})"} <= names
    default = build_leaderboard(make_cells(), ScoringSpec(n_boot=20))
    assert not any("(iso)" in e for e in default.table["entry"])
    assert lb.map_kinds == KINDS and default.map_kinds == ("lin", "quad")


def test_logit_and_isotonic_maps_match_a_fit_by_hand(cells, lb):
    x, y, _ = _points(cells, "calibration", "source")
    xe, ye, de = _points(cells, "eval", "source")
    # logit-lin: least squares of logit(clip(acc)) on the score, then the sigmoid
    yc = np.clip(y, EPS, 1 - EPS)
    coef = np.polyfit(x, np.log(yc / (1 - yc)), 1)
    by_hand = np.clip(1 / (1 + np.exp(-np.polyval(coef, xe))), 0, 1)
    assert _row(lb, "s (logit-lin)", "source")["mae"] == pytest.approx(_mae(by_hand, ye, de))
    # iso: accuracy strictly decreasing in the score, so the isotonic fit passes through every
    # calibration point and interpolates between them (constant outside)
    order = np.argsort(x)
    by_hand = np.interp(xe, x[order], y[order])
    assert _row(lb, "s (iso)", "source")["mae"] == pytest.approx(_mae(by_hand, ye, de))
    # its calibration leave-one-dataset-out: each point from the interpolation of the points
    # of the other datasets (constant beyond them)
    _, _, dc = _points(cells, "calibration", "source")
    loo = []
    for i in range(len(x)):
        others = np.array([d != dc[i] for d in dc])
        order = np.argsort(x[others])
        loo.append(np.interp(x[i], x[others][order], y[others][order]))
    assert _row(lb, "s (iso)", "source")["calib_loo"] == pytest.approx(_mae(loo, y, dc))
    # a monotone map of a monotone score beats the straight line here
    assert _row(lb, "s (iso)", "source")["mae"] < _row(lb, "s (lin)", "source")["mae"]


def test_best_score_is_chosen_per_kind_on_calibration(lb):
    for kind in KINDS:
        assert _row(lb, f"t[best] ({kind})", "bn")["input"] == "good"
    assert _row(lb, "t[best] (lin)", "bn")["mae"] == pytest.approx(0.0, abs=1e-6)  # exact line


def test_unknown_kinds_are_refused_with_a_close_match(cells):
    with pytest.raises(TTABenchError, match="unknown map kind 'isoo'; did you mean 'iso'"):
        build_leaderboard(cells, ScoringSpec(n_boot=20, map_kinds=("lin", "isoo")))
    with pytest.raises(TTABenchError, match="given twice"):
        build_leaderboard(cells, ScoringSpec(n_boot=20, map_kinds=("lin", "lin")))


def test_leaderboard_command_option(tmp_path: Path, cells):
    for cell in cells:
        write_json_atomic(tmp_path / "run" / "cells" / f"{cell.key}.json", cell.to_dict())
    result = CliRunner().invoke(main, ["leaderboard", str(tmp_path / "run"), "--n-boot", "20",
                                       "--map-kinds", "iso,logit-quad"])
    assert result.exit_code == 0, result.output
    assert "s (iso)" in result.output and "s (lin)" not in result.output
    rows = [line for line in (tmp_path / "run" / "leaderboard.md").read_text().splitlines()
            if "| s (iso) | baseline |" in line]  # the ranked tables' rows, one per target
    assert len(rows) == 3 and all("| 9 |" in line for line in rows)  # its 9 calibration cells
    line = one_line_error(CliRunner().invoke(
        main, ["leaderboard", str(tmp_path / "run"), "--map-kinds", "lin,logit_lin"]))
    assert "unknown map kind 'logit_lin'; did you mean 'logit-lin'?" in line


def test_run_config_key_and_flag_are_checked_before_any_work(tmp_path: Path):
    config = tmp_path / "plugins.toml"
    config.write_text('[run]\nsuite = "tiny"\nmodel = "tiny-cnn"\nestimators = ["ac"]\n'
                      'map_kinds = ["lin", "quadd"]\n')
    out = tmp_path / "out"
    line = one_line_error(CliRunner().invoke(main, ["run", "--config", str(config), "-o",
                                                    str(out)]))
    assert "[run] map_kinds: unknown map kind 'quadd'; did you mean 'quad'?" in line
    config.write_text('[run]\nsuite = "tiny"\nmodel = "tiny-cnn"\nestimators = ["ac"]\n')
    line = one_line_error(CliRunner().invoke(main, ["run", "--config", str(config), "-o",
                                                    str(out), "--map-kinds", "sio"]))
    assert "unknown map kind 'sio'" in line
    assert no_cells(out)
