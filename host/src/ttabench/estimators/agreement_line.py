"""Estimators that compare models, as pure functions: GDE and agreement-on-the-line.

Inputs are the predictions of n models on the same samples in the same order: on labelled
in-distribution (ID) data (the source-validation split) and on the unlabelled
out-of-distribution (OOD) target split. ``Phi`` is the standard normal CDF, ``Phi^-1`` the
probit.

- GDE (Jiang et al., ICLR 2022, "Assessing Generalization of SGD via Disagreement"): the test
  error of a model is about its disagreement rate with another independently trained model, so
  ``accuracy ~ agreement = mean_i [yhat_i = yhat'_i]`` (``functional.agreement``).
- ALine-S and ALine-D (Baek et al., NeurIPS 2022, "Agreement-on-the-Line"; their code:
  kebaek/Agreement-on-the-line, ``agreement_trajectory.ipynb``, function ``aline``): across
  model pairs, probit OOD agreement is linear in probit ID agreement with the same slope and
  bias as probit OOD accuracy in probit ID accuracy. The line is fitted on pairs, then applied
  to each model's ID accuracy (ALine-S), or turned into one linear equation per pair whose
  least-squares solution holds every model's probit OOD accuracy (ALine-D).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from ttabench.errors import TTABenchError
from ttabench.estimators.functional import agreement

#: Pairs are kept when both their ID and OOD agreements lie in [AGREEMENT_LOW, AGREEMENT_HIGH]
#: (the authors' code: the probit of agreements near 0 or 1 is unbounded).
AGREEMENT_LOW = 0.05
AGREEMENT_HIGH = 0.98


def gde(logits: torch.Tensor, peer_logits: Sequence[torch.Tensor]) -> float:
    """GDE's accuracy estimate: the mean agreement of the model with each peer,
    ``1 / M sum_m mean_i [argmax logits_i = argmax peer_m,i]`` (one peer: Jiang et al.'s pair).

    >>> a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> gde(a, [torch.tensor([[2.0, 0.0], [3.0, 0.0]]), a])
    0.75
    """
    if not peer_logits:
        raise TTABenchError("GDE needs at least one peer model")
    return sum(agreement(logits, peer) for peer in peer_logits) / len(peer_logits)


@dataclass(frozen=True)
class ALineResult:
    """What agreement-on-the-line gives for a pool of n models.

    ``slope``, ``bias``: the line ``Phi^-1(OOD agreement) = slope * Phi^-1(ID agreement) +
    bias`` fitted by least squares on the kept ``pairs`` (i < j). ``aline_s[m]`` and
    ``aline_d[m]``: model m's OOD accuracy estimate by ALine-S and ALine-D; ``aline_d[m]`` is
    None when no kept pair holds model m (the system says nothing of it).
    """

    slope: float
    bias: float
    pairs: tuple[tuple[int, int], ...]
    aline_s: tuple[float, ...]
    aline_d: tuple[float | None, ...]


def _probit(values: np.ndarray, what: str) -> np.ndarray:
    if ((values <= 0.0) | (values >= 1.0)).any():
        raise TTABenchError(f"agreement-on-the-line needs {what} strictly between 0 and 1 (their "
                            f"probit is infinite), got {values.tolist()}")
    return np.asarray(norm.ppf(values), dtype=np.float64)


def _check_predictions(predictions: Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    rows = [p.detach().reshape(-1).cpu() for p in predictions]
    if len({r.numel() for r in rows}) != 1 or rows[0].numel() == 0:
        raise TTABenchError(f"the models' {what} predictions must be non-empty and of one "
                            f"length, got lengths {[r.numel() for r in rows]}")
    return rows


def aline(id_predictions: Sequence[torch.Tensor], id_accuracies: Sequence[float],
          ood_predictions: Sequence[torch.Tensor], low: float = AGREEMENT_LOW,
          high: float = AGREEMENT_HIGH) -> ALineResult:
    """ALine-S and ALine-D for every model of a pool.

    For each pair i < j: ID agreement ``a_ij`` and OOD agreement ``b_ij`` of the predicted
    classes; the pair is kept when both lie in ``[low, high]``. On the kept pairs, with
    ``x = Phi^-1(a)`` and ``y = Phi^-1(b)``, ordinary least squares gives ``y = slope x +
    bias``. ALine-S: ``Phi(slope * Phi^-1(acc_m) + bias)`` with ``acc_m`` model m's ID accuracy.
    ALine-D: one equation per kept pair,
    ``(w_i + w_j) / 2 = y_ij + slope * ((Phi^-1(acc_i) + Phi^-1(acc_j)) / 2 - x_ij)``,
    solved for w by least squares (minimum-norm, ``numpy.linalg.lstsq``); estimate
    ``Phi(w_m)``.

    As the authors' ``aline``, except: their code returns ALine-S before the final ``Phi``
    (in probit units; their figure uses ALine-D only), here it is an accuracy as in the
    paper's algorithm; and a model in no kept pair gets ``None`` from ALine-D, where their
    minimum-norm solution gives it ``w = 0``, i.e. 0.5. Refused (TTABenchError): fewer than two
    models, an ID accuracy of 0 or 1, fewer than two kept pairs or kept pairs of one ID
    agreement (no line).
    """
    n = len(id_predictions)
    if n < 2 or len(ood_predictions) != n or len(id_accuracies) != n:
        raise TTABenchError(f"agreement-on-the-line needs the ID predictions, ID accuracies and "
                            f"OOD predictions of one pool of at least 2 models, got {n}, "
                            f"{len(id_accuracies)} and {len(ood_predictions)}")
    id_rows = _check_predictions(id_predictions, "ID")
    ood_rows = _check_predictions(ood_predictions, "OOD")
    accuracy_probits = _probit(np.asarray(id_accuracies, dtype=np.float64), "ID accuracies")
    pairs, x_values, y_values = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            id_agreement = (id_rows[i] == id_rows[j]).double().mean().item()
            ood_agreement = (ood_rows[i] == ood_rows[j]).double().mean().item()
            if low <= id_agreement <= high and low <= ood_agreement <= high:
                pairs.append((i, j))
                x_values.append(id_agreement)
                y_values.append(ood_agreement)
    x = _probit(np.asarray(x_values), "kept ID agreements")
    y = _probit(np.asarray(y_values), "kept OOD agreements")
    if len(pairs) < 2 or np.ptp(x) == 0.0:
        raise TTABenchError(
            f"agreement-on-the-line kept {len(pairs)} model pair(s) with agreements in "
            f"[{low}, {high}] on both ID and OOD data, with {len(set(x_values))} distinct ID "
            "agreement(s); fitting its line needs two pairs of different ID agreement")
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    bias = float(y.mean() - slope * x.mean())
    design = np.zeros((len(pairs), n))
    for row, (i, j) in enumerate(pairs):
        design[row, [i, j]] = 0.5
    pair_accuracy = np.asarray([(accuracy_probits[i] + accuracy_probits[j]) / 2 for i, j in pairs])
    w = np.linalg.lstsq(design, y + slope * (pair_accuracy - x), rcond=None)[0]
    covered = [bool(design[:, m].any()) for m in range(n)]
    return ALineResult(
        slope=slope,
        bias=bias,
        pairs=tuple(pairs),
        aline_s=tuple(float(norm.cdf(slope * a + bias)) for a in accuracy_probits),
        aline_d=tuple(float(norm.cdf(w[m])) if covered[m] else None for m in range(n)),
    )


def accuracy_of(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """``mean_i [argmax_k logits_ik = labels_i]``, the ID accuracy ALine reads of each model."""
    if logits.ndim != 2 or logits.shape[0] == 0 or labels.shape != logits.shape[:1]:
        raise TTABenchError(f"labels of shape {tuple(labels.shape)} for logits of shape "
                            f"{tuple(logits.shape)}")
    return (logits.argmax(dim=1) == labels.to(logits.device)).double().mean().item()
