"""The guard's decision rule, the drift signal and the online estimate against hand-worked values."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ttabench.api import Adapter
from ttabench.errors import TTABenchError
from ttabench_enigma.drift import drift_signal, prediction_entropy
from ttabench_enigma.guard import guard
from ttabench_enigma.guard_settings import load_settings
from ttabench_enigma.online import OnlineFlips, window_estimate

CLASSES = 4


class Scripted(Adapter):
    """Predicts the diverse pattern ``i mod 4`` until ``collapse_after`` steps since its last
    reset, then class 0 for every image (entropy minimization's failing phase, scripted)."""

    name = "scripted"
    collapse_after = 30

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.since_reset = 0
        self.resets = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.since_reset += 1
        return self.predict(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        classes = torch.arange(len(x)) % CLASSES
        if self.since_reset >= self.collapse_after:
            classes = torch.zeros(len(x), dtype=torch.long)
        return 5.0 * F.one_hot(classes, CLASSES).float()

    def reset(self) -> None:
        self.since_reset = 0
        self.resets += 1

    def counters(self) -> dict[str, int]:
        return {"resets": self.resets}


def _run(steps: int, **options) -> Adapter:
    adapter = guard(Scripted)(nn.Identity(), **options)
    for _ in range(steps):
        adapter(torch.zeros(8, 3, 4, 4))
    return adapter


def test_the_guard_resets_where_the_stream_collapses() -> None:
    # collapse from step 30 after each reset; checks every 5 steps, 2 alarms needed:
    # alarms at steps 30 and 35 -> reset after step 35 (0-based 34); again at 65, 70 -> 69.
    adapter = _run(100, threshold=0.5, patience=2, check_every=5, probe_batches=2, min_steps=10)
    assert adapter.counters()["guard_reset_steps"] == [34, 69]
    assert adapter.counters()["resets"] == 2 and adapter.counters()["guard_resets"] == 2
    assert adapter.name == "guard:scripted"


def test_min_steps_delays_and_a_high_threshold_prevents_the_reset() -> None:
    # one alarm suffices, but not before 40 steps since the last reset: step 40 (0-based 39)
    early = _run(60, threshold=0.5, patience=1, check_every=5, probe_batches=2, min_steps=40)
    assert early.counters()["guard_reset_steps"] == [39]
    never = _run(100, threshold=1.0, patience=1, check_every=5, probe_batches=2, min_steps=0)
    assert never.counters()["guard_reset_steps"] == []


def test_drift_signal_by_hand() -> None:
    reference = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 1.0], [4.0, 0, 0]])
    adapted = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0], [1.0, 0, 0]])
    signal = drift_signal(reference, adapted)
    # confidences rank 3, 2, 1, 4; images 1 and 2 flip: (2 + 1) / 4 / n
    assert signal.flips == pytest.approx((2 / 4 + 1 / 4) / 4)
    assert signal.collapse == pytest.approx(1.0)  # all predictions in one class
    assert signal.confidence == pytest.approx(math.e / (math.e + 2))
    h = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert prediction_entropy(torch.tensor([0, 1, 2, 0]), 3) == pytest.approx(h)
    half = drift_signal(reference, torch.tensor([[1.0, 0, 0], [0, 1.0, 0]] * 2))
    assert half.collapse == pytest.approx(1 - math.log(2) / h)


def _settings(tmp_path, coefficients) -> str:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({
        "schema": "ttabench_enigma.guard/1", "id": "test", "model": None,
        "guard": {"threshold": 0.5, "patience": 1, "check_every": 1, "probe_batches": 1,
                  "min_steps": 0},
        "online": {"coefficients": coefficients}}))
    return str(path)


def test_online_window_estimate_by_hand(tmp_path) -> None:
    est = OnlineFlips(window=2, settings=_settings(tmp_path, [0.1, 0.5, -1.0, 0.2]))
    adapter = Scripted(nn.Identity())
    adapter.since_reset = 100  # collapsed; its reset copy (the reference) is not
    x = torch.zeros(4, 3, 4, 4)
    est.on_step(1, x, torch.zeros(4, 4), adapter)  # confidence 1/4
    est.on_step(2, x, torch.tensor([[math.log(3.0), 0, 0, 0]] * 4), adapter)  # 3/6
    # reference predicts 0,1,2,3 with tied confidences (rank 2.5 each, weight 0.625);
    # 3 of 4 flip to class 0: flips = 3 * 0.625 / 4; collapse = 1 - 0 / ln 4 = 1
    conf, flips, collapse = (0.25 + 0.5) / 2, 3 * 0.625 / 4, 1.0
    [result] = est.window_results(2)
    assert result.scores == pytest.approx({"conf": conf, "flips": flips, "collapse": collapse})
    assert result.estimate == pytest.approx(0.1 + 0.5 * conf - flips + 0.2 * collapse)
    with pytest.raises(TTABenchError, match="windows of 2 steps"):
        est.window_results(3)
    assert window_estimate((2.0, 0, 0, 0), 0, 0, 0) == 1.0  # clipped


def test_settings_are_json_only_and_checked(tmp_path) -> None:
    shipped = load_settings()
    assert shipped.id == "mnist-cnn" and 0 < shipped.threshold < 1
    marker = tmp_path / "ran"
    code = tmp_path / "code.json"
    code.write_text(f"__import__('pathlib').Path({str(marker)!r}).touch()")
    with pytest.raises(TTABenchError, match="not JSON"):
        load_settings(str(code))
    assert not marker.exists()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema": "ttabench_enigma.guard/1", "guard": {}}))
    with pytest.raises(TTABenchError, match="wrong.json: guard.threshold: field required"):
        load_settings(str(wrong))
    with pytest.raises(TTABenchError, match="unknown guard settings 'nope'"):
        load_settings("nope")
    with pytest.raises(TTABenchError, match="online.coefficients: list should have at least 4"):
        load_settings(_settings(tmp_path, [1.0]))
