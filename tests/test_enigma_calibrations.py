"""The shipped Weighted Flips calibrations: values, provenance, protocol checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ttabench.calibration import SCHEMA, Calibration
from ttabench.errors import TTABenchError
from ttabench_enigma.calibrations import list_calibrations, load_calibration

MODEL = "torchvision:resnet50/IMAGENET1K_V1"
# The paper's / reference code's numbers, copied from the spec (shared/spec/weighted-flips.md).
PUBLISHED = {
    "rn50-v1-wf-quadratic": ("weighted_flips", [3.55553868e-04, -3.21445023e-01, 7.56618580e01]),
    "rn50-v1-u-linear": ("flips", [-0.10318227, 83.55158891]),
    "rn50-v1-u-quadratic": ("flips", [-1.01165493e-05, -9.59406999e-02, 8.25756446e01]),
}
STEPS = {
    50: [0.00089, -0.45366, 71.47],
    100: [0.00059, -0.37770, 72.28],
    250: [0.00043, -0.34082, 73.83],
    500: [0.00036, -0.32231, 74.95],
    1000: [0.00036, -0.32145, 75.66],
}
PROBES = {
    50: [0.23936, -7.65272, 74.26],
    100: [0.07169, -4.30217, 77.62],
    250: [0.00694, -1.37516, 75.22],
    500: [0.00160, -0.69455, 75.96],
}
GRID = np.linspace(0.0, 1000.0, 2001)


def expected_fraction(coefficients: list[float], x: np.ndarray) -> np.ndarray:
    return np.clip(np.poly1d(coefficients)(x) / 100.0, 0.0, 1.0)


def test_shipped_ids() -> None:
    expected = set(PUBLISHED) | {f"rn50-v1-wf-step{n}" for n in STEPS} | {f"rn50-v1-wf-probe{n}" for n in PROBES}
    assert set(list_calibrations()) == expected
    assert list_calibrations() == sorted(expected)


@pytest.mark.parametrize("cal_id", sorted(PUBLISHED))
def test_published_maps_equal_poly1d(cal_id: str) -> None:
    score, coefficients = PUBLISHED[cal_id]
    cal = load_calibration(cal_id)
    assert cal.input == score and cal.output == "percent"
    assert cal.fitted_for == {"model": MODEL, "steps": 990, "probe_size": 1000, "num_classes": 1000,
                              "precision": "fp32"}
    np.testing.assert_allclose(cal(GRID), expected_fraction(coefficients, GRID), rtol=1e-12, atol=1e-15)
    for x in (0.0, 14.0, 264.0, 500.5):
        assert cal(x) == pytest.approx(float(expected_fraction(coefficients, np.array(x))), rel=1e-12)


def test_main_map_landmarks() -> None:
    cal = load_calibration("rn50-v1-wf-quadratic")
    assert cal(0.0) == pytest.approx(0.7566, abs=1e-4)
    raw = np.poly1d(cal.coefficients)
    fine = np.linspace(0.0, 500.5, 50051)
    x_min = fine[np.argmin(raw(fine))]
    assert abs(x_min - 452.0) < 1.0
    assert raw(x_min) == pytest.approx(3.0, abs=0.1)
    # decreasing over the fitted range of WF (about 14-264)
    assert np.all(np.diff(cal(np.linspace(14.0, 264.0, 251))) < 0)


@pytest.mark.parametrize("n", sorted(STEPS))
def test_step_variants(n: int) -> None:
    cal = load_calibration(f"rn50-v1-wf-step{n}")
    assert cal.input == "weighted_flips"
    assert cal.fitted_for == {"model": MODEL, "steps": n, "probe_size": 1000, "num_classes": 1000,
                              "precision": "fp32"}
    np.testing.assert_allclose(cal(GRID), expected_fraction(STEPS[n], GRID), rtol=1e-12)


@pytest.mark.parametrize("n", sorted(PROBES))
def test_probe_variants(n: int) -> None:
    cal = load_calibration(f"rn50-v1-wf-probe{n}")
    assert cal.fitted_for == {"model": MODEL, "steps": 990, "probe_size": n, "num_classes": 1000,
                              "precision": "fp32"}
    np.testing.assert_allclose(cal(GRID), expected_fraction(PROBES[n], GRID), rtol=1e-12)


def test_check_refuses_another_protocol_unless_forced() -> None:
    cal = load_calibration("rn50-v1-wf-quadratic")
    cal.check({"model": MODEL, "steps": 990, "probe_size": 1000, "num_classes": 1000})
    cal.check({"model": None, "steps": 990})  # unknown facts are not compared
    for key, other in [("model", "timm:resnet18"), ("steps", 500), ("probe_size", 100),
                       ("num_classes", 10), ("precision", "bf16")]:
        with pytest.raises(TTABenchError, match=key):
            cal.check({key: other})
        cal.check({key: other}, force=True)


def test_every_shipped_file_loads_with_provenance() -> None:
    for cal_id in list_calibrations():
        cal = load_calibration(cal_id)
        assert isinstance(cal, Calibration) and cal.id == cal_id
        assert cal.estimator in ("enigma", "enigma-unweighted")
        assert cal.degree in (1, 2) and cal.output == "percent" and cal.target == "source"
        assert "Entropy Enigma" in cal.provenance
        assert set(cal.fitted_for) == {"model", "steps", "probe_size", "num_classes", "precision"}


def test_load_by_path_and_unknown_id(tmp_path: Path) -> None:
    cal = load_calibration("rn50-v1-u-linear")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({**cal.to_json(), "id": "mine"}))
    loaded = load_calibration(path)
    assert loaded.id == "mine" and loaded.coefficients == cal.coefficients
    assert load_calibration(str(path)).id == "mine"
    assert json.loads(path.read_text())["schema"] == SCHEMA
    with pytest.raises(TTABenchError, match="rn50-v1-wf-quadratic"):
        load_calibration("no-such-calibration")
