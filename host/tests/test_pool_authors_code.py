"""The estimators of issue 28 against computations that follow their authors' public code.

Each reference below re-states, in NumPy/PyTorch, what the authors' code computes (read from
kebaek/Agreement-on-the-line ``agreement_trajectory.ipynb``, functions ``rescale``,
``compute_linear_fit`` and ``aline``; Renchunzi-Xie/GdScore ``algs/gdscore.py``,
``GdScore.evaluate``, with the defaults of ``bash/gdscore.sh``); GDE is the disagreement rate of
Jiang et al. (ICLR 2022), whose code is not public, re-stated from the paper's definition. The
project's estimators must agree with them to float tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from ttabench.api import Outputs, Peers
from ttabench.estimators.agreement_line import aline
from ttabench.estimators.gradient_score import gdscore
from ttabench.estimators.pool import GDE, ALineD, ALineS
from ttabench.estimators.scores import GdScore


# --------------------------------------------------------------------------- fixtures


def _pool_predictions(seed: int, n: int = 400,
                      k: int = 10) -> tuple[list, list, list, list, np.ndarray]:
    """Seven models' ID and OOD predictions, their ID and OOD accuracies, the ID labels.

    Model m is right with probability ``acc_m`` (ID) or ``ood_m`` (OOD), else predicts a
    random wrong class; models 5 and 6 share most predictions (an agreement above 0.98, which
    the filter removes)."""
    rng = np.random.default_rng(seed)
    id_acc = [0.95, 0.9, 0.85, 0.8, 0.7, 0.88, 0.88]
    ood_acc = [0.7, 0.6, 0.5, 0.45, 0.3, 0.55, 0.55]
    id_labels, ood_labels = rng.integers(0, k, n), rng.integers(0, k, n)

    def predict(labels: np.ndarray, acc: float) -> np.ndarray:
        wrong = (labels + rng.integers(1, k, labels.size)) % k
        return np.where(rng.random(labels.size) < acc, labels, wrong)

    id_preds = [predict(id_labels, a) for a in id_acc]
    ood_preds = [predict(ood_labels, a) for a in ood_acc]
    for preds in (id_preds, ood_preds):
        preds[6] = preds[5].copy()
        preds[6][:5] = (preds[6][:5] + 1) % k  # agreement 1 - 5 / n = 0.9875 > 0.98
    accs = [float(np.mean(p == id_labels)) for p in id_preds]
    oods = [float(np.mean(p == ood_labels)) for p in ood_preds]
    return id_preds, accs, ood_preds, oods, id_labels


def aline_reference(test_preds: list[np.ndarray], test_accuracy: list[float],
                    shift_preds: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``aline`` of agreement_trajectory.ipynb: pairs ``i <= j`` (self-pairs included, then
    filtered), row ``a`` with 0.5 at i and j, targets the mean probit ID accuracy; keep
    ``0.05 <= agreement <= 0.98`` on ID then OOD (four successive filters); probit the
    agreements; ``compute_linear_fit`` (statsmodels OLS of OOD on ID with a constant, re-stated
    as least squares on ``[1, x]``); ``b = shift + slope * (accs - test)``;
    ``w = lstsq(A, b)``; ``pred_s = slope * probit(acc) + bias`` (probit units),
    ``pred_d = Phi(w)``."""
    test_accuracy = norm.ppf(np.asarray(test_accuracy))
    rows, test_agrs, shift_agrs, test_accs = [], [], [], []
    n = len(test_preds)
    for i in range(n):
        for j in range(i, n):
            a = np.zeros(n)
            a[i] = 0.5
            a[j] = 0.5
            rows.append(a)
            test_agrs.append(np.mean(test_preds[i] == test_preds[j]))
            shift_agrs.append(np.mean(shift_preds[i] == shift_preds[j]))
            test_accs.append(0.5 * test_accuracy[i] + 0.5 * test_accuracy[j])
    A, t, s, acc = (np.array(v) for v in (rows, test_agrs, shift_agrs, test_accs))
    for keep in ("t_high", "t_low", "s_high", "s_low"):
        mask = {"t_high": t <= 0.98, "t_low": t >= 0.05, "s_high": s <= 0.98, "s_low": s >= 0.05}[keep]
        A, t, s, acc = A[mask], t[mask], s[mask], acc[mask]
    t, s = norm.ppf(t), norm.ppf(s)
    (bias, slope) = np.linalg.lstsq(np.column_stack([np.ones_like(t), t]), s, rcond=None)[0]
    b = s + slope * (acc - t)
    w = np.linalg.lstsq(A, b, rcond=None)[0]
    return slope * test_accuracy + bias, norm.cdf(w), float(slope), float(bias)


# --------------------------------------------------------------------------- ALine


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aline_matches_the_authors_notebook(seed: int) -> None:
    id_preds, accs, ood_preds, _, _ = _pool_predictions(seed)
    pred_s, pred_d, slope, bias = aline_reference(id_preds, accs, ood_preds)
    got = aline([torch.from_numpy(p) for p in id_preds], accs,
                [torch.from_numpy(p) for p in ood_preds])
    assert (5, 6) not in got.pairs and len(got.pairs) == 20  # 21 pairs, the near-copy removed
    assert got.slope == pytest.approx(slope, abs=1e-10) and got.bias == pytest.approx(bias, abs=1e-10)
    assert got.aline_d == pytest.approx(list(pred_d), abs=1e-10)
    assert got.aline_s == pytest.approx(list(norm.cdf(pred_s)), abs=1e-10)  # the paper's Phi


def _one_hot(preds: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.from_numpy(preds), 10).double()


@pytest.mark.parametrize("m", [0, 4])
def test_aline_estimators_match_the_notebook_for_any_model_of_the_pool(m: int) -> None:
    id_preds, accs, ood_preds, _, id_labels = _pool_predictions(3)
    pred_s, pred_d, _, _ = aline_reference(id_preds, accs, ood_preds)
    vals = [Outputs(_one_hot(p), labels=torch.from_numpy(id_labels)) for p in id_preds]
    others = [i for i in range(7) if i != m]  # the estimated model comes first in the fit
    peers = Peers(tuple(f"model-{i}" for i in others),
                  tuple(Outputs(_one_hot(ood_preds[i])) for i in others),
                  tuple(vals[i] for i in others))
    target = Outputs(_one_hot(ood_preds[m]))
    s = ALineS().estimate(target, vals[m], peers)
    d = ALineD().estimate(target, vals[m], peers)
    assert s.value == pytest.approx(norm.cdf(pred_s[m]), abs=1e-10)
    assert d.value == pytest.approx(pred_d[m], abs=1e-10)
    assert s.extras["pairs"] == d.extras["pairs"] == 20


def test_aline_and_gde_on_a_pool_worked_by_hand() -> None:
    """Three models, four ID and four OOD samples, every number worked out by hand.

    ID predictions m0 = 0000, m1 = 0011, m2 = 0111, labels 0021: ID accuracies 1/2, 3/4, 1/2,
    so with ``c = Phi^-1(3/4)`` their probits are ``a = (0, c, 0)``. ID agreements of the pairs
    (0,1), (0,2), (1,2): 1/2, 1/4, 3/4, probits ``x = (0, -c, c)``. OOD predictions 0000, 0111,
    0122: agreements 1/4, 1/4, 1/2, probits ``y = (-c, -c, 0)``. Least squares of y on x:
    ``slope = sum(x (y - mean y)) / sum(x^2) = c^2 / (2 c^2) = 1/2``, ``bias = mean y = -2c/3``.
    ALine-S: ``Phi(a_m / 2 - 2c/3)`` = Phi(-2c/3), Phi(-c/6), Phi(-2c/3). ALine-D: one equation
    per pair, ``(w_i + w_j) / 2 = y_ij + (1/2) ((a_i + a_j) / 2 - x_ij)``: w0 + w1 = -3c/2,
    w0 + w2 = -c, w1 + w2 = -c/2, so ``w = (-c, -c/2, 0)`` and ALine-D = (1/4, Phi(-c/2), 1/2).
    GDE of m0 on OOD: agreements 1/4 with m1 and with m2, mean 1/4."""
    c = norm.ppf(0.75)
    id_preds = [np.array(p) for p in ([0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 1, 1])]
    ood_preds = [np.array(p) for p in ([0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 2, 2])]
    labels = np.array([0, 0, 2, 1])
    accs = [float(np.mean(p == labels)) for p in id_preds]
    assert accs == [0.5, 0.75, 0.5]
    aline_s = [norm.cdf(-2 * c / 3), norm.cdf(-c / 6), norm.cdf(-2 * c / 3)]
    aline_d = [0.25, norm.cdf(-c / 2), 0.5]

    got = aline([torch.from_numpy(p) for p in id_preds], accs,
                [torch.from_numpy(p) for p in ood_preds])
    assert got.pairs == ((0, 1), (0, 2), (1, 2))
    assert got.slope == pytest.approx(0.5, abs=1e-12)
    assert got.bias == pytest.approx(-2 * c / 3, abs=1e-12)
    assert got.aline_s == pytest.approx(aline_s, abs=1e-12)
    assert got.aline_d == pytest.approx(aline_d, abs=1e-12)
    pred_s, pred_d, slope, bias = aline_reference(id_preds, accs, ood_preds)  # the notebook
    assert (slope, bias) == pytest.approx((0.5, -2 * c / 3), abs=1e-12)
    assert list(norm.cdf(pred_s)) == pytest.approx(aline_s, abs=1e-12)
    assert list(pred_d) == pytest.approx(aline_d, abs=1e-12)

    vals = [Outputs(_one_hot(p), labels=torch.from_numpy(labels)) for p in id_preds]
    ood = [Outputs(_one_hot(p)) for p in ood_preds]
    peers = Peers(("m1", "m2"), (ood[1], ood[2]), (vals[1], vals[2]))
    assert ALineS().estimate(ood[0], vals[0], peers).value == pytest.approx(aline_s[0], abs=1e-12)
    assert ALineD().estimate(ood[0], vals[0], peers).value == pytest.approx(0.25, abs=1e-12)
    assert GDE().estimate(ood[0], None, peers).value == pytest.approx(0.25, abs=1e-12)
    assert GDE(peer="m2").estimate(ood[1], None, Peers(("m0", "m2"), (ood[0], ood[2]),
                                                       (None, None))).value == 0.5


# --------------------------------------------------------------------------- GDE


def disagreement_rate(a: np.ndarray, b: np.ndarray) -> float:
    """Jiang et al.'s disagreement rate ``E_x [h(x) != h'(x)]`` of two models' predictions."""
    return float(np.mean(a != b))


def test_gde_is_one_minus_the_disagreement_rate() -> None:
    _, _, ood_preds, _, _ = _pool_predictions(4)
    logits = [_one_hot(p) for p in ood_preds]
    peers = Peers(("a", "b", "c"), tuple(Outputs(x) for x in logits[1:4]), (None, None, None))
    pair = GDE(peer="b").estimate(Outputs(logits[0]), None, peers)
    assert pair.value == pytest.approx(1 - disagreement_rate(ood_preds[0], ood_preds[2]), abs=1e-12)
    every = GDE().estimate(Outputs(logits[0]), None, peers)
    expected = np.mean([1 - disagreement_rate(ood_preds[0], ood_preds[i]) for i in (1, 2, 3)])
    assert every.value == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- GdScore


class _Net(nn.Module):
    """A small BatchNorm network whose last layer is ``fc``, as the authors' models."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def gdscore_reference(model: _Net, batches: list[torch.Tensor], threshold: float, norm_type: float,
                      num_classes: int, seed: int) -> tuple[float, list[torch.Tensor], list[torch.Tensor]]:
    """``GdScore.evaluate``: train mode; per batch the softmax pseudo-labels, those under the
    threshold redrawn with ``torch.LongTensor(n).random_(0, num_classes)``; SGD's
    ``zero_grad``, mean cross-entropy ``backward``; ``torch.norm(fc.weight.grad, p)``; the mean
    over batches. Also returns each batch's fc inputs and logits (a forward hook)."""
    torch.manual_seed(seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=0.0)
    criterion = nn.CrossEntropyLoss()
    scores, features, logits = [], [], []
    hook = model.fc.register_forward_hook(lambda _m, inp, _o: features.append(inp[0].detach()))
    for inputs in batches:
        outputs = model(inputs)
        logits.append(outputs.detach())
        with torch.no_grad():
            p, pseudo = nn.functional.softmax(outputs, dim=1).max(1)
            pseudo = pseudo.detach()
            pseudo[p < threshold] = torch.LongTensor(pseudo[p < threshold].shape[0]).random_(0, num_classes)
        optimizer.zero_grad()
        criterion(outputs, pseudo).backward()
        scores.append(torch.norm(model.fc.weight.grad, p=norm_type))
    hook.remove()
    return float(torch.Tensor(scores).numpy().mean()), features, logits


@pytest.mark.parametrize("scale", [5.0, 20.0])  # mostly redrawn / mostly confident pseudo-labels
def test_gdscore_matches_the_authors_backward_pass(scale: float) -> None:
    torch.manual_seed(0)
    model = _Net().double()
    with torch.no_grad():
        model.fc.weight.mul_(scale)
    x = torch.rand(300, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batches = list(x.split(128))  # 128, 128, 44 as the authors' loader (no drop_last)
    expected, features, logits = gdscore_reference(model, batches, 0.5, 0.3, 5, seed=7)
    f, q = torch.cat(features), torch.cat(logits)
    low = (q.softmax(1).max(1).values < 0.5).double().mean().item()
    assert 0.0 < low < 1.0  # both kinds of pseudo-label occur
    assert gdscore(f, q, threshold=0.5, norm=0.3, batch_size=128, seed=7) == pytest.approx(
        expected, rel=1e-5)  # the reference collects the norms in float32
    estimator = GdScore(seed=7)
    assert estimator.estimate(Outputs(q, features=f), None).value == pytest.approx(expected, rel=1e-5)
    assert gdscore(f, q, seed=8) != pytest.approx(expected, rel=1e-5)  # the draws matter
