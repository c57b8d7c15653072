"""The Weighted Flips estimators driven by hand: plan, snapshots, compute."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ttabench.api import TrajectoryContext, TrajectoryPlan
from ttabench.errors import TTABenchError
from ttabench_enigma.calibrations import load_calibration
from ttabench_enigma.estimator import (
    UnweightedFlips,
    WeightedFlips,
    WeightedFlipsSource,
    WeightedFlipsTS,
)
from ttabench_enigma.flips import weighted_flips

CLASSES = 10


def logits_for(n: int, seed: int) -> torch.Tensor:
    """Random logits whose rows repeat, so that several images share a confidence exactly."""
    g = torch.Generator().manual_seed(seed)
    distinct = torch.randn(max(1, n // 4), CLASSES, generator=g, dtype=torch.float64) * 2
    return distinct[torch.randint(0, len(distinct), (n,), generator=g)]


def plain_snapshot(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """argmax and max softmax computed independently in numpy."""
    z = logits.double().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return z.argmax(1), p.max(1)


def context(n: int, source_logits: torch.Tensor | None = None, classes: int = CLASSES) -> TrajectoryContext:
    if source_logits is None:
        source_logits = torch.zeros(n, classes)
    return TrajectoryContext(
        num_classes=classes, steps_run=990, probe_size=n, probe_source_logits=source_logits, dataset_size=5000
    )


def drive(estimator, snapshots: dict[int, torch.Tensor], ctx: TrajectoryContext):
    estimator.reset()
    for step in estimator.plan().checkpoints:
        estimator.on_snapshot(step, snapshots[step])
    return estimator.compute(ctx)


def test_plan_and_defaults() -> None:
    est = WeightedFlips()
    assert est.plan() == TrajectoryPlan(probe_size=1000, checkpoints=(0, 990), chunk=100)
    assert (est.name, est.target, est.kind, est.default_adapter) == ("enigma", "bn", "score", "rdumb")
    custom = WeightedFlips(checkpoints=(300, 100), probe_size=64, chunk=32)
    assert custom.plan() == TrajectoryPlan(64, (0, 100, 300), 32)
    params = WeightedFlips(calibration="rn50-v1-wf-quadratic").params()
    json.dumps(params)
    assert params["calibration"] == "rn50-v1-wf-quadratic" and params["estimate_at"] == 990
    assert params["calibration_coefficients"] == load_calibration("rn50-v1-wf-quadratic").coefficients


def test_value_and_curve_equal_weighted_flips() -> None:
    n = 200
    snaps = {0: logits_for(n, 0), 100: logits_for(n, 1), 300: logits_for(n, 2)}
    snaps[100][: n // 2] = snaps[0][: n // 2]  # half the probe keeps its step-0 logits
    est = WeightedFlips(probe_size=n, checkpoints=(0, 100, 300), estimate_at=100)
    result = drive(est, snaps, context(n))
    pred0, conf0 = plain_snapshot(snaps[0])
    expected = {k: plain_snapshot(snaps[k])[0] for k in (100, 300)}
    for k, pred in expected.items():
        assert result.scores[f"wf@{k}"] == pytest.approx(weighted_flips(pred0, conf0, pred), rel=1e-12)
        curve = {c["step"]: c for c in result.extras["flip_curve"]}
        assert curve[k]["u"] == float(np.sum(pred0 != pred))
        assert f"u@{k}" not in result.scores
    assert result.value == result.scores["wf@100"]
    assert result.estimate is None
    assert result.extras["probe_size"] == n and result.extras["rescale"] == 1.0
    assert [c["step"] for c in result.extras["flip_curve"]] == [100, 300]
    json.dumps(result.extras)


def test_unplanned_snapshots_are_ignored_and_reset_clears() -> None:
    n = 20
    est = WeightedFlips(probe_size=n, checkpoints=(0, 10))
    est.on_snapshot(0, logits_for(n, 0))
    est.on_snapshot(5, logits_for(n, 1))
    est.on_snapshot(10, logits_for(n, 0))
    assert est.compute(context(n)).value == 0.0
    est.reset()
    with pytest.raises(TTABenchError, match="no probe snapshot"):
        est.compute(context(n))


def test_unweighted_value_is_the_flip_count() -> None:
    n = 50
    snaps = {0: logits_for(n, 3), 990: logits_for(n, 4)}
    result = drive(UnweightedFlips(probe_size=n), snaps, context(n))
    assert result.value == float(np.sum(plain_snapshot(snaps[0])[0] != plain_snapshot(snaps[990])[0]))
    assert UnweightedFlips().params()["weighted"] is False
    with pytest.raises(TTABenchError, match="weighted"):
        UnweightedFlips(weighted=True)


def test_probe_smaller_than_requested_is_rescaled() -> None:
    n = 100
    snaps = {0: logits_for(n, 5), 990: logits_for(n, 6)}
    result = drive(WeightedFlips(), snaps, context(n))
    pred0, conf0 = plain_snapshot(snaps[0])
    pred1 = plain_snapshot(snaps[990])[0]
    assert result.value == pytest.approx(10 * weighted_flips(pred0, conf0, pred1), rel=1e-12)
    unweighted = drive(UnweightedFlips(), snaps, context(n))
    assert unweighted.scores["u@990"] == pytest.approx(10 * float(np.sum(pred0 != pred1)))
    assert result.extras["rescale"] == 10.0
    assert result.extras["probe_size"] == 100 and result.extras["probe_size_requested"] == 1000
    assert result.extras["flip_curve"][0]["wf"] == pytest.approx(weighted_flips(pred0, conf0, pred1))


def test_calibration_applies_when_protocol_matches() -> None:
    n = 1000
    snaps = {0: logits_for(n, 7), 990: logits_for(n, 8)}
    est = WeightedFlips(calibration="rn50-v1-wf-quadratic")
    result = drive(est, snaps, context(n, classes=1000, source_logits=torch.zeros(n, 1000)))
    coefficients = [3.55553868e-04, -3.21445023e-01, 7.56618580e01]
    expected = float(np.clip(np.poly1d(coefficients)(result.value) / 100, 0, 1))
    assert result.estimate == pytest.approx(expected, rel=1e-12)
    assert result.extras["calibration"] == {"id": "rn50-v1-wf-quadratic", "target": "source", "forced": False}


def test_calibration_refused_under_another_protocol_unless_forced() -> None:
    with pytest.raises(TTABenchError, match="steps"):
        WeightedFlips(checkpoints=(0, 500), calibration="rn50-v1-wf-quadratic")
    with pytest.raises(TTABenchError, match="probe_size"):
        WeightedFlips(probe_size=100, calibration="rn50-v1-wf-quadratic")
    with pytest.raises(TTABenchError, match="maps 'flips'"):
        WeightedFlips(calibration="rn50-v1-u-linear")
    with pytest.raises(TTABenchError, match="maps 'weighted_flips'"):
        UnweightedFlips(calibration="rn50-v1-wf-quadratic")
    assert UnweightedFlips(calibration="rn50-v1-u-linear").calibration.id == "rn50-v1-u-linear"
    WeightedFlips(probe_size=100, calibration="rn50-v1-wf-probe100")
    WeightedFlips(checkpoints=(0, 500), calibration="rn50-v1-wf-step500")

    n = 30
    snaps = {0: logits_for(n, 9), 990: logits_for(n, 10)}
    strict = WeightedFlips(probe_size=n, calibration="rn50-v1-wf-quadratic", force_calibration=True)
    forced = drive(strict, snaps, context(n))
    assert forced.estimate == pytest.approx(load_calibration("rn50-v1-wf-quadratic")(forced.value))
    assert forced.extras["calibration"]["forced"] is True
    # the number of classes is only known at compute: 10 here, 1000 in the calibration
    est = WeightedFlips(calibration="rn50-v1-wf-quadratic")
    with pytest.raises(TTABenchError, match="num_classes"):
        drive(est, {0: logits_for(n, 9), 990: logits_for(n, 10)}, context(n))


def test_parameter_validation_and_faithful_mode() -> None:
    assert WeightedFlips(faithful=True).params()["faithful"] is True
    contradictions = [
        {"probe_size": 100},
        {"checkpoints": (0, 500)},
        {"chunk": 50},
        {"checkpoints": (0, 500, 990), "estimate_at": 500},
    ]
    for bad in contradictions:
        with pytest.raises(TTABenchError, match="faithful"):
            WeightedFlips(faithful=True, **bad)
    with pytest.raises(TTABenchError, match="estimate_at"):
        WeightedFlips(checkpoints=(0, 100), estimate_at=50)
    with pytest.raises(TTABenchError, match="estimate_at"):
        WeightedFlips(estimate_at=0)
    with pytest.raises(TTABenchError, match="checkpoints"):
        WeightedFlips(checkpoints=(0,))
    with pytest.raises(TTABenchError, match="checkpoints"):
        WeightedFlips(checkpoints=(-1, 10))
    with pytest.raises(TTABenchError, match="checkpoints"):
        WeightedFlips(checkpoints="990")
    with pytest.raises(TTABenchError, match="checkpoints"):
        WeightedFlips(checkpoints=(0, 99.5))
    with pytest.raises(TTABenchError, match="probe_size"):
        WeightedFlips(probe_size=0)
    with pytest.raises(TTABenchError, match="unknown calibration"):
        WeightedFlips(calibration="no-such-map")


def test_source_variant_on_constructed_inputs() -> None:
    n, k = 100, CLASSES
    snaps = {0: logits_for(n, 11), 990: logits_for(n, 12)}
    pred0, conf0 = plain_snapshot(snaps[0])
    pred1 = plain_snapshot(snaps[990])[0]
    # frozen model agrees with the step-0 predictions on exactly the first 70 images
    frozen = np.where(np.arange(n) < 70, pred0, (pred0 + 1) % k)
    source_logits = torch.nn.functional.one_hot(torch.from_numpy(frozen), k).float() * 5
    est = WeightedFlipsSource(probe_size=n)
    assert est.target == "source" and est.kind == "score"
    result = drive(est, snaps, context(n, source_logits))
    wf = weighted_flips(pred0, conf0, pred1)
    assert result.extras["agreement"] == pytest.approx(0.7)
    assert result.extras["flip_scores"]["wf@990"] == pytest.approx(wf)
    assert result.value == pytest.approx((1 - wf / ((n + 1) / 2)) * 0.7, rel=1e-12)
    assert result.scores == {"wfa@990": result.value}

    # a collapsed frozen model (one class for all) agrees only where bn predicts that class
    collapsed = torch.zeros(n, k)
    collapsed[:, 3] = 9.0
    result = drive(est, snaps, context(n, collapsed))
    share = float(np.mean(pred0 == 3))
    assert result.extras["agreement"] == pytest.approx(share)
    assert result.value == pytest.approx((1 - wf / ((n + 1) / 2)) * share, rel=1e-12)

    # no flips and full agreement: the score is 1
    result = drive(est, {0: snaps[0], 990: snaps[0]}, context(n, snaps[0]))
    assert result.value == 1.0

    with pytest.raises(TTABenchError, match="probe_source_logits"):
        drive(est, snaps, context(n, torch.zeros(n - 1, k)))
    with pytest.raises(TTABenchError, match="maps 'weighted_flips'"):
        WeightedFlipsSource(calibration="rn50-v1-wf-quadratic")


def test_deterministic() -> None:
    n = 300
    snaps = {0: logits_for(n, 13), 100: logits_for(n, 14), 990: logits_for(n, 15)}
    for cls in (WeightedFlips, UnweightedFlips, WeightedFlipsSource):
        first = drive(cls(probe_size=n, checkpoints=(100, 990)), snaps, context(n, logits_for(n, 16)))
        second = drive(cls(probe_size=n, checkpoints=(100, 990)), snaps, context(n, logits_for(n, 16)))
        assert first.value == second.value and first.scores == second.scores
        assert first.extras == second.extras


def test_temperature_scaled_variant_ranks_scaled_confidences() -> None:
    from dataclasses import replace

    from ttabench.api import Outputs
    from ttabench.estimators.functional import fit_temperature

    n = 400
    snaps = {0: logits_for(n, 21) * 3, 990: logits_for(n, 22)}
    # over-confident validation logits: the fitted temperature is well above 1
    g = torch.Generator().manual_seed(5)
    val_logits = torch.randn(300, CLASSES, generator=g) * 8
    val_labels = torch.where(torch.rand(300, generator=g) < 0.5, val_logits.argmax(1),
                             torch.randint(0, CLASSES, (300,), generator=g))
    temperature = fit_temperature(val_logits, val_labels)
    assert temperature > 1.5
    ctx = replace(context(n), source_val=Outputs(val_logits, val_labels))
    result = drive(WeightedFlipsTS(probe_size=n), snaps, ctx)
    # independent computation: numpy softmax of z0 / T, then the reference's weighting
    pred0, _ = plain_snapshot(snaps[0])
    _, conf_t = plain_snapshot(snaps[0] / temperature)
    pred1, _ = plain_snapshot(snaps[990])
    assert result.value == pytest.approx(weighted_flips(pred0, conf_t, pred1), rel=1e-9)
    assert result.extras["temperature"] == pytest.approx(temperature)
    plain = drive(WeightedFlips(probe_size=n), snaps, context(n))
    assert plain.extras["temperature"] == 1.0
    assert result.value != pytest.approx(plain.value, rel=1e-6)  # the ranks did change
    assert WeightedFlipsTS.needs >= {"source_val"}
    with pytest.raises(TTABenchError, match="source-validation"):
        drive(WeightedFlipsTS(probe_size=n), snaps, context(n))


def test_calibration_fitted_for_another_estimator_is_refused(tmp_path) -> None:
    """enigma+ts scores the same input (weighted flips) with other confidences: its map is not
    enigma's, and enigma's is not the source variant's."""
    cal = load_calibration("rn50-v1-wf-quadratic")
    cal.estimator, cal.id = "enigma+ts", "ts-map"
    path = tmp_path / "ts-map.json"
    cal.save(path)
    with pytest.raises(TTABenchError, match="fitted for estimator 'enigma\\+ts', not 'enigma'"):
        WeightedFlips(calibration=str(path))
    assert WeightedFlips(calibration=str(path), force_calibration=True).calibration.id == "ts-map"
    assert WeightedFlips(calibration="rn50-v1-wf-quadratic").calibration.estimator == "enigma"


def test_temperature_is_fitted_once_per_source_val_object(monkeypatch) -> None:
    """The host keeps one source-val object per process: enigma+ts fits T on it once, not once
    per cell, and a different object gets its own fit."""
    from dataclasses import replace

    import ttabench.estimators.functional as functional
    from ttabench.api import Outputs

    calls = []
    fit = functional.fit_temperature
    monkeypatch.setattr(functional, "fit_temperature",
                        lambda logits, labels: calls.append(1) or fit(logits, labels))
    n = 200
    snaps = {0: logits_for(n, 31), 990: logits_for(n, 32)}
    g = torch.Generator().manual_seed(7)
    val = Outputs(torch.randn(100, CLASSES, generator=g) * 4, torch.randint(0, CLASSES, (100,), generator=g))
    first = [drive(WeightedFlipsTS(probe_size=n), snaps, replace(context(n), source_val=val))
             for _ in range(3)]
    assert len(calls) == 1
    assert len({r.value for r in first}) == 1
    assert first[0].extras["temperature"] == pytest.approx(fit(val.logits, val.labels))
    other = Outputs(val.logits.clone(), val.labels.clone())
    drive(WeightedFlipsTS(probe_size=n), snaps, replace(context(n), source_val=other))
    assert len(calls) == 2


def test_window_results_are_the_flip_scores_at_each_windows_last_step() -> None:
    n = 120
    snaps = {k: logits_for(n, k) for k in (0, 10, 20, 30)}
    est = WeightedFlips(probe_size=n, checkpoints=(0, 10, 20, 30))
    ctx = TrajectoryContext(num_classes=CLASSES, steps_run=35, probe_size=n,
                            probe_source_logits=torch.zeros(n, CLASSES), dataset_size=500)
    result = drive(est, snaps, ctx)
    pred0, conf0 = plain_snapshot(snaps[0])
    windows = est.window_results(10)  # 35 steps: three complete windows, ending at 10, 20, 30
    assert [w.value for w in windows] == [result.scores[f"wf@{k}"] for k in (10, 20, 30)]
    assert windows[1].value == pytest.approx(
        weighted_flips(pred0, conf0, plain_snapshot(snaps[20])[0]), rel=1e-12)
    assert est.window_results(15) is None  # windows ending at 15 and 30: 15 is no checkpoint
