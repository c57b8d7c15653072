"""The model calibration file (``ttabench.calibrate.record``) and the pieces of an estimate's
interval (``ttabench.calibrate.interval``), against hand-worked numbers."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from ttabench.calibrate.interval import Interval, conformal_quantile, normal_interval
from ttabench.calibrate.record import SCHEMA, ModelCalibration, StoredMap, model_calibration_of
from ttabench.errors import TTABenchError
from ttabench.records import ViewResult

ENTRY = {"name": "mano (lin)", "estimator": "mano", "lodo_mae": 3.5, "error_q95": 0.09,
         "n_cells": 40, "n_datasets": 8,
         "map": {"kind": "lin", "input": "value", "coefficients": [2.0, -0.5], "knots_x": [],
                 "knots_y": []}}
FILE = {
    "schema": SCHEMA, "chosen": "mano (lin)", "entries": [
        ENTRY,
        {**ENTRY, "name": "mano (iso)", "lodo_mae": 4.0,
         "map": {"kind": "iso", "input": "value", "coefficients": [], "knots_x": [0.2, 0.4, 0.8],
                 "knots_y": [0.1, 0.5, 0.6]}},
        {**ENTRY, "name": "ac", "estimator": "ac", "lodo_mae": 6.0,
         "map": {"kind": "direct", "input": None, "coefficients": [], "knots_x": [],
                 "knots_y": []}}],
    "model": {"spec": "tiny-cnn", "id": "tiny-cnn:0", "weights_hash": "ab" * 32,
              "num_classes": 4},
    "protocol": {"target": "source", "adapter": "source", "adapter_params": {},
                 "estimator_params": {"mano": {}, "ac": {}}, "batch_size": 64, "steps": 0,
                 "stream": "reset-each-split", "image_size": 16, "resize": 16},
}


def test_maps_apply_as_stored():
    cal = ModelCalibration.from_json(copy.deepcopy(FILE), "test")
    assert cal.entry("mano (lin)").map.accuracy(ViewResult(value=0.4)) == pytest.approx(0.3)
    assert cal.entry("mano (lin)").map.accuracy(ViewResult(value=0.1)) == 0.0  # clipped
    assert cal.entry("mano (iso)").map.accuracy(ViewResult(value=0.6)) == pytest.approx(0.55)
    assert cal.entry("mano (iso)").map.accuracy(ViewResult(value=0.9)) == pytest.approx(0.6)
    assert cal.entry("ac").map.accuracy(ViewResult(value=0.7)) == 0.7
    assert StoredMap("own").accuracy(ViewResult(value=3.0, estimate=0.4)) == 0.4
    assert StoredMap("own").accuracy(ViewResult(value=3.0)) is None
    # each estimator's best entry, lowest calibration error first
    assert [e.name for e in cal.per_estimator()] == ["mano (lin)", "ac"]
    with pytest.raises(TTABenchError, match="'cot' is not calibrated in this calibration; "
                       "calibrated: ac, mano"):
        cal.best_of("cot")


@pytest.mark.parametrize("change, needle", [
    (lambda d: d["entries"][0].update(lodo_mae="3.5"), "entries.0.lodo_mae"),
    (lambda d: d["entries"][0]["map"].update(coefficients=[1.0]),
     "a lin map has 2 coefficients, got 1"),
    (lambda d: d["entries"][1]["map"].update(knots_x=[0.2, 0.2, 0.8]), "knots_x must increase"),
    (lambda d: d["entries"][2]["map"].update(input="value"), "a direct map takes no 'input'"),
    (lambda d: d.update(chosen="cot"), "chosen entry 'cot' is not among the entries"),
    (lambda d: d.update(code="__import__('os')"), "code: extra inputs are not permitted"),
    (lambda d: d["entries"].append(d["entries"][0]), "entry names must be distinct"),
])
def test_a_damaged_file_is_one_line_naming_the_field(tmp_path, change, needle):
    data = copy.deepcopy(FILE)
    change(data)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TTABenchError, match=f"calibration file {path}: .*{needle}"):
        model_calibration_of(path)


def test_a_single_map_file_or_a_shipped_id_is_not_a_model_calibration(tmp_path):
    path = tmp_path / "single.json"
    path.write_text(json.dumps({"schema": "ttabench.calibration/1"}))
    assert model_calibration_of(path) is None
    assert model_calibration_of("rn50-v1-wf-quadratic") is None
    path.write_text("{not json")
    with pytest.raises(TTABenchError, match="is not valid JSON"):
        model_calibration_of(path)


def test_save_checks_and_round_trips(tmp_path):
    cal = ModelCalibration.from_json(copy.deepcopy(FILE), "test")
    cal.save(tmp_path / "out.json")
    again = model_calibration_of(tmp_path / "out.json")
    assert again is not None and again.to_json() == cal.to_json()


def test_conformal_quantile_and_the_quadrature_rule_by_hand():
    # m = 40 errors 0.01 .. 0.40: rank ceil(0.95 * 41) = 39 -> 0.39; m = 9: the largest
    assert conformal_quantile(np.arange(1, 41) / 100) == pytest.approx(0.39)
    assert conformal_quantile(-np.arange(1, 10) / 100) == pytest.approx(0.09)
    interval = Interval.combine(0.5, (0.46, 0.53), 0.03)
    assert (interval.low, interval.high) == pytest.approx((0.45, 0.5 + math.sqrt(0.0018)))
    assert Interval.combine(0.98, (0.97, 0.99), 0.05).high == 1.0
    assert Interval.combine(0.5, (0.46, 0.53), None).low == pytest.approx(0.46)
    # normal: sd of (0.4, 0.5, 0.6) with ddof 1 is 0.1
    assert normal_interval(0.5, np.array([0.4, 0.5, 0.6])) == pytest.approx(
        (0.5 - 0.1959963984540054, 0.5 + 0.1959963984540054))


def test_entries_share_their_cells_and_a_mostly_failing_estimator_is_left_out():
    """Six meta-set cells of three families: ``a`` (direct) everywhere, ``b`` (a score) failing
    in one, ``c`` failing in four: ``c`` is skipped with why, ``a`` and ``b`` are scored on the
    five cells both have."""
    from cell_builders import make_cell, static

    from ttabench.calibrate.choose import score_entries

    cells = []
    for i in range(6):
        family = "meta-" + "xyz"[i // 2]
        truth = 0.3 + 0.1 * i
        b_failed = {"source": "boom"} if i == 0 else None
        c_failed = {"source": "no features"} if i < 4 else None
        cells.append(make_cell(f"{family}-{i % 2}", family, None, "calibration",
                               {"source": truth}, {
                                   "a": static("direct", {"source": truth + 0.05}),
                                   "b": static("score", {} if i == 0 else {"source": 2.0 * i},
                                               failed=b_failed),
                                   "c": static("score", {} if i < 4 else {"source": 1.0},
                                               failed=c_failed)}))
    scored, skipped, common = score_entries(cells, "source", ("lin",))
    assert [c.split["name"] for c in common] == [c.split["name"] for c in cells[1:]]
    assert skipped == {"c": "no result in 4 of 6 calibration cells (failed: no features)"}
    by_name = {s.entry.name: s.entry for s in scored}
    assert set(by_name) == {"a", "b (lin)"}
    # a: +0.05 everywhere, nothing fitted; b: exactly linear in the truth, so LODO is exact
    assert by_name["a"].lodo_mae == pytest.approx(5.0)
    assert by_name["b (lin)"].lodo_mae == pytest.approx(0.0, abs=1e-9)
    assert by_name["a"].n_cells == by_name["b (lin)"].n_cells == 5
