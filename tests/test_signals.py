"""Trajectory signals: each against a plain per-image loop, a hand-worked case, the kit."""

from __future__ import annotations

import math

import pytest
import torch

from ttabench.api import TrajectoryContext
from ttabench.errors import TTABenchError
from ttabench.testing import check_estimator
from ttabench_enigma.signals import (
    TrajectorySignals,
    TrajectorySignalsSource,
    signal_names,
    trajectory_signals,
)


def _slow_signals(snaps: dict[int, list[list[float]]], source: list[list[float]]) -> dict:
    """The module docstring's formulas, image by image in plain Python."""
    steps = sorted(snaps)
    last = steps[-1]
    z0 = snaps[0]
    n, k = len(z0), len(z0[0])

    def softmax(row):
        m = max(row)
        e = [math.exp(v - m) for v in row]
        return [v / sum(e) for v in e]

    def argmax(row):
        return max(range(len(row)), key=lambda j: row[j])

    q0 = [softmax(r) for r in z0]
    p0 = [argmax(r) for r in z0]
    margin = [1 - (sorted(q, reverse=True)[0] - sorted(q, reverse=True)[1]) for q in q0]
    ent = [-sum(v * math.log(v) for v in q) / math.log(k) for q in q0]
    agree = sum(argmax(s) == p for s, p in zip(source, p0)) / n
    out, curve = {}, {0: 0.0}
    for t in steps[1:]:
        flip = [argmax(r) != p for r, p in zip(snaps[t], p0)]
        rate = sum(flip) / n
        curve[t] = rate
        classes = sorted(set(p0))
        rates = [sum(f for f, p in zip(flip, p0) if p == c) / p0.count(c) for c in classes]
        cos = []
        for a, b in zip(z0, snaps[t]):
            dot = sum(x * y for x, y in zip(a, b))
            cos.append(1 - dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)))
        dist = [math.dist(a, b) for a, b in zip(z0, snaps[t])]
        norm = [math.hypot(*a) for a in z0]
        out.update({
            f"flips@{t}": rate,
            f"mflips@{t}": sum(w * f for w, f in zip(margin, flip)) / sum(margin),
            f"eflips@{t}": sum(w * f for w, f in zip(ent, flip)) / sum(ent),
            f"cflips@{t}": sum(rates) / len(rates),
            f"cmax@{t}": max(rates),
            f"cos@{t}": sum(cos) / n,
            f"l2@{t}": (sum(dist) / n) / (sum(norm) / n),
            f"fa@{t}": (1 - rate) * agree,
            f"ca@{t}": (1 - sum(cos) / n) * agree,
        })
    firsts, backs = [], 0
    for i in range(n):
        flipped_at = [t for t in steps[1:] if argmax(snaps[t][i]) != p0[i]]
        firsts.append((flipped_at[0] if flipped_at else last) / last)
        backs += bool(flipped_at) and argmax(snaps[last][i]) == p0[i]
    area = sum((curve[b] + curve[a]) / 2 * (b - a) for a, b in zip(steps, steps[1:]))
    out.update({"auc": area / last, "first_flip": sum(firsts) / n, "flip_backs": backs / n,
                "agree": agree, "conf0": sum(max(q) for q in q0) / n})
    return out


def test_every_signal_matches_the_slow_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(40, 4, generator=gen) * 2
    snaps = {0: z0}
    for step in (5, 10, 20):
        snaps[step] = z0 + 0.6 * step ** 0.5 * torch.randn(40, 4, generator=gen)
    source = z0 + 1.5 * torch.randn(40, 4, generator=gen)
    fast = trajectory_signals(snaps, source)
    slow = _slow_signals({k: v.tolist() for k, v in snaps.items()}, source.tolist())
    assert set(fast) == set(slow) == set(signal_names(snaps))
    for name, value in slow.items():
        assert fast[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert 0 < fast["flip_backs"] < fast["flips@20"] + fast["flip_backs"] <= 1


def test_hand_worked_trajectory() -> None:
    # 4 images, 2 classes, p0 = 0, 0, 1, 1. Step 2 predicts 1, 1, 1, 1 (images 0 and 1
    # flip); step 4 predicts 1, 0, 0, 1 (image 0 still flipped, image 1 back, image 2 flips).
    z0 = torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    s2 = torch.tensor([[0.0, 2.0], [0.0, 1.0], [0.0, 1.0], [0.0, 2.0]])
    s4 = torch.tensor([[0.0, 2.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    source = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    sig = trajectory_signals({0: z0, 2: s2, 4: s4}, source)
    assert sig["flips@2"] == 0.5 and sig["flips@4"] == 0.5
    assert sig["auc"] == pytest.approx(((0 + 0.5) / 2 * 2 + (0.5 + 0.5) / 2 * 2) / 4)
    assert sig["first_flip"] == pytest.approx((2 + 2 + 4 + 4) / 4 / 4)
    assert sig["flip_backs"] == 0.25
    assert sig["agree"] == 0.75 and sig["fa@4"] == pytest.approx(0.5 * 0.75)
    assert sig["cflips@2"] == pytest.approx((1.0 + 0.0) / 2) and sig["cmax@4"] == 0.5


def _context(source: torch.Tensor) -> TrajectoryContext:
    return TrajectoryContext(num_classes=source.shape[1], steps_run=10, probe_size=len(source),
                             probe_source_logits=source, dataset_size=len(source))


def test_estimators_report_the_chosen_signal() -> None:
    gen = torch.Generator().manual_seed(3)
    z0 = torch.randn(30, 5, generator=gen)
    later = z0 + torch.randn(30, 5, generator=gen)
    for cls, default in ((TrajectorySignals, "flips@10"), (TrajectorySignalsSource, "fa@10")):
        for signal in (None, "cos@10", "auc"):
            est = cls(probe_size=30, checkpoints=(0, 10), signal=signal)
            est.on_snapshot(0, z0)
            est.on_snapshot(10, later)
            result = est.compute(_context(z0))
            expected = trajectory_signals({0: z0, 10: later}, z0)
            assert result.value == expected[signal or default]
            assert result.scores == expected


def test_conformance_kit() -> None:
    check_estimator(TrajectorySignals)
    check_estimator(TrajectorySignalsSource, checkpoints=[0, 5, 10], signal="ca@5")


@pytest.mark.parametrize("params", [{"signal": "flips@7"}, {"checkpoints": [0]},
                                    {"probe_size": 0}, {"checkpoints": "0,5"}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(TTABenchError):
        TrajectorySignals(**params)


def test_missing_snapshot_is_refused() -> None:
    est = TrajectorySignals(probe_size=4, checkpoints=(0, 10))
    est.on_snapshot(0, torch.zeros(4, 3))
    with pytest.raises(TTABenchError, match="no probe snapshot"):
        est.compute(_context(torch.zeros(4, 3)))
