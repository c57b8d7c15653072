"""Label-free accuracy estimators as pure functions: tensors in, a Python float out.

Notation: ``logits`` has shape (N, K); p_i = softmax(logits_i), c_i = max_k p_ik,
yhat_i = argmax_k p_ik. "val" arrays are a labelled source-validation set. Accuracies are
fractions in [0, 1]. Every computation runs in float64 on the tensors' device (the transport
problems of COT and COTT are solved on the CPU).

Direct estimators (return an accuracy): ``average_confidence``, ``doc``, ``atc``, ``cot``,
``cott``, ``agreement``. Scores (mapped to an accuracy by a fitted map): ``nuclear_norm_score``,
``mano_score``, ``mde_score``, ``dispersion_score``. ``fit_temperature`` fits the temperature
used by the ``+ts`` variants.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import ot
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from ttabench.errors import TTABenchError

#: The fitted temperature is searched in [1 / TEMPERATURE_BOUND, TEMPERATURE_BOUND].
TEMPERATURE_BOUND = 100.0


# --------------------------------------------------------------------------- validation


def _check_logits(logits: torch.Tensor, name: str = "logits") -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] == 0:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise TTABenchError(f"{name} must be a non-empty (N, K) tensor, got {shape}")
    if not torch.isfinite(logits).all():
        raise TTABenchError(f"{name} contains NaN or infinite values")
    return logits.detach().double()


def _check_labelled(
    val_logits: torch.Tensor, val_labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    val = _check_logits(val_logits, "val_logits")
    if val_labels is None or val_labels.shape != (val.shape[0],):
        got = None if val_labels is None else tuple(val_labels.shape)
        raise TTABenchError(f"val_labels must have shape ({val.shape[0]},), got {got}")
    return val, val_labels.to(val.device).long()


def _val_correct(val_logits: torch.Tensor, val_labels: torch.Tensor) -> torch.Tensor:
    return val_logits.argmax(dim=1) == val_labels


# --------------------------------------------------------------------------- direct


def average_confidence(logits: torch.Tensor) -> float:
    """AC: the mean maximum softmax probability, ``mean_i c_i``.

    >>> round(average_confidence(torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])), 6)
    0.625
    """
    return softmax_confidence(_check_logits(logits)).mean().item()


def softmax_confidence(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample confidence ``c_i = max_k softmax(logits_i)_k`` (float64)."""
    return logits.double().softmax(dim=1).max(dim=1).values


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample negative entropy ``sum_k p_ik log p_ik`` (float64; higher = more confident)."""
    log_p = logits.double().log_softmax(dim=1)
    return (log_p.exp() * log_p).sum(dim=1)


def doc(val_logits: torch.Tensor, val_labels: torch.Tensor, logits: torch.Tensor) -> float:
    """DoC: ``acc_val - (AC_val - AC_target)``, clipped to [0, 1].

    >>> val = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    >>> round(doc(val, torch.tensor([0, 0]), torch.tensor([[0.0, 0.0]])), 4)
    0.1192
    """
    target = _check_logits(logits)
    check_classes(val_logits, target)
    return doc_from_reference(doc_reference(val_logits, val_labels), target)


@dataclass(frozen=True)
class DocReference:
    """What DoC takes from labelled source val: its accuracy and its average confidence."""

    accuracy: float
    confidence: float


def doc_reference(val_logits: torch.Tensor, val_labels: torch.Tensor) -> DocReference:
    """``acc_val`` and ``AC_val`` of labelled source val (see ``doc``)."""
    val, labels = _check_labelled(val_logits, val_labels)
    return DocReference(_val_correct(val, labels).double().mean().item(), average_confidence(val))


def doc_from_reference(reference: DocReference, logits: torch.Tensor) -> float:
    """DoC of a target split given its val reference: ``acc_val - (AC_val - AC_target)``,
    clipped to [0, 1]."""
    shift = reference.confidence - average_confidence(logits)
    return min(max(reference.accuracy - shift, 0.0), 1.0)


def check_classes(val_logits: torch.Tensor, logits: torch.Tensor) -> None:
    """Refuse val and target logits of different class counts."""
    val, target = _check_logits(val_logits, "val_logits"), _check_logits(logits)
    if val.shape[1] != target.shape[1]:
        raise TTABenchError(
            f"val_logits have {val.shape[1]} classes but logits have {target.shape[1]}"
        )


ThresholdRank = Literal["code", "paper"]
THRESHOLD_RANKS: tuple[str, ...] = ("code", "paper")


def matched_threshold(
    val_scores: torch.Tensor, val_correct: torch.Tensor, rank: ThresholdRank = "code"
) -> float:
    """The ATC threshold on val scores, for ``e`` val errors.

    ``rank="code"`` (the authors' code: ATC_code's ``find_ATC_threshold`` and COT's
    ``compute_t``): ``t = s_(e)``, the e-th smallest score (1-based), so that
    ``#{i : s_i < t} = e - 1`` without ties; ``-inf`` when ``e = 0`` (every val sample is
    accepted).

    ``rank="paper"``: ``t`` such that ``#{i : s_i < t}`` equals ``e``: candidates are the
    distinct val scores and ``+inf``, the one whose count of scores below it is closest to
    ``e`` wins (the smallest on a tie); without ties ``t = s_(e+1)``.

    >>> scores = torch.tensor([0.3, 0.9, 0.5, 0.7], dtype=torch.float64)
    >>> wrong_two = torch.tensor([False, True, True, False])
    >>> matched_threshold(scores, wrong_two), matched_threshold(scores, wrong_two, "paper")
    (0.5, 0.7)
    """
    if rank not in THRESHOLD_RANKS:
        raise TTABenchError(f"unknown threshold rank {rank!r}; use one of {THRESHOLD_RANKS}")
    errors = int((~val_correct).sum())
    sorted_scores = val_scores.double().sort().values
    if rank == "code":
        return -math.inf if errors == 0 else sorted_scores[errors - 1].item()
    candidates = torch.cat([sorted_scores.unique(), sorted_scores.new_tensor([math.inf])])
    below = torch.searchsorted(sorted_scores, candidates, side="left")
    return candidates[(below - errors).abs().argmin()].item()


def atc(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    logits: torch.Tensor,
    score: AtcScore = "maxconf",
    rank: ThresholdRank = "code",
) -> float:
    """ATC: the fraction of target samples whose score reaches the val-matched threshold.

    ``s = c`` (``maxconf``) or ``s = sum_k p_k log p_k`` (``negentropy``); ``t`` from
    ``matched_threshold`` on val (``rank``); estimate ``= mean_i [s_i >= t]``.

    >>> val = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]])
    >>> atc(val, torch.tensor([0, 1, 1, 1]), torch.tensor([[0.2, 0.0], [4.0, 0.0]]), rank="paper")
    0.5
    """
    target = _check_logits(logits)
    check_classes(val_logits, target)
    return atc_from_threshold(atc_threshold(val_logits, val_labels, score, rank), target, score)


AtcScore = Literal["maxconf", "negentropy"]


def _atc_score(score: AtcScore) -> Callable[[torch.Tensor], torch.Tensor]:
    score_fn = {"maxconf": softmax_confidence, "negentropy": negative_entropy}.get(score)
    if score_fn is None:
        raise TTABenchError(f"unknown ATC score {score!r}; use 'maxconf' or 'negentropy'")
    return score_fn


def atc_threshold(val_logits: torch.Tensor, val_labels: torch.Tensor,
                  score: AtcScore = "maxconf", rank: ThresholdRank = "code") -> float:
    """ATC's threshold ``t``: ``matched_threshold`` of the val scores (see ``atc``)."""
    score_fn = _atc_score(score)
    val, labels = _check_labelled(val_logits, val_labels)
    return matched_threshold(score_fn(val), _val_correct(val, labels), rank)


def atc_from_threshold(threshold: float, logits: torch.Tensor, score: AtcScore = "maxconf") -> float:
    """ATC's estimate on a target split given the val threshold: ``mean_i [s_i >= t]``."""
    return (_atc_score(score)(_check_logits(logits)) >= threshold).double().mean().item()


def _marginal(source_marginal: torch.Tensor | None, num_classes: int) -> np.ndarray:
    if source_marginal is None:
        return np.full(num_classes, 1.0 / num_classes)
    pi = torch.as_tensor(source_marginal, dtype=torch.float64).cpu().numpy()
    if pi.shape != (num_classes,) or (pi < 0).any() or abs(pi.sum() - 1.0) > 1e-6:
        raise TTABenchError(
            f"source_marginal must be {num_classes} non-negative numbers summing to 1"
        )
    return pi / pi.sum()


def transport_costs(
    logits: torch.Tensor, source_marginal: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample cost of the exact optimal transport from predictions to the label marginal.

    The transport: sample i carries mass 1/N, class k receives mass ``pi_k`` (uniform if
    ``source_marginal`` is None), moving mass from i to k costs ``1 - p_ik``
    (= ``||e_k - p_i||_1 / 2``). Solved exactly by POT's network simplex (``ot.emd``, as the
    authors' code does; N = 12,800, K = 10 takes about 0.15 s). Returns
    ``N * sum_k x_ik (1 - p_ik)``, the cost per unit mass of each sample (in [0, 1]); their
    mean is the COT transport cost.

    >>> costs = transport_costs(torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]))
    >>> [round(c, 6) for c in costs.tolist()]
    [0.25, 0.5]
    """
    probs = _check_logits(logits).softmax(dim=1).cpu().numpy()
    n, k = probs.shape
    cost = 1.0 - probs
    plan = ot.emd(np.full(n, 1.0 / n), _marginal(source_marginal, k), cost, numItermax=10**8)
    return torch.from_numpy(n * (plan * cost).sum(axis=1))


def cot(logits: torch.Tensor, source_marginal: torch.Tensor | None = None) -> float:
    """COT: ``1 - W``, W the optimal transport cost between the target softmax vectors and the
    source label marginal (see ``transport_costs``).

    >>> round(cot(torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])), 6)
    0.625
    """
    return 1.0 - transport_costs(logits, source_marginal).mean().item()


CottValidation = Literal["labels", "marginal"]
COTT_VALIDATIONS: tuple[str, ...] = ("labels", "marginal")


def label_marginal(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The empirical label distribution ``n_k / N`` of ``labels`` over ``num_classes``."""
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes).double()
    return counts / counts.sum()


def cott(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    logits: torch.Tensor,
    source_marginal: torch.Tensor | None = None,
    validation: CottValidation = "labels",
    rank: ThresholdRank = "code",
) -> float:
    """COTT: per-sample transport costs, thresholded.

    Val costs: with ``validation="labels"`` (the authors' code, ``compute_cott``) val is
    transported to its own one-hot labels (the class marginal ``n_k / N`` of its labels, so a
    sample of class k is matched to a one-hot vector of class k where it can be); with
    ``"marginal"`` to ``source_marginal`` as the target is. The threshold is
    ``matched_threshold`` on ``-cost`` (``rank="code"``: ``t = sort(-cost_val)[e - 1]``);
    estimate ``= 1 - mean_i [-cost_i < t] = mean_i [-cost_i >= t]``.

    >>> val = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.0, 0.1], [0.3, 0.0]])
    >>> cott(val, torch.tensor([0, 1, 0, 0]), torch.tensor([[5.0, 0.0], [0.0, 0.0]]),
    ...      validation="marginal", rank="paper")
    0.5
    """
    target = _check_logits(logits)
    check_classes(val_logits, target)
    threshold = cott_threshold(val_logits, val_labels, source_marginal, validation, rank)
    return cott_from_costs(threshold, transport_costs(target, source_marginal))


def cott_threshold(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    source_marginal: torch.Tensor | None = None,
    validation: CottValidation = "labels",
    rank: ThresholdRank = "code",
) -> float:
    """COTT's threshold on ``-cost``: ``matched_threshold`` of the val transport costs (see
    ``cott``; one transport problem, on val)."""
    if validation not in COTT_VALIDATIONS:
        raise TTABenchError(f"unknown COTT validation {validation!r}; use one of {COTT_VALIDATIONS}")
    val, labels = _check_labelled(val_logits, val_labels)
    val_marginal = label_marginal(labels, val.shape[1]) if validation == "labels" else source_marginal
    val_costs = transport_costs(val, val_marginal)
    return matched_threshold(-val_costs, _val_correct(val, labels), rank)


def cott_from_costs(threshold: float, costs: torch.Tensor) -> float:
    """COTT's estimate from a target split's transport costs: ``mean_i [-cost_i >= t]``."""
    return (-costs >= threshold).double().mean().item()


def agreement(source_logits: torch.Tensor, bn_logits: torch.Tensor) -> float:
    """Agreement: the fraction of samples on which two models predict the same class,
    ``mean_i [argmax_k a_ik = argmax_k b_ik]`` (rows are the same samples in the same order).

    >>> agreement(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0], [3.0, 0.0]]))
    0.5
    """
    a, b = _check_logits(source_logits, "source_logits"), _check_logits(bn_logits, "bn_logits")
    if a.shape != b.shape:
        raise TTABenchError(f"the two models' logits differ in shape: {tuple(a.shape)}, {tuple(b.shape)}")
    return (a.argmax(dim=1) == b.argmax(dim=1)).double().mean().item()


# --------------------------------------------------------------------------- scores


def nuclear_norm_score(logits: torch.Tensor) -> float:
    """Nuclear norm: ``||P||_* / sqrt(N * min(N, K))`` for the N x K softmax matrix P.

    The singular values are the square roots of the eigenvalues of the smaller Gram matrix
    (``P^T P``, K x K, or ``P P^T`` when N < K); eigenvalues under 1e-12 of the largest are
    rounding noise of a rank-deficient P and count as 0. In [0, 1]; higher means more confident
    and more diverse predictions, i.e. higher accuracy.

    >>> round(nuclear_norm_score(torch.tensor([[30.0, 0.0], [0.0, 30.0]])), 6)
    1.0
    """
    probs = _check_logits(logits).softmax(dim=1)
    n, k = probs.shape
    eigenvalues = torch.linalg.eigvalsh(probs.T @ probs if k <= n else probs @ probs.T)
    eigenvalues = torch.where(eigenvalues > 1e-12 * eigenvalues.max(), eigenvalues, 0.0)
    return (eigenvalues.sqrt().sum() / math.sqrt(n * min(n, k))).item()


MANO_THRESHOLD = 5.0


def mano_criterion(logits: torch.Tensor) -> float:
    """MaNo's criterion ``phi = mean_i CE(uniform, p_i) = mean_i (logsumexp_k q_ik - mean_k q_ik)``.

    >>> round(mano_criterion(torch.zeros(3, 4)), 6) == round(math.log(4), 6)
    True
    """
    q = _check_logits(logits)
    return (q.logsumexp(dim=1) - q.mean(dim=1)).mean().item()


def mano_branch(phi: float) -> Literal["softmax", "taylor"]:
    """``softmax`` when ``phi > 5`` (MaNo's threshold), else ``taylor``."""
    return "softmax" if phi > MANO_THRESHOLD else "taylor"


def mano_score(
    logits: torch.Tensor, return_branch: bool = False,
    branch: Literal["softmax", "taylor"] | None = None,
) -> float | tuple[float, Literal["softmax", "taylor"]]:
    """MaNo: ``S = (mean_ik v_ik^4)^(1/4)`` for normalised logits v.

    ``branch`` chooses the normalisation; None decides it on these logits
    (``mano_branch(mano_criterion(logits))``). The authors' code decides it once per model and
    reuses it for every shift (``ttabench.estimators.scores.MaNo`` decides it on source val).
    ``softmax``: v the softmax; ``taylor``: the order-2 Taylor normalisation
    ``u = 1 + q + q^2/2``, ``v_i = (u_i - min_k u_ik) / sum_k (u_ik - min_k u_ik)`` (a constant
    row, e.g. K = 1, gives zeros). Higher means higher accuracy. ``return_branch`` also returns
    which branch was used.

    >>> mano_score(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), return_branch=True)
    (0.8408964152537145, 'taylor')
    """
    q = _check_logits(logits)
    used = branch or mano_branch(mano_criterion(q))
    if used == "softmax":
        v = q.softmax(dim=1)
    elif used == "taylor":
        u = 1.0 + q + q**2 / 2.0
        v = F.normalize(u - u.min(dim=1, keepdim=True).values, p=1.0, dim=1)
    else:
        raise TTABenchError(f"unknown MaNo branch {used!r}; use 'softmax' or 'taylor'")
    score = v.pow(4).mean().pow(0.25).item()
    return (score, used) if return_branch else score


def mde_score(logits: torch.Tensor, temperature: float = 1.0) -> float:
    """MDE score ``log(-MDE)``, on logits.

    Energy ``E_i = -T logsumexp_k(q_ik / T)``; ``MDE = mean_i log softmax_i(E)`` (softmax over
    the N samples) ``= mean_i E_i - logsumexp_j E_j <= -log N``. The score grows with the spread
    of energies over the samples (``log log N`` when all are equal); the paper reports MDE rising
    with accuracy, i.e. this score falling. Needs N >= 2.

    >>> mde_score(torch.zeros(2, 3)) == math.log(math.log(2))  # equal energies: MDE = -log N
    True
    """
    q = _check_logits(logits)
    if q.shape[0] < 2:
        raise TTABenchError("the MDE score needs at least 2 samples")
    if not temperature > 0:
        raise TTABenchError(f"temperature must be positive, got {temperature}")
    energy = -temperature * (q / temperature).logsumexp(dim=1)
    mde = (energy - energy.logsumexp(dim=0)).mean()
    return (-mde).log().item()


DispersionNormaliser = Literal["classes", "samples"]
DISPERSION_NORMALISERS: tuple[str, ...] = ("classes", "samples")


def dispersion_score(
    features: torch.Tensor, logits: torch.Tensor, normaliser: DispersionNormaliser = "classes"
) -> float:
    """Dispersion score ``log D`` on penultimate features, grouped by predicted class.

    ``S = sum_k n_k ||mu_k - mu||^2``: mu the mean feature, mu_k the mean feature of the n_k
    samples predicted as class k. ``normaliser="classes"`` (the authors' code,
    ``common/distance.py``): ``D = S / (L - 1)``, L the number of predicted classes;
    ``"samples"``: ``D = S / N``. Higher means better separated features, i.e. higher
    accuracy. Undefined (raises) when every sample is predicted as one class (``S = 0``).

    >>> features = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    >>> dispersion_score(features, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "samples")
    0.0
    """
    if normaliser not in DISPERSION_NORMALISERS:
        raise TTABenchError(
            f"unknown dispersion normaliser {normaliser!r}; use one of {DISPERSION_NORMALISERS}"
        )
    q = _check_logits(logits)
    f = _check_logits(features.flatten(1), "features")
    if f.shape[0] != q.shape[0]:
        raise TTABenchError(f"features have {f.shape[0]} rows but logits have {q.shape[0]}")
    one_hot = F.one_hot(q.argmax(dim=1), q.shape[1]).double()
    counts = one_hot.sum(dim=0)
    used = counts > 0
    n_used = int(used.sum())
    if n_used < 2:
        raise TTABenchError(
            "the dispersion score is undefined when every sample is predicted as one class"
        )
    class_means = (one_hot.T @ f)[used] / counts[used, None]
    spread = (((class_means - f.mean(dim=0)) ** 2).sum(dim=1) * counts[used]).sum()
    return (spread / (n_used - 1 if normaliser == "classes" else f.shape[0])).log().item()


# --------------------------------------------------------------------------- temperature


def _nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return F.cross_entropy(logits / temperature, labels).item()


def fit_temperature(val_logits: torch.Tensor, val_labels: torch.Tensor) -> float:
    """Temperature scaling: ``T = argmin_T mean_i -log softmax(logits_i / T)_{y_i}``.

    A bounded 1-D search over ``log T`` in ``[-log 100, log 100]`` (the NLL is convex in 1/T, so
    unimodal in log T). With K = 1 every T is optimal and 1 is returned.

    >>> # calibrated by construction: p = (3/4, 1/4) and 3 of 4 labels are class 0
    >>> logits = torch.tensor([[math.log(3.0), 0.0]]).repeat(4, 1)
    >>> round(fit_temperature(logits, torch.tensor([0, 0, 0, 1])), 4)
    1.0
    """
    val, labels = _check_labelled(val_logits, val_labels)
    if val.shape[1] == 1:
        return 1.0
    bound = math.log(TEMPERATURE_BOUND)
    result = minimize_scalar(
        lambda log_t: _nll(val, labels, math.exp(log_t)),
        bounds=(-bound, bound),
        method="bounded",
        options={"xatol": 1e-9},
    )
    return math.exp(result.x)


# --------------------------------------------------------------------------- AETTA


def dropout_disagreement(predictions: torch.Tensor, dropout_logits: torch.Tensor) -> float:
    """AETTA's uncorrected error ``err0 = 1 - mean_{m,i} [argmax_k dropout_logits_mik = predictions_i]``.

    ``predictions``: (B,) undropped predicted classes; ``dropout_logits``: (M, B, K).

    >>> drop = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [0.0, 2.0]]])
    >>> dropout_disagreement(torch.tensor([0, 1]), drop)
    0.25
    """
    if dropout_logits.ndim != 3 or predictions.shape != dropout_logits.shape[1:2]:
        raise TTABenchError(
            f"dropout_logits must be (M, B, K) with B = {predictions.shape[0]} predictions, "
            f"got {tuple(dropout_logits.shape)}"
        )
    agreement = (dropout_logits.argmax(dim=2) == predictions.to(dropout_logits.device)).double()
    return 1.0 - agreement.mean().item()


#: AETTA's code takes the entropy as ``-sum p log(p + 1e-6)``.
AETTA_LOG_EPS = 1e-6


def aetta_batch_error(predictions: torch.Tensor, dropout_logits: torch.Tensor) -> float:
    """AETTA's error estimate for one batch, before the moving average.

    ``err0 = dropout_disagreement(predictions, dropout_logits)``; ``Ebar`` = entropy of the
    dropout softmax averaged over inferences and samples, ``-sum_k pbar_k log(pbar_k + 1e-6)``
    as the authors' code; ``err = err0 / (Ebar / ln K)^3`` clipped to ``[0, 1 - 1/K]`` (0 when
    ``err0 = 0``).

    >>> drop = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [0.0, 2.0]]])
    >>> round(aetta_batch_error(torch.tensor([0, 1]), drop), 4)  # 0.25 / 0.8927**3
    0.3514
    """
    err0 = dropout_disagreement(predictions, dropout_logits)
    num_classes = dropout_logits.shape[2]
    if err0 == 0.0 or num_classes == 1:
        return 0.0
    mean_probs = dropout_logits.double().softmax(dim=2).mean(dim=(0, 1))
    entropy = -(mean_probs * (mean_probs + AETTA_LOG_EPS).log()).sum().item()
    ratio = entropy / math.log(num_classes)
    ceiling = 1.0 - 1.0 / num_classes
    return min(err0 / ratio**3, ceiling) if ratio > 0 else ceiling
