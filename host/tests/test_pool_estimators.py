"""The multi-model estimators (GDE, ALine-S/D, TTALine) and GdScore: hand-worked cases, the
conformance kit, refusals. Their agreement with the authors' code: test_pool_authors_code.py."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ttabench.api import EstimateResult, Outputs, Peers
from ttabench.errors import TTABenchError
from ttabench.estimators import agreement_line, gradient_score
from ttabench.estimators.agreement_line import aline
from ttabench.estimators.gradient_score import classifier_gradient, gdscore, pseudo_labels
from ttabench.estimators.pool import GDE, ALineD, ALineS, TTALine
from ttabench.estimators.scores import GdScore
from ttabench.testing import check_estimator, run_all


def test_doctests() -> None:
    assert doctest.testmod(agreement_line).failed == 0
    assert doctest.testmod(gradient_score).failed == 0


@pytest.mark.parametrize("cls", [GDE, ALineS, ALineD, TTALine, GdScore])
def test_conformance_kit(cls: type) -> None:
    check_estimator(cls)


class _Lax(GDE):
    """Declares two peers at least but estimates with one without a word."""

    name = "lax"
    min_peers = 2

    def estimate(self, target: Outputs, source_val: Outputs | None, peers: Peers) -> EstimateResult:
        return EstimateResult(value=0.5, estimate=0.5)


def test_the_kit_catches_a_pool_estimator_that_ignores_too_few_peers() -> None:
    failed = [name for name, ok, _ in run_all("estimators", _Lax) if not ok]
    assert failed == ["too few peers"]


# --------------------------------------------------------------------------- ALine


def _agreeing(base: np.ndarray, flips: int, k: int = 4) -> torch.Tensor:
    """``base`` with its first ``flips`` predictions moved to the next class."""
    out = base.copy()
    out[:flips] = (out[:flips] + 1) % k
    return torch.from_numpy(out)


def test_aline_recovers_a_line_built_into_the_pool() -> None:
    """Three models: pairs (0,1), (0,2), (1,2) with ID agreements 0.9, 0.8, 0.7 and OOD
    agreements chosen on the line ``y = 0.5 x - 0.2`` in probit units (rounded to whole
    samples, so the fit is checked against the fit of the rounded values)."""
    n = 10_000
    base = np.zeros(n, dtype=np.int64)
    # ID: model 1 flips rows [0, 1000), model 2 rows [1000, 3000): agreements .9, .8, .7
    id_preds = [torch.from_numpy(base), torch.from_numpy(base.copy()), torch.from_numpy(base.copy())]
    id_preds[1][:1000] = 1
    id_preds[2][1000:3000] = 1
    x = norm.ppf([0.9, 0.8, 0.7])
    y = norm.cdf(0.5 * x - 0.2)  # wanted OOD agreements of (0,1), (0,2), (1,2)
    # OOD: model 1 differs on a rows, model 2 on b rows, overlapping on c: agreements
    # 1 - a, 1 - b, 1 - (a + b - 2c)
    a, b = round((1 - y[0]) * n), round((1 - y[1]) * n)
    c = round((a + b - (1 - y[2]) * n) / 2)
    ood = [np.zeros(n, dtype=np.int64) for _ in range(3)]
    ood[1][:a] = 1
    ood[2][a - c:a - c + b] = 1
    got = aline(id_preds, [0.9, 0.8, 0.7], [torch.from_numpy(o) for o in ood])
    kept_y = norm.ppf([1 - a / n, 1 - b / n, 1 - (a + b - 2 * c) / n])
    slope, bias = np.polyfit(x, kept_y, 1)
    assert got.slope == pytest.approx(slope, abs=1e-9) and got.bias == pytest.approx(bias, abs=1e-9)
    assert got.slope == pytest.approx(0.5, abs=2e-3) and got.bias == pytest.approx(-0.2, abs=2e-3)
    # ALine-S applies the line to each ID accuracy
    assert got.aline_s == pytest.approx(list(norm.cdf(slope * norm.ppf([0.9, 0.8, 0.7]) + bias)))
    # ALine-D: three equations, three unknowns, solved exactly
    accs = norm.ppf([0.9, 0.8, 0.7])
    rows = np.array([[0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    targets = kept_y + slope * (rows @ accs - x)
    assert got.aline_d == pytest.approx(list(norm.cdf(np.linalg.solve(rows, targets))), abs=1e-9)


def test_aline_d_says_nothing_of_a_model_in_no_kept_pair() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, 500)
    lonely = (base + 2) % 4
    lonely[:10] = base[:10]  # agreement 10 / 500 = 0.02 < 0.05 with models 0..2: no kept pair
    ids = [_agreeing(base, f) for f in (0, 60, 150)] + [torch.from_numpy(lonely)]
    oods = [_agreeing(base, f) for f in (0, 100, 200)] + [torch.from_numpy(lonely)]
    got = aline(ids, [0.9, 0.85, 0.8, 0.5], oods)
    assert all(3 not in pair for pair in got.pairs) and got.aline_d[3] is None
    assert all(v is not None for v in got.aline_d[:3]) and len(got.pairs) == 3
    labels = torch.from_numpy(base.copy())
    labels[100:130] = (labels[100:130] + 1) % 4  # every ID accuracy strictly inside (0, 1)

    def logits(preds: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(preds, 4).double()

    peers = Peers(("0", "1", "2"), tuple(Outputs(logits(o)) for o in oods[:3]),
                  tuple(Outputs(logits(i), labels=labels) for i in ids[:3]))
    with pytest.raises(TTABenchError, match="no equation"):
        ALineD().estimate(Outputs(logits(oods[3])), Outputs(logits(ids[3]), labels=labels), peers)
    assert 0 < ALineS().estimate(Outputs(logits(oods[3])), Outputs(logits(ids[3]), labels=labels),
                                 peers).value < 1  # ALine-S needs only the line


def test_aline_refusals() -> None:
    base = np.arange(200) % 4
    preds = [_agreeing(base, f) for f in (0, 20, 40)]
    with pytest.raises(TTABenchError, match="at least 2 models"):
        aline(preds[:1], [0.9], preds[:1])
    with pytest.raises(TTABenchError, match="strictly between 0 and 1"):
        aline(preds, [1.0, 0.9, 0.8], preds)
    with pytest.raises(TTABenchError, match="two pairs"):
        aline(preds, [0.9, 0.9, 0.8], preds, low=0.9, high=0.95)  # one pair in [0.9, 0.95]
    with pytest.raises(TTABenchError, match="of one length"):
        aline(preds, [0.9, 0.9, 0.8], [preds[0], preds[1], preds[2][:-1]])
    with pytest.raises(TTABenchError, match="low < high"):
        ALineS(low=0.9, high=0.5)
    with pytest.raises(TTABenchError, match="method"):
        TTALine(method="x")


def test_aline_needs_every_models_labelled_source_val() -> None:
    logits = torch.eye(3).repeat(10, 1).double()
    peers = Peers(("a", "b"), (Outputs(logits), Outputs(logits)), (None, None))
    with pytest.raises(TTABenchError, match="labelled source-validation"):
        ALineS().estimate(Outputs(logits), Outputs(logits, labels=torch.zeros(30).long()), peers)


def test_ttaline_is_aline_on_the_adapted_view_only() -> None:
    assert TTALine.views == ("adapted",) and ALineD.views == ("source", "bn", "adapted")
    assert TTALine().params() == {"low": 0.05, "high": 0.98, "method": "d"}
    assert TTALine(method="s").method == "s" and ALineS.method == "s" and ALineD.method == "d"


# --------------------------------------------------------------------------- GDE


def test_gde_hand_worked_and_refusals() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # agrees on 2 of 4
    peers = Peers(("a", "b"), (Outputs(a), Outputs(b)), (None, None))
    assert GDE().estimate(Outputs(a), None, peers).value == pytest.approx((1.0 + 0.5) / 2)
    assert GDE(peer="b").estimate(Outputs(a), None, peers).value == pytest.approx(0.5)
    assert GDE(peer="b").params() == {"peer": "b"} and GDE().params() == {"peer": "all"}
    with pytest.raises(TTABenchError, match="not in the pool"):
        GDE(peer="c").estimate(Outputs(a), None, peers)
    with pytest.raises(TTABenchError, match="at least 1 other model"):
        GDE().estimate(Outputs(a), None, Peers((), (), ()))
    with pytest.raises(TTABenchError, match="differ in shape"):
        GDE().estimate(Outputs(a[:3]), None, peers)
    with pytest.raises(TTABenchError, match="ids"):
        Peers(("a",), (), ())


# --------------------------------------------------------------------------- GdScore


def test_classifier_gradient_equals_autograd_of_a_linear_layer() -> None:
    g = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(6, 4).double()
    features = torch.randn(9, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 4, (9,), generator=g)
    logits = layer(features)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert torch.allclose(classifier_gradient(features, logits.detach(), labels), layer.weight.grad)


def test_pseudo_labels_redraw_only_the_unconfident_rows() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.1, 0.0, 0.0]])
    drawn = torch.randint(0, 3, (2,), generator=torch.Generator().manual_seed(3))
    got = pseudo_labels(logits, 0.5, torch.Generator().manual_seed(3))
    assert got.tolist() == [0, drawn[0].item(), 1, drawn[1].item()]


def test_gdscore_hand_worked_one_batch() -> None:
    # one confident row: p = (e^2, 1) / (e^2 + 1), pseudo-label 0, h = (1, 2)
    logits, features = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 2.0]])
    p0 = float(np.exp(2) / (np.exp(2) + 1))
    grad = np.array([[p0 - 1, 2 * (p0 - 1)], [1 - p0, 2 * (1 - p0)]])
    expected = np.sum(np.abs(grad) ** 0.3) ** (1 / 0.3)
    assert gdscore(features, logits) == pytest.approx(expected, rel=1e-12)
    # two batches of one row each: the mean of the two batch norms
    two = gdscore(torch.cat([features, 2 * features]), torch.cat([logits, logits]), batch_size=1)
    assert two == pytest.approx((expected + 2 * expected) / 2, rel=1e-12)


def test_gdscore_refusals() -> None:
    with pytest.raises(TTABenchError, match="penultimate features"):
        GdScore().estimate(Outputs(torch.zeros(3, 2)), None)
    with pytest.raises(TTABenchError, match="norm"):
        GdScore(norm=0.0)
    with pytest.raises(TTABenchError, match="rows"):
        gdscore(torch.zeros(3, 4), torch.zeros(2, 2))
    with pytest.raises(TTABenchError, match="NaN"):
        gdscore(torch.zeros(2, 4), torch.tensor([[float("nan"), 0.0], [0.0, 0.0]]))
    assert GdScore(seed=3).params() == {"threshold": 0.5, "norm": 0.3, "batch_size": 128, "seed": 3}
