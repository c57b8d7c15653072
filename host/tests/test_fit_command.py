"""`ttabench fit`: a Calibration fitted on calibration cells, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cell_builders import make_cell, skipped, trajectory
from ttabench.calibration import Calibration
from ttabench.errors import TTABenchError
from ttabench.store import write_json_atomic
from ttabench.scoring.command import fit


def make_fit_cell(i, role, acc, value, scores, adapter="rdumb"):
    dataset = ["speckle", "spatter", "saturate"][i % 3] if role == "calibration" else "fog"
    return make_cell(
        f"{dataset}-{i}", dataset, 1 + i % 5, role,
        {"source": acc, "bn": acc + 0.03, "adapted": None},
        {
            "flips": trajectory("score", value, target="source", scores=scores,
                                params={"estimate_at": [100, 200], "probe_size": 100}),
            "ac": trajectory("direct", acc, role="baseline", target="source"),
            "doc": skipped("needs a labelled source-validation split"),
        },
        adapter=adapter,
    )


def write_run(folder, n_calib=9, n_eval=5, adapter="rdumb", seed=0):
    rng = np.random.default_rng(seed)
    points = []
    for role, n in (("calibration", n_calib), ("eval", n_eval)):
        for i in range(n):
            value = float(rng.uniform(10, 200))
            acc = float(np.clip(0.8 - 0.003 * value + rng.normal(0, 0.02), 0, 1))
            scores = {"wf@100": value / 2, "wf@200": value}
            cell = make_fit_cell(i, role, acc, value, scores, adapter)
            write_json_atomic(folder / "cells" / f"{cell.key}.json", cell.to_dict())
            points.append((role, value, acc))
    return points


def invoke(*args):
    return CliRunner().invoke(fit, [str(a) for a in args])


def test_fit_writes_a_calibration_that_reproduces_the_polynomial(tmp_path):
    points = write_run(tmp_path / "run")
    out = tmp_path / "cal.json"
    result = invoke(tmp_path / "run", "--estimator", "flips", "--degree", "2", "--output", out)
    assert result.exit_code == 0, result.output
    cal = Calibration.load(out)
    x = np.asarray([v for r, v, _ in points if r == "calibration"])
    y = np.asarray([a for r, _, a in points if r == "calibration"])
    expected = np.polyfit(x, y, 2)
    assert cal.coefficients == pytest.approx(expected.tolist())
    assert cal(x) == pytest.approx(np.clip(np.polyval(expected, x), 0, 1))
    assert cal.degree == 2 and cal.output == "fraction" and cal.target == "source"
    assert cal.estimator == "flips" and cal.input == "value"
    assert cal.fitted_for == {"model": "tiny-cnn", "suite": "tiny", "probe_size": 100,
                              "precision": "fp32"}
    assert "9 calibration cells" in cal.provenance and str(tmp_path / "run") in cal.provenance
    assert "9 points" in result.output


def test_fit_options_score_target_splits_monotone_id(tmp_path):
    points = write_run(tmp_path / "run")
    out = tmp_path / "cal.json"
    result = invoke(tmp_path / "run", "--estimator", "flips", "--score", "wf@100", "--degree", "1",
                    "--target", "bn", "--splits", "all", "--id", "my-cal", "--output", out)
    assert result.exit_code == 0, result.output
    cal = Calibration.load(out)
    x = np.asarray([v / 2 for _, v, _ in points])
    y = np.asarray([a + 0.03 for _, _, a in points])
    assert cal.coefficients == pytest.approx(np.polyfit(x, y, 1).tolist())
    assert cal.id == "my-cal" and cal.target == "bn" and cal.input == "wf@100"
    assert cal.fitted_for["steps"] == 100
    with pytest.raises(TTABenchError, match="steps"):
        cal.check({"steps": 200})

    result = invoke(tmp_path / "run", "--estimator", "flips", "--degree", "3", "--monotone",
                    "--output", out)
    assert result.exit_code == 0, result.output
    mono = Calibration.load(out)
    calib = [v for r, v, _ in points if r == "calibration"]
    grid = np.linspace(min(calib), max(calib), 50)
    assert np.all(np.diff(np.polyval(mono.coefficients, grid)) <= 1e-9)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--estimator", "nope"], "estimator 'nope' is not in these cells; found: ac, doc, flips"),
        (["--estimator", "doc"], "no result in the source view of any cell: needs a labelled"),
        (["--estimator", "flips", "--score", "wf@7"], "records no score 'wf@7'; recorded: wf@100, wf@200"),
        (["--estimator", "flips", "--target", "adapted"], "too few points: 0"),
        (["--estimator", "flips", "--model", "other"], "no cells with model 'other'"),
    ],
)
def test_fit_one_line_errors(tmp_path, args, message):
    write_run(tmp_path / "run")
    result = invoke(tmp_path / "run", *args, "--output", tmp_path / "cal.json")
    assert isinstance(result.exception, TTABenchError), result.output
    assert message in str(result.exception)
    assert "\n" not in str(result.exception)
    assert not (tmp_path / "cal.json").exists()


def test_fit_errors_no_cells_too_few_points_and_mixed_adapters(tmp_path):
    (tmp_path / "empty").mkdir()
    result = invoke(tmp_path / "empty", "--estimator", "flips", "--output", tmp_path / "c.json")
    assert isinstance(result.exception, TTABenchError) and "no cell results" in str(result.exception)

    write_run(tmp_path / "small", n_calib=2)
    result = invoke(tmp_path / "small", "--estimator", "flips", "--output", tmp_path / "c.json")
    assert isinstance(result.exception, TTABenchError)
    assert "too few points: 2" in str(result.exception) and "at least 3" in str(result.exception)

    write_run(tmp_path / "mixed", adapter="tent", seed=1)
    write_run(tmp_path / "mixed", adapter="rdumb", seed=2)
    result = invoke(tmp_path / "mixed", "--estimator", "flips", "--output", tmp_path / "c.json")
    assert isinstance(result.exception, TTABenchError)
    assert "several adapters (rdumb, tent); choose one with --adapter" in str(result.exception)
    result = invoke(tmp_path / "mixed", "--estimator", "flips", "--adapter", "tent",
                    "--output", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    assert "9 points" in result.output


def test_fit_without_calibration_cells_says_what_to_do(tmp_path):
    write_run(tmp_path / "run", n_calib=0)
    result = invoke(tmp_path / "run", "--estimator", "flips", "--output", tmp_path / "c.json")
    assert isinstance(result.exception, TTABenchError)
    assert "--splits all" in str(result.exception)
