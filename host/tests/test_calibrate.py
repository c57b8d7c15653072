"""``ttabench calibrate`` and ``ttabench estimate --calibration``, end to end on ``tiny-cnn``.

A folder of 120 labelled tiny images (class folders ``0``..``3``) is calibrated on a small
meta-set (3 families x 3 sets of 48 images) with ``ac`` and ``doc`` (direct) and ``nuclear``
(a score, every map kind). The file's calibration errors and its chosen entry are checked
against a direct leave-one-dataset-out over the same cells, re-stated here (numpy polynomial
fits, scikit-learn's isotonic regression, the logit fits by hand); the estimate on an
unlabelled folder against the stored map applied by hand, its interval against the quadrature
rule by hand; and the refusals (classes, count, another model, a damaged file) as one line
before any cell runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy.stats import spearmanr
from sklearn.isotonic import IsotonicRegression

from cli_checks import one_line_error
from ttabench import registry
from ttabench.api import Outputs
from ttabench.cli import main
from ttabench.models.tiny import load_tiny_cnn
from ttabench.suites.tiny import make_images

pytestmark = pytest.mark.filterwarnings("ignore::ttabench.suites.images.CorruptImageWarning")
FAMILIES = "clean,rotate,speckle_noise"
EPS = 1e-3


def save_images(root: Path, images: torch.Tensor, folders: list[str]) -> None:
    for i, (image, folder) in enumerate(zip(images, folders)):
        path = root / folder / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("calibrate")
    images, labels = make_images(120, seed=3)
    save_images(base / "labelled", images, [str(int(y)) for y in labels])
    shifted, _ = make_images(96, seed=11, noise=90.0)
    save_images(base / "unlabelled", shifted, ["."] * len(shifted))
    (base / "none.toml").write_text("")
    return {"base": base, "labelled": base / "labelled", "unlabelled": base / "unlabelled",
            "config": base / "none.toml"}


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def calibrate_args(folders: dict[str, Path], *more: str) -> list[str]:
    return ["calibrate", "-m", "tiny-cnn", "--labelled", str(folders["labelled"]), "-e",
            "ac,doc,nuclear", "--no-baselines", "--config", str(folders["config"]),
            "--families", FAMILIES, "--sets-per-family", "3", "--set-size", "48",
            "--jobs", "1", "--threads", "1", "--cells", str(folders["base"] / "cells"), *more]


@pytest.fixture(scope="module")
def calibrated(folders) -> tuple[Path, dict]:
    output = folders["base"] / "calibration.json"
    result = invoke(*calibrate_args(folders, "-o", str(output)))
    assert result.exit_code == 0, result.output
    return output, json.loads(output.read_text())


# ------------------------------------------------------------------ the direct re-statement


def cell_points(cells: Path, estimator: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(value in the source view, source accuracy, dataset) per finished cell, read raw."""
    xs, ys, datasets = [], [], []
    for path in sorted((cells / "cells").glob("*.json")):
        cell = json.loads(path.read_text())
        xs.append(cell["estimators"][estimator]["views"]["source"]["value"])
        ys.append(cell["targets"]["source"])
        datasets.append(cell["split"]["dataset"])
    return np.array(xs), np.array(ys), datasets


def fit_and_predict(kind: str, x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    if kind == "iso":
        rho = spearmanr(x, y).statistic
        model = IsotonicRegression(increasing=bool(np.nan_to_num(rho, nan=1.0) >= 0),
                                   out_of_bounds="clip").fit(x, y)
        return np.clip(model.predict(at), 0, 1)
    degree = 2 if kind.endswith("quad") else 1
    if kind.startswith("logit-"):
        clipped = np.clip(y, EPS, 1 - EPS)
        coef = np.polyfit(x, np.log(clipped / (1 - clipped)), degree)
        return 1 / (1 + np.exp(-np.polyval(coef, at)))
    return np.clip(np.polyval(np.polyfit(x, y, degree), at), 0, 1)


def direct_lodo(kind: str | None, x: np.ndarray, y: np.ndarray,
                datasets: list[str]) -> tuple[float, np.ndarray]:
    """(LODO MAE in pp, per-dataset averaged; the LODO predictions): each family predicted by
    a map fitted on the others (``kind`` None: the value itself, nothing fitted)."""
    groups = np.array(datasets)
    predictions = x.copy() if kind is None else np.empty(len(x))
    if kind is not None:
        for group in np.unique(groups):
            held = groups == group
            predictions[held] = fit_and_predict(kind, x[~held], y[~held], x[held])
    per_family = [np.abs(predictions - y)[groups == g].mean() for g in np.unique(groups)]
    return 100 * float(np.mean(per_family)), predictions


def test_entries_and_choice_match_a_direct_leave_one_dataset_out(folders, calibrated):
    _, data = calibrated
    cells = folders["base"] / "cells"
    expected: dict[str, tuple[float, np.ndarray, np.ndarray]] = {}
    for name in ("ac", "doc"):
        x, y, datasets = cell_points(cells, name)
        expected[name] = (*direct_lodo(None, x, y, datasets), y)
    x, y, datasets = cell_points(cells, "nuclear")
    for kind in ("lin", "quad", "iso", "logit-lin", "logit-quad"):
        expected[f"nuclear ({kind})"] = (*direct_lodo(kind, x, y, datasets), y)
    assert len(set(datasets)) == 3 and len(y) == 9
    found = {e["name"]: e for e in data["entries"]}
    assert set(found) == set(expected)
    for name, (mae, predictions, truth) in expected.items():
        assert found[name]["lodo_mae"] == pytest.approx(mae, abs=1e-6), name
        assert found[name]["n_cells"] == 9 and found[name]["n_datasets"] == 3
        # the 95% quantile of the absolute LODO errors: the ceil(0.95 * 10) = 10th of 9 -> max
        assert found[name]["error_q95"] == pytest.approx(
            float(np.max(np.abs(predictions - truth))), abs=1e-9), name
    assert data["chosen"] == min(expected, key=lambda n: (expected[n][0], n))
    # the choice itself, nested: without family d, each entry's LODO MAE over the others
    # (maps fitted without d and the family predicted), the lowest predicts d
    groups = np.array(datasets)
    families = sorted(set(datasets))
    nested = np.empty(len(y))
    for d in families:
        inner = {}
        for name in expected:
            kind = name.split("(")[1][:-1] if "(" in name else None
            xs = x if name.startswith("nuclear") else cell_points(cells, name)[0]
            errors = []
            for e in families:
                if e == d:
                    continue
                keep = (groups != d) & (groups != e)
                at = groups == e
                guess = xs[at] if kind is None else fit_and_predict(kind, xs[keep], y[keep],
                                                                    xs[at])
                errors.append(np.abs(guess - y[at]).mean())
            inner[name] = float(np.mean(errors))
        pick = min(inner, key=lambda n: (round(inner[n], 12), n))
        nested[groups == d] = expected[pick][1][groups == d]
    per_family = [np.abs(nested - y)[groups == g].mean() for g in families]
    assert data["choice_lodo_mae"] == pytest.approx(100 * np.mean(per_family), abs=1e-6)
    assert data["choice_error_q95"] == pytest.approx(float(np.max(np.abs(nested - y))))
    assert data["model"]["id"] == "tiny-cnn:0" and data["protocol"]["target"] == "source"
    assert data["meta_set"]["n_sets"] == 9 and data["labelled"]["images"] == 120


def test_a_rerun_resumes_from_the_finished_cells(folders, calibrated):
    output, data = calibrated
    again = folders["base"] / "again.json"
    result = invoke(*calibrate_args(folders, "-o", str(again)))
    assert result.exit_code == 0, result.output
    assert "9 meta-set cells, 0 to run" in result.output
    redone = json.loads(again.read_text())
    assert {k: v for k, v in redone.items() if k != "created"} == {
        k: v for k, v in data.items() if k != "created"}


def stored(entry: dict, value: float) -> float:
    """The stored map of an entry applied by hand."""
    m = entry["map"]
    if m["kind"] in ("direct", "own"):
        return value
    if m["kind"] == "iso":
        return float(np.interp(value, m["knots_x"], m["knots_y"]))
    raw = np.polyval(m["coefficients"], value)
    if m["kind"].startswith("logit-"):
        return float(1 / (1 + np.exp(-raw)))
    return float(np.clip(raw, 0, 1))


def test_estimate_applies_the_chosen_map_with_the_calibration_error(folders, calibrated):
    output, data = calibrated
    result = invoke("estimate", "--calibration", str(output), "--data",
                    str(folders["unlabelled"]), "--threads", "1", "--n-boot", "50", "--all",
                    "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["entry"] == data["chosen"] and report["model"] == "tiny-cnn:0"
    images, _ = make_images(96, seed=11, noise=90.0)
    model = load_tiny_cnn().module.eval()
    with torch.no_grad():
        logits = model(images.float() / 255)
    entries = {e["name"]: e for e in data["entries"]}
    by_entry = {r["entry"]: r for r in report["all"]}
    # --all: each estimator's best entry, the lowest calibration error first
    assert len(by_entry) == 3 and by_entry[data["chosen"]]["estimate"] == report["estimate"]
    for name, row in by_entry.items():
        entry = entries[name]
        est = registry.get("estimators", entry["estimator"])()
        if "source_val" not in est.needs:
            value = est.estimate(Outputs(logits, frozen_logits=logits), None).value
            assert row["score"] == pytest.approx(value, abs=1e-6)
            assert row["estimate"] == pytest.approx(stored(entry, value), abs=1e-6)
        q = entry["error_q95"]
        if name == data["chosen"]:  # the choice's nested error, where larger
            q = max(q, data["choice_error_q95"])
        a, (s_low, s_high) = row["estimate"], row["sampling_interval"]
        assert row["calibration_error_q95"] == q
        assert row["interval"] == pytest.approx(
            [max(0.0, a - math.hypot(a - s_low, q)), min(1.0, a + math.hypot(s_high - a, q))],
            abs=1e-12)
        assert s_low <= a <= s_high or not np.isfinite(s_low)


def test_refusals_are_one_line_before_any_cell(folders, calibrated, tmp_path):
    output, data = calibrated
    bad = tmp_path / "bad"
    images, labels = make_images(120, seed=4)
    save_images(bad, images, ["7" if i == 0 else str(int(y)) for i, y in enumerate(labels)])
    line = one_line_error(invoke(*calibrate_args({**folders, "labelled": bad}, "--cells",
                                                 str(tmp_path / "cells1"))))
    assert "class '7' does not match the model's 4 classes" in line
    few = tmp_path / "few"
    save_images(few, images[:60], [str(int(y)) for y in labels[:60]])
    line = one_line_error(invoke(*calibrate_args({**folders, "labelled": few}, "--cells",
                                                 str(tmp_path / "cells2"))))
    assert "has 60 readable labelled images; a calibration needs at least 100" in line
    assert not (tmp_path / "cells1").exists() and not (tmp_path / "cells2").exists()
    # a calibration made for another model (tiny-cnn:1: other weights)
    line = one_line_error(invoke("estimate", "--calibration", str(output), "--data",
                                 str(folders["unlabelled"]), "-m", "tiny-cnn:1"))
    assert "was made for model tiny-cnn:0" in line and "not tiny-cnn:1" in line
    # a damaged file: a number written as a string
    damaged = tmp_path / "damaged.json"
    data_bad = json.loads(output.read_text())
    data_bad["entries"][0]["lodo_mae"] = "3.2"
    damaged.write_text(json.dumps(data_bad))
    line = one_line_error(invoke("estimate", "--calibration", str(damaged), "--data",
                                 str(folders["unlabelled"])))
    assert f"calibration file {damaged}: entries.0.lodo_mae" in line
    # an option the calibration fixes
    line = one_line_error(invoke("estimate", "--calibration", str(output), "--data",
                                 str(folders["unlabelled"]), "--batch-size", "32"))
    assert "--batch-size 32 contradicts the calibration, made with 64" in line
