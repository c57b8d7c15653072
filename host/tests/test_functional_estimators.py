"""The pure estimator functions against hand-worked examples and plain slow implementations."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from ttabench.errors import TTABenchError
from ttabench.estimators import functional as fn


def _logits(n: int, k: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    return scale * torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _softmax_row(row: list[float]) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def test_doctests() -> None:
    assert doctest.testmod(fn).failed == 0


# --------------------------------------------------------------------------- AC, DoC


def test_average_confidence_matches_a_plain_loop() -> None:
    logits = _logits(37, 5, seed=0)
    expected = sum(max(_softmax_row(row)) for row in logits.tolist()) / 37
    assert fn.average_confidence(logits) == pytest.approx(expected, abs=1e-12)


def test_average_confidence_single_class_is_one() -> None:
    assert fn.average_confidence(torch.randn(6, 1)) == pytest.approx(1.0)


def test_doc_hand_worked() -> None:
    # val: 2 of 3 correct; AC_val = (0.75 + 0.75 + 0.5) / 3 = 2/3; AC_target = 0.5
    val = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])  # argmax of the tie row is class 0
    target = torch.zeros(4, 2, dtype=torch.float64)
    assert fn.doc(val, labels, target) == pytest.approx(2 / 3 - (2 / 3 - 0.5))


def test_doc_all_correct_and_all_wrong_are_clipped() -> None:
    val = torch.tensor([[5.0, 0.0], [0.0, 5.0]], dtype=torch.float64)
    confident = torch.tensor([[20.0, 0.0]], dtype=torch.float64)
    assert fn.doc(val, torch.tensor([0, 1]), confident) == 1.0
    assert fn.doc(val, torch.tensor([1, 0]), torch.zeros(1, 2)) == 0.0


# --------------------------------------------------------------------------- ATC


def _atc_slow(val_scores: list[float], val_correct: list[bool], target_scores: list[float]) -> float:
    """No ties: the threshold is the (e+1)-th smallest val score (e errors), +inf if e = n."""
    errors = val_correct.count(False)
    ordered = sorted(val_scores)
    threshold = ordered[errors] if errors < len(ordered) else math.inf
    return sum(s >= threshold for s in target_scores) / len(target_scores)


@pytest.mark.parametrize("score", ["maxconf", "negentropy"])
def test_atc_matches_slow_threshold(score: str) -> None:
    val, target = _logits(50, 4, seed=1), _logits(40, 4, seed=2, scale=1.0)
    labels = torch.randint(0, 4, (50,), generator=torch.Generator().manual_seed(3))
    labels[:20] = val[:20].argmax(dim=1)
    score_of = {
        "maxconf": lambda row: max(_softmax_row(row)),
        "negentropy": lambda row: sum(p * math.log(p) for p in _softmax_row(row)),
    }[score]
    correct = (val.argmax(dim=1) == labels).tolist()
    expected = _atc_slow(
        [score_of(r) for r in val.tolist()], correct, [score_of(r) for r in target.tolist()]
    )
    assert fn.atc(val, labels, target, score=score) == pytest.approx(expected)


def test_atc_on_val_itself_gives_val_accuracy() -> None:
    val = _logits(64, 3, seed=4)
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(5))
    accuracy = (val.argmax(dim=1) == labels).double().mean().item()
    assert fn.atc(val, labels, val, rank="paper") == pytest.approx(accuracy)


def test_matched_threshold_with_ties() -> None:
    """The paper's rank (``rank="paper"``); the authors' code's rank is tested against a port of
    their code in test_authors_code.py."""
    scores = torch.tensor([0.5, 0.5, 0.5, 0.9], dtype=torch.float64)
    # 1 error: below 0.5 -> 0, below 0.9 -> 3; 0 is closest to 1
    assert fn.matched_threshold(scores, torch.tensor([True, False, True, True]), "paper") == 0.5
    # 2 errors: 0 and 3 are 2 and 1 away -> 0.9
    assert fn.matched_threshold(scores, torch.tensor([False, False, True, True]), "paper") == 0.9
    # equidistant (counts 0 and 2 for 1 error): the smaller threshold
    two = torch.tensor([0.2, 0.2, 0.8, 0.8], dtype=torch.float64)
    assert fn.matched_threshold(two, torch.tensor([True, False, True, True]), "paper") == 0.2


def test_atc_all_correct_all_wrong_and_single_class() -> None:
    val = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.0], [1.5, 0.0], [0.0, 3.0]], dtype=torch.float64)
    # all correct: t = min val confidence = sigmoid(1); target confidences sigmoid(.5, 1.5, 3)
    assert fn.atc(val, torch.tensor([0, 1]), target, rank="paper") == pytest.approx(2 / 3)
    assert fn.atc(val, torch.tensor([1, 0]), target, rank="paper") == 0.0
    one = torch.zeros(5, 1, dtype=torch.float64)
    assert fn.atc(one, torch.zeros(5, dtype=torch.long), one, rank="paper") == 1.0
    # the authors' rank: all correct accepts everything; all wrong: t = the largest val score
    assert fn.atc(val, torch.tensor([0, 1]), target) == 1.0
    assert fn.atc(val, torch.tensor([1, 0]), target) == pytest.approx(1 / 3)  # only sigmoid(3)


def test_atc_rejects_unknown_score() -> None:
    with pytest.raises(TTABenchError, match="unknown ATC score"):
        fn.atc(torch.zeros(2, 2), torch.tensor([0, 1]), torch.zeros(2, 2), score="energy")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- COT, COTT


def _assignment_costs(logits: torch.Tensor, counts: list[int]) -> np.ndarray:
    """Exact transport for integer class counts: an N x N assignment to replicated columns."""
    cost = 1.0 - logits.softmax(dim=1).numpy()
    columns = np.repeat(np.arange(len(counts)), counts)
    rows, assigned = linear_sum_assignment(cost[:, columns])
    return cost[rows, columns[assigned]]


@pytest.mark.parametrize(
    ("n", "counts", "seed"), [(12, [4, 4, 4], 0), (12, [6, 3, 3], 1), (30, [5] * 6, 2), (9, [9], 3)]
)
def test_cot_matches_exact_assignment(n: int, counts: list[int], seed: int) -> None:
    logits = _logits(n, len(counts), seed=seed)
    marginal = torch.tensor(counts, dtype=torch.float64) / n
    expected = _assignment_costs(logits, counts)
    costs = fn.transport_costs(logits, marginal).numpy()
    assert fn.cot(logits, marginal) == pytest.approx(1.0 - expected.mean(), abs=1e-9)
    np.testing.assert_allclose(costs, expected, atol=1e-8)  # generic data: a unique optimum


def test_cot_uniform_default_and_bad_marginal() -> None:
    logits = _logits(20, 4, seed=7)
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert fn.cot(logits) == pytest.approx(fn.cot(logits, uniform))
    with pytest.raises(TTABenchError, match="source_marginal"):
        fn.cot(logits, torch.tensor([0.5, 0.5]))


def test_cott_matches_slow_implementation() -> None:
    val, target = _logits(24, 3, seed=8), _logits(18, 3, seed=9, scale=1.0)
    labels = torch.randint(0, 3, (24,), generator=torch.Generator().manual_seed(10))
    labels[:10] = val[:10].argmax(dim=1)
    val_costs = _assignment_costs(val, [8, 8, 8])
    target_costs = _assignment_costs(target, [6, 6, 6])
    errors = int((val.argmax(dim=1) != labels).sum())
    descending = sorted(val_costs.tolist(), reverse=True)
    threshold = descending[errors] if errors < len(descending) else -math.inf
    expected = 1.0 - float((target_costs > threshold).mean())
    assert fn.cott(val, labels, target, validation="marginal", rank="paper") == pytest.approx(expected)


def test_cott_all_correct_and_all_wrong() -> None:
    """The marginal transport and paper rank; the default is tested in test_authors_code.py."""
    val = _logits(12, 3, seed=11)
    predicted = val.argmax(dim=1)
    target = _logits(9, 3, seed=12)
    target_costs = _assignment_costs(target, [3, 3, 3])
    val_costs = _assignment_costs(val, [4, 4, 4])
    expected = float((target_costs <= val_costs.max() + 1e-12).mean())
    assert fn.cott(val, predicted, target, validation="marginal", rank="paper") == pytest.approx(expected)
    assert fn.cott(val, (predicted + 1) % 3, target, validation="marginal", rank="paper") == 0.0


# --------------------------------------------------------------------------- scores


def test_nuclear_norm_matches_svd() -> None:
    for n, k in [(40, 5), (3, 8)]:
        logits = _logits(n, k, seed=n)
        expected = torch.linalg.svdvals(logits.softmax(dim=1)).sum().item() / math.sqrt(n * min(n, k))
        assert fn.nuclear_norm_score(logits) == pytest.approx(expected, rel=1e-9)
    assert fn.nuclear_norm_score(torch.randn(7, 1)) == pytest.approx(1.0)
    # every sample one class with certainty: rank 1, ||P||_* = sqrt(4) = 2, / sqrt(4 * 3)
    assert fn.nuclear_norm_score(torch.tensor([[50.0, 0.0, 0.0]] * 4)) == pytest.approx(1 / math.sqrt(3))


def _mano_slow(logits: torch.Tensor) -> tuple[float, str]:
    rows = logits.tolist()
    k = len(rows[0])
    phi = sum(-sum(math.log(p) for p in _softmax_row(r)) / k for r in rows) / len(rows)
    if phi > 5:
        normalised = [_softmax_row(r) for r in rows]
        branch = "softmax"
    else:
        normalised = []
        for r in rows:
            u = [1 + q + q * q / 2 for q in r]
            shifted = [v - min(u) for v in u]
            normalised.append([v / sum(shifted) if sum(shifted) > 0 else 0.0 for v in shifted])
        branch = "taylor"
    total = sum(v**4 for r in normalised for v in r)
    return (total / (len(rows) * k)) ** 0.25, branch


@pytest.mark.parametrize(("scale", "branch"), [(1.0, "taylor"), (30.0, "softmax")])
def test_mano_matches_slow_implementation(scale: float, branch: str) -> None:
    logits = _logits(25, 10, seed=13, scale=scale)
    score, fired = fn.mano_score(logits, return_branch=True)
    expected, expected_branch = _mano_slow(logits)
    assert (fired, expected_branch) == (branch, branch)
    assert score == pytest.approx(expected, rel=1e-9)
    assert fn.mano_score(logits) == score


def test_mano_single_class_gives_zero() -> None:
    assert fn.mano_score(torch.randn(5, 1), return_branch=True) == (0.0, "taylor")


def test_mde_matches_slow_implementation() -> None:
    logits = _logits(15, 4, seed=14)
    for temperature in (1.0, 2.5):
        energies = [
            -temperature * math.log(sum(math.exp(v / temperature) for v in r)) for r in logits.tolist()
        ]
        total = sum(math.exp(e) for e in energies)
        mde = sum(math.log(math.exp(e) / total) for e in energies) / len(energies)
        assert fn.mde_score(logits, temperature) == pytest.approx(math.log(-mde), rel=1e-9)


def test_mde_needs_two_samples() -> None:
    with pytest.raises(TTABenchError, match="at least 2"):
        fn.mde_score(torch.zeros(1, 3))


def test_dispersion_matches_slow_implementation() -> None:
    features = torch.randn(30, 2, 3, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    logits = _logits(30, 4, seed=16)
    flat = features.flatten(1).tolist()
    predicted = logits.argmax(dim=1).tolist()
    mean = [sum(col) / 30 for col in zip(*flat)]
    total = 0.0
    for k in set(predicted):
        members = [f for f, p in zip(flat, predicted) if p == k]
        centre = [sum(col) / len(members) for col in zip(*members)]
        total += len(members) / 30 * sum((c - m) ** 2 for c, m in zip(centre, mean))
    assert fn.dispersion_score(features, logits, "samples") == pytest.approx(math.log(total), rel=1e-9)
    used = len(set(predicted))
    assert fn.dispersion_score(features, logits) == pytest.approx(math.log(total * 30 / (used - 1)),
                                                                  rel=1e-9)


def test_dispersion_single_predicted_class_raises() -> None:
    with pytest.raises(TTABenchError, match="one class"):
        fn.dispersion_score(torch.randn(5, 3), torch.tensor([[1.0, 0.0]] * 5))


# --------------------------------------------------------------------------- temperature


def _calibrated() -> tuple[torch.Tensor, torch.Tensor]:
    """p = (3/4, 1/4) with 3 of 4 labels 0, p = (1/5, 4/5) with 4 of 5 labels 1: NLL optimum T = 1."""
    logits = torch.tensor(
        [[math.log(3.0), 0.0]] * 4 + [[0.0, math.log(4.0)]] * 5, dtype=torch.float64
    )
    return logits, torch.tensor([0, 0, 0, 1, 1, 1, 1, 1, 0])


def test_fit_temperature_known_optima() -> None:
    logits, labels = _calibrated()
    assert fn.fit_temperature(logits, labels) == pytest.approx(1.0, abs=1e-6)
    assert fn.fit_temperature(2.0 * logits, labels) == pytest.approx(2.0, abs=1e-6)
    assert fn.fit_temperature(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long)) == 1.0


def test_fit_temperature_minimises_nll_on_a_grid() -> None:
    logits = _logits(80, 5, seed=17, scale=4.0)
    labels = torch.randint(0, 5, (80,), generator=torch.Generator().manual_seed(18))
    labels[:40] = logits[:40].argmax(dim=1)
    fitted = fn.fit_temperature(logits, labels)
    nll = lambda t: torch.nn.functional.cross_entropy(logits / t, labels).item()  # noqa: E731
    assert all(nll(fitted) <= nll(t) + 1e-12 for t in np.linspace(0.1, 20.0, 400))


def test_fit_temperature_all_correct_goes_to_the_cold_end() -> None:
    # the NLL falls monotonically as T -> 0 (down to float underflow), so T ends far below 1
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    fitted = fn.fit_temperature(logits, torch.tensor([0, 1]))
    assert 1.0 / fn.TEMPERATURE_BOUND <= fitted < 0.1


# --------------------------------------------------------------------------- AETTA, validation


def test_aetta_batch_error_hand_worked() -> None:
    drop = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [0.0, 2.0]]], dtype=torch.float64)
    s, b = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(2.0))  # softmax of (2, 0)
    mean = [(s + b + b + b) / 4, (b + s + s + s) / 4]
    entropy = -sum(p * math.log(p + 1e-6) for p in mean)  # the authors' code's entropy
    expected = 0.25 / (entropy / math.log(2)) ** 3
    assert fn.aetta_batch_error(torch.tensor([0, 1]), drop) == pytest.approx(expected)
    # full disagreement is clipped to 1 - 1/K
    assert fn.aetta_batch_error(torch.tensor([1, 0]), drop[:1]) == 0.5
    # full agreement, and a single class, give 0
    assert fn.aetta_batch_error(torch.tensor([0, 1]), drop[:1]) == 0.0
    assert fn.aetta_batch_error(torch.tensor([0, 0]), torch.zeros(3, 2, 1)) == 0.0


@pytest.mark.parametrize(
    "bad", [torch.zeros(3), torch.zeros(0, 2), torch.tensor([[0.0, math.nan]])], ids=str
)
def test_bad_logits_raise(bad: torch.Tensor) -> None:
    with pytest.raises(TTABenchError, match="logits"):
        fn.average_confidence(bad)


def test_mismatched_val_raises() -> None:
    with pytest.raises(TTABenchError, match="val_labels"):
        fn.doc(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), torch.zeros(1, 2))
    with pytest.raises(TTABenchError, match="classes"):
        fn.atc(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(1, 3))
