"""Item-6 baselines against computations that follow their authors' public code.

Each reference below re-states, in NumPy/POT, what the authors' code computes (read from
saurabhgarg1996/ATC_code ``ATC_helper.py``, luyuzhe111/COT ``utils.py`` and
``run_estimation.py``, Renchunzi-Xie/MaNo ``algs/mano.py`` and ``main.py``,
Renchunzi-Xie/Dispersion ``common/distance.py``, taeckyung/AETTA ``learner/dnn.py``); the
project's estimators must agree with them to float tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch

from ttabench.adapters import SourceAdapter
from ttabench.api import Outputs
from ttabench.estimators import aetta as aetta_module
from ttabench.estimators import functional as fn
from ttabench.estimators.aetta import AETTA
from ttabench.estimators.classic import ATCMaxConf, ATCNegEntropy, COTT
from ttabench.estimators.scores import Dispersion, MaNo


def _logits(n: int, k: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    return scale * torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _labels(logits: torch.Tensor, seed: int, keep: float = 0.7) -> torch.Tensor:
    """Labels that agree with the predictions on about ``keep`` of the rows."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, logits.shape[1], (logits.shape[0],), generator=g)
    agree = torch.rand(logits.shape[0], generator=g) < keep
    return torch.where(agree, logits.argmax(1), labels)


# --------------------------------------------------------------------------- ATC


def atc_reference(val_scores: np.ndarray, val_correct: np.ndarray, scores: np.ndarray) -> float:
    """ATC_code: ``find_ATC_threshold`` (a loop over sorted val scores balancing false
    positives and negatives) and ``get_ATC_acc`` (``mean(scores >= thres)``)."""
    order = np.argsort(val_scores)
    sorted_scores, sorted_labels = val_scores[order], val_correct[order]
    fp, fn_ = float(np.sum(val_correct == 0)), 0.0
    best, thres = abs(fp - fn_), 0.0
    for i in range(len(val_correct)):
        if sorted_labels[i] == 0:
            fp -= 1
        else:
            fn_ += 1
        if abs(fp - fn_) < best:
            best, thres = abs(fp - fn_), sorted_scores[i]
    return float(np.mean(scores >= thres))


def cot_compute_t(val_scores: np.ndarray, misclassified: int) -> float:
    """COT ``compute_t``: ``sort(scores)[misclassified - 1]``."""
    return float(np.sort(val_scores)[misclassified - 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_atc_matches_atc_code_and_cot_compute_t(seed: int) -> None:
    val, target = _logits(300, 10, seed), _logits(200, 10, seed + 10, scale=2.0)
    labels = _labels(val, seed + 20)
    correct = (val.argmax(1) == labels).numpy().astype(int)
    for estimator, score in ((ATCMaxConf(), fn.softmax_confidence), (ATCNegEntropy(), fn.negative_entropy)):
        val_s, tgt_s = score(val).numpy(), score(target).numpy()
        got = estimator.estimate(Outputs(target), Outputs(val, labels)).value
        assert got == pytest.approx(atc_reference(val_s, correct, tgt_s), abs=1e-12)
        t = cot_compute_t(val_s, int((correct == 0).sum()))
        assert got == pytest.approx(float(np.mean(tgt_s >= t)), abs=1e-12)
    # the paper's threshold is the next val score up (no ties here)
    val_s = torch.sort(fn.softmax_confidence(val)).values
    errors = int((correct == 0).sum())
    wrong = torch.as_tensor(correct == 1)
    assert fn.matched_threshold(fn.softmax_confidence(val), wrong) == val_s[errors - 1].item()
    assert fn.matched_threshold(fn.softmax_confidence(val), wrong, "paper") == val_s[errors].item()
    assert ATCMaxConf(rank="paper").params()["rank"] == "paper"


# --------------------------------------------------------------------------- COTT


def _transport_row_costs(one_hot: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """COT's ``Pi = ot.emd([], [], M)`` with ``M = cdist(one_hot, probs, p=1)``;
    ``costs = (Pi * N * M).sum(1)`` (one per one-hot row)."""
    m = np.abs(one_hot[:, None, :] - probs[None, :, :]).sum(axis=2)
    n = len(one_hot)
    plan = ot.emd(np.full(n, 1 / n), np.full(n, 1 / n), m, numItermax=10**8)
    return (plan * n * m).sum(axis=1)


def cott_reference(val: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
                   target_labels: np.ndarray) -> float:
    """COT ``compute_cott`` (val transported to its own one-hot labels,
    ``t = sort(-costs)[n_incorrect - 1]``) and the COTT branch of ``run_estimation.py``
    (target transported to one-hot vectors of the label marginal, ``est = mean(-cost < t)``
    is the error); returns the accuracy ``1 - est``."""
    k = val.shape[1]
    val_costs = -_transport_row_costs(np.eye(k)[labels.numpy()], val.softmax(1).numpy())
    errors = int((val.argmax(1) != labels).sum())
    t = np.sort(val_costs)[errors - 1]
    target_costs = -_transport_row_costs(np.eye(k)[target_labels], target.softmax(1).numpy())
    return 1.0 - float(np.mean(target_costs < t))


@pytest.mark.parametrize("seed", [0, 1])
def test_cott_matches_cot_code(seed: int) -> None:
    k = 5
    val, target = _logits(60, k, seed), _logits(40, k, seed + 5, scale=1.5)
    labels = _labels(val, seed + 7)
    uniform = np.repeat(np.arange(k), 40 // k)  # one-hot vectors of the uniform marginal
    got = COTT().estimate(Outputs(target), Outputs(val, labels)).value
    assert got == pytest.approx(cott_reference(val, labels, target, uniform), abs=1e-9)
    marginal = COTT(validation="marginal").estimate(Outputs(target), Outputs(val, labels))
    assert COTT(validation="marginal").params()["validation"] == "marginal"
    assert 0.0 <= marginal.value <= 1.0


# --------------------------------------------------------------------------- MaNo


def mano_reference(split_logits: list[torch.Tensor], val_logits: torch.Tensor) -> list[float]:
    """MaNo ``main.py``: ``delta`` (uniform cross-entropy) computed once, reused for every
    shift; ``scaling_method`` (softmax if delta > 5, else the Taylor normalisation) and the
    score ``||v||_4 / (N K)^(1/4)``."""
    k = val_logits.shape[1]
    uniform = torch.full((len(val_logits), k), 1.0 / k, dtype=torch.float64)
    delta = torch.nn.functional.cross_entropy(val_logits, uniform).item()
    out = []
    for logits in split_logits:
        if delta > 5:
            v = torch.softmax(logits, dim=1)
        else:
            v = logits + 1 + logits**2 / 2
            v = torch.nn.functional.normalize(v - v.min(1, keepdim=True)[0], dim=1, p=1)
        out.append((torch.norm(v, p=4) / (v.shape[0] * v.shape[1]) ** 0.25).item())
    return out


def test_mano_decides_its_branch_once_per_model_as_the_authors_code() -> None:
    val = _logits(100, 10, 0, scale=1.0)  # criterion below 5 on source val: taylor
    splits = [_logits(80, 10, 1, scale=0.5), _logits(80, 10, 2, scale=40.0)]  # phi < 5, phi > 5
    assert fn.mano_branch(fn.mano_criterion(splits[1])) == "softmax"  # per split it would switch
    results = [MaNo().estimate(Outputs(s), Outputs(val, torch.zeros(100, dtype=torch.long)))
               for s in splits]
    assert [r.value for r in results] == pytest.approx(mano_reference(splits, val), rel=1e-12)
    assert {r.extras["branch"] for r in results} == {"taylor"}
    per_split = MaNo(criterion="split").estimate(Outputs(splits[1]), None)
    assert per_split.extras["branch"] == "softmax"


# --------------------------------------------------------------------------- Dispersion


def dispersion_reference(features: np.ndarray, labels: np.ndarray) -> float:
    """Dispersion ``common/distance.py``: ``log(sum_k n_k ||mu_k - mu||^2 / (n_labels - 1))``
    over the label-encoded predicted classes."""
    _, encoded = np.unique(labels, return_inverse=True)
    n_labels = encoded.max() + 1
    mean = features.mean(axis=0)
    extra = sum(np.sum(encoded == k) * np.sum((features[encoded == k].mean(axis=0) - mean) ** 2)
                for k in range(n_labels))
    return float(np.log(extra / (n_labels - 1.0)))


def test_dispersion_matches_the_authors_code() -> None:
    logits = _logits(50, 8, 3)
    logits[:, 7] -= 100.0  # class 7 never predicted: L = 7, not K = 8
    features = _logits(50, 16, 4, scale=1.0)
    got = Dispersion().estimate(Outputs(logits, features=features), None).value
    expected = dispersion_reference(features.numpy(), logits.argmax(1).numpy())
    assert got == pytest.approx(expected, rel=1e-12)
    samples = Dispersion(normaliser="samples").estimate(Outputs(logits, features=features), None)
    assert samples.value == pytest.approx(expected + math.log(6 / 50), rel=1e-12)


# --------------------------------------------------------------------------- AETTA


def aetta_reference(batches: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> list[float]:
    """AETTA ``evaluate_dropout`` and ``aetta``: per batch, ``est_err = 1 - mean match ratio``,
    ``e_avg = -(pbar * log(pbar + 1e-6)).sum()``, ``updated = clip(est_err / (e_avg /
    ln K)^3, 0, 1 - 1/K)``, EMA ``0.6 ema + 0.4 updated`` started at the first est_err."""
    ema, out = None, []
    for predictions, dropout_logits in batches:
        probs = dropout_logits.softmax(dim=2).permute(1, 0, 2)  # batch, n_iter, classes
        match = (predictions[:, None] == probs.argmax(dim=2)).double().mean(dim=1)
        est_err = 1 - match.mean().item()
        pbar = probs.mean(dim=1).mean(dim=0)
        e_avg = -(pbar * torch.log(pbar + 1e-6)).sum().item()
        if ema is None:
            ema = est_err
        updated = max(0.0, min(1 - 1 / num_classes, est_err / (e_avg / math.log(num_classes)) ** 3))
        ema = 0.6 * ema + 0.4 * updated
        out.append(ema)
    return out


def test_aetta_errors_match_the_authors_code(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 5))
    with torch.no_grad():
        net[-1].weight.mul_(20.0)
    adapter = SourceAdapter(net)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = aetta_module.aetta_batch_error
    monkeypatch.setattr(aetta_module, "aetta_batch_error",
                        lambda p, d: seen.append((p, d.double())) or real(p, d))
    estimator = AETTA(dropout=0.5, n_dropouts=6)
    for step in range(1, 5):
        x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(step))
        estimator.before_step(step, x, adapter, None)
        estimator.on_step(step, x, adapter(x), adapter)
    assert estimator.errors == pytest.approx(aetta_reference(seen, 5), abs=1e-9)
    assert len(set(estimator.errors)) > 1
