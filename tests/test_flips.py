"""Weighted flips against a pandas re-implementation of the reference's count_flips."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
import torch

import ttabench_enigma.flips as flips_module
from ttabench.errors import TTABenchError
from ttabench_enigma.flips import flip_curve, weighted_flips

END = 990


def reference_count_flips(df: pd.DataFrame, end: int = END, weighted: bool = True) -> float | None:
    """The reference protocol on a prediction table (Iteration, Image_Index, Top_Class, Confidence)."""
    if df[df["Iteration"] == end].empty:
        return None
    df = df[df["Iteration"].isin([0, end])]
    best = df.loc[df.groupby(["Image_Index", "Iteration"])["Confidence"].idxmax()]
    classes = best.pivot(index="Image_Index", columns="Iteration", values="Top_Class")
    flipped = (classes[0] != classes[end]).astype(int)
    if not weighted:
        return float(flipped.sum())
    conf0 = best[best["Iteration"] == 0].set_index("Image_Index")["Confidence"]
    return float((flipped * (conf0.rank() / len(conf0))).sum())


def table(
    pred0: np.ndarray, conf0: np.ndarray, pred1: np.ndarray, conf1: np.ndarray, end: int = END
) -> pd.DataFrame:
    n = len(pred0)
    return pd.DataFrame(
        {
            "Iteration": [0] * n + [end] * n,
            "Image_Index": list(range(n)) * 2,
            "Top_Class": np.concatenate([pred0, pred1]),
            "Confidence": np.concatenate([conf0, conf1]),
        }
    )


def random_case(rng: np.random.Generator, n: int, classes: int, flip_rate: float):
    pred0 = rng.integers(0, classes, n)
    flip = rng.random(n) < flip_rate
    pred1 = np.where(flip, (pred0 + rng.integers(1, classes, n)) % classes, pred0)
    conf0 = np.round(rng.random(n), 1)  # many ties
    conf1 = np.round(rng.random(n), 1)
    return pred0, conf0, pred1, conf1


@pytest.mark.parametrize("n", [1, 2, 3, 7, 50, 100, 1000])
@pytest.mark.parametrize("flip_rate", [0.0, 0.3, 1.0])
def test_matches_reference_pandas(n: int, flip_rate: float) -> None:
    rng = np.random.default_rng(n * 10 + int(flip_rate * 10))
    for _ in range(3):
        pred0, conf0, pred1, conf1 = random_case(rng, n, classes=5, flip_rate=flip_rate)
        df = table(pred0, conf0, pred1, conf1)
        for weighted in (True, False):
            expected = reference_count_flips(df, weighted=weighted)
            got = weighted_flips(pred0, conf0, pred1, weighted=weighted)
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_reference_returns_none_without_end_snapshot() -> None:
    # The reference's failure mode this project avoids: no end snapshot, no count.
    df = table(np.array([0]), np.array([0.5]), np.array([1]), np.array([0.5]))
    assert reference_count_flips(df[df["Iteration"] == 0]) is None


def test_torch_and_numpy_inputs_agree() -> None:
    rng = np.random.default_rng(1)
    pred0, conf0, pred1, _ = random_case(rng, 200, classes=10, flip_rate=0.4)
    from_numpy = weighted_flips(pred0, conf0, pred1)
    from_torch = weighted_flips(torch.from_numpy(pred0), torch.from_numpy(conf0).float(), torch.from_numpy(pred1))
    # float32 confidences keep the same order and ties as these 1-decimal values
    assert from_torch == from_numpy


def test_hand_worked_examples() -> None:
    # no flips
    assert weighted_flips([1, 2, 3], [0.2, 0.9, 0.5], [1, 2, 3]) == 0.0
    # all flip: the sum of all ranks / n = (n + 1) / 2
    assert weighted_flips([1, 2, 3], [0.2, 0.9, 0.5], [0, 0, 0]) == pytest.approx(2.0)
    # n = 1: rank 1 / 1
    assert weighted_flips([4], [0.3], [5]) == 1.0
    assert weighted_flips([4], [0.3], [4]) == 0.0
    # n = 2 tied: each has average rank 1.5, weight 0.75
    assert weighted_flips([0, 1], [0.6, 0.6], [1, 1]) == pytest.approx(0.75)
    # n = 2 untied: only the less confident image flips, weight 1 / 2
    assert weighted_flips([0, 1], [0.6, 0.7], [1, 1]) == pytest.approx(0.5)
    assert weighted_flips([0, 1], [0.6, 0.7], [1, 1], weighted=False) == 1.0


def test_range_and_unweighted_count() -> None:
    rng = np.random.default_rng(2)
    for n in (1, 2, 5, 64, 333):
        for rate in (0.0, 0.1, 0.5, 0.9, 1.0):
            pred0, conf0, pred1, _ = random_case(rng, n, classes=3, flip_rate=rate)
            wf = weighted_flips(pred0, conf0, pred1)
            assert 0.0 <= wf <= (n + 1) / 2 + 1e-9
            assert weighted_flips(pred0, conf0, pred1, weighted=False) == float(np.sum(pred0 != pred1))


def test_all_flips_reaches_maximum() -> None:
    rng = np.random.default_rng(3)
    for n in (1, 10, 1000):
        pred0 = rng.integers(0, 4, n)
        conf0 = np.round(rng.random(n), 1)
        assert weighted_flips(pred0, conf0, pred0 + 1) == pytest.approx((n + 1) / 2)


def test_invalid_inputs_raise() -> None:
    with pytest.raises(TTABenchError, match="equal lengths"):
        weighted_flips([0, 1], [0.5, 0.5], [0])
    with pytest.raises(TTABenchError, match="equal lengths"):
        weighted_flips([0, 1], [0.5], [0, 1])
    with pytest.raises(TTABenchError, match="at least one"):
        weighted_flips([], [], [])
    with pytest.raises(TTABenchError, match="NaN"):
        weighted_flips([0, 1], [0.5, float("nan")], [0, 1])
    with pytest.raises(TTABenchError, match="one-dimensional"):
        weighted_flips(np.zeros((2, 2)), [0.5, 0.5], [0, 1])


def test_flip_curve_per_checkpoint() -> None:
    rng = np.random.default_rng(4)
    pred0, conf0, _, _ = random_case(rng, 120, classes=6, flip_rate=0.0)
    preds = {k: random_case(rng, 120, classes=6, flip_rate=0.0)[0] for k in (300, 100, 200)}
    curve = flip_curve(pred0, conf0, preds)
    assert list(curve) == [100, 200, 300]
    for k, pred in preds.items():
        df = table(pred0, conf0, pred, conf0, end=k)
        assert curve[k]["wf"] == pytest.approx(reference_count_flips(df, end=k))
        assert curve[k]["u"] == reference_count_flips(df, end=k, weighted=False)


def test_monotone_transform_of_confidences_leaves_wf_unchanged() -> None:
    rng = np.random.default_rng(5)
    pred0, conf0, pred1, _ = random_case(rng, 500, classes=10, flip_rate=0.5)
    wf = weighted_flips(pred0, conf0, pred1)
    assert weighted_flips(pred0, conf0**3, pred1) == wf
    assert weighted_flips(pred0, np.log1p(conf0) * 7 - 2, pred1) == wf


def test_temperature_with_two_classes_leaves_wf_unchanged() -> None:
    logits = torch.randn(300, 2, generator=torch.Generator().manual_seed(6))
    pred0 = logits.argmax(1)
    pred1 = torch.where(torch.arange(300) % 3 == 0, 1 - pred0, pred0)
    values = {
        t: weighted_flips(pred0, torch.softmax(logits.double() / t, 1).max(1).values, pred1)
        for t in (0.5, 1.0, 3.0)
    }
    assert values[0.5] == values[1.0] == values[3.0]


def test_temperature_can_reorder_confidences_with_many_classes() -> None:
    # Image A: one top logit and 999 runners-up 1 below; image B: two classes 0.5 apart.
    # At T=1 B is more confident; at T=0.05 A is. So WF depends on temperature (the module
    # docstring says so, and the estimator uses T=1 as the paper does).
    a = torch.full((1000,), -1.0, dtype=torch.float64)
    a[0] = 0.0
    b = torch.full((1000,), -60.0, dtype=torch.float64)
    b[0], b[1] = 0.0, -0.5
    logits = torch.stack([a, b])
    pred0, pred1 = torch.tensor([0, 0]), torch.tensor([1, 0])  # only A flips

    def wf(t: float) -> float:
        return weighted_flips(pred0, torch.softmax(logits / t, 1).max(1).values, pred1)

    assert wf(1.0) == 0.5  # A is the less confident: rank 1 of 2
    assert wf(0.05) == 1.0  # A is the more confident: rank 2 of 2


def test_docstring_examples() -> None:
    result = doctest.testmod(flips_module)
    assert result.attempted >= 2 and result.failed == 0
