"""Label-free accuracy estimators as pure functions: tensors in, a Python float out.

Notation: ``logits`` has shape (N, K); p_i = softmax(logits_i), c_i = max_k p_ik,
yhat_i = argmax_k p_ik. "val" arrays are a labelled source-validation set. Accuracies are
fractions in [0, 1]. Every computation runs in float64 on the tensors' device (the transport
problems of COT and COTT are solved on the CPU).

Direct estimators (return an accuracy): ``average_confidence``, ``doc``, ``atc``, ``cot``,
``cott``. Scores (mapped to an accuracy by a fitted map): ``nuclear_norm_score``,
``mano_score``, ``mde_score``, ``dispersion_score``. ``fit_temperature`` fits the temperature
used by the ``+ts`` variants.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from scipy.optimize import linprog, minimize_scalar

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
    val_logits: torch.Tensor, val_labels: torch.Tensor, logits: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    val = _check_logits(val_logits, "val_logits")
    if val_labels is None or val_labels.shape != (val.shape[0],):
        got = None if val_labels is None else tuple(val_labels.shape)
        raise TTABenchError(f"val_labels must have shape ({val.shape[0]},), got {got}")
    if logits is not None and logits.shape[1] != val.shape[1]:
        raise TTABenchError(
            f"val_logits have {val.shape[1]} classes but logits have {logits.shape[1]}"
        )
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
    val, labels = _check_labelled(val_logits, val_labels, target)
    val_accuracy = _val_correct(val, labels).double().mean().item()
    shift = average_confidence(val) - average_confidence(target)
    return min(max(val_accuracy - shift, 0.0), 1.0)


def matched_threshold(val_scores: torch.Tensor, val_correct: torch.Tensor) -> float:
    """The ATC threshold: ``t`` such that ``#{i : s_i < t}`` equals the number of val errors.

    Candidates are the distinct val scores and ``+inf``; the one whose count of scores below it
    is closest to the error count wins (the smallest on a tie). Without ties this is exact:
    ``t = s_(e+1)``, the (e+1)-th smallest score for ``e`` errors. All correct gives
    ``t = min_i s_i``; all wrong gives ``t = +inf``.

    >>> scores = torch.tensor([0.3, 0.9, 0.5, 0.7], dtype=torch.float64)
    >>> matched_threshold(scores, torch.tensor([False, True, True, False]))
    0.7
    """
    errors = int((~val_correct).sum())
    sorted_scores = val_scores.double().sort().values
    candidates = torch.cat([sorted_scores.unique(), sorted_scores.new_tensor([math.inf])])
    below = torch.searchsorted(sorted_scores, candidates, side="left")
    return candidates[(below - errors).abs().argmin()].item()


def atc(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    logits: torch.Tensor,
    score: Literal["maxconf", "negentropy"] = "maxconf",
) -> float:
    """ATC: the fraction of target samples whose score reaches the val-matched threshold.

    ``s = c`` (``maxconf``) or ``s = sum_k p_k log p_k`` (``negentropy``); ``t`` from
    ``matched_threshold`` on val; estimate ``= mean_i [s_i >= t]``.

    >>> val = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]])
    >>> atc(val, torch.tensor([0, 1, 1, 1]), torch.tensor([[0.2, 0.0], [4.0, 0.0]]))
    0.5
    """
    score_fn = {"maxconf": softmax_confidence, "negentropy": negative_entropy}.get(score)
    if score_fn is None:
        raise TTABenchError(f"unknown ATC score {score!r}; use 'maxconf' or 'negentropy'")
    target = _check_logits(logits)
    val, labels = _check_labelled(val_logits, val_labels, target)
    threshold = matched_threshold(score_fn(val), _val_correct(val, labels))
    return (score_fn(target) >= threshold).double().mean().item()


def _marginal(source_marginal: torch.Tensor | None, num_classes: int) -> np.ndarray:
    if source_marginal is None:
        return np.full(num_classes, 1.0 / num_classes)
    pi = torch.as_tensor(source_marginal, dtype=torch.float64).cpu().numpy()
    if pi.shape != (num_classes,) or (pi < 0).any() or abs(pi.sum() - 1.0) > 1e-6:
        raise TTABenchError(
            f"source_marginal must be {num_classes} non-negative numbers summing to 1"
        )
    return pi / pi.sum()


def _northwest_corner(n: int, capacity: np.ndarray) -> tuple[list[int], list[int]]:
    """The pairs (i, k) of a feasible plan: samples in order fill the classes in order."""
    samples, classes = [], []
    k, room = 0, capacity[0]
    for i in range(n):
        supply = 1.0
        while True:
            samples.append(i)
            classes.append(k)
            moved = min(supply, room)
            supply, room = supply - moved, room - moved
            if supply <= 1e-9 or k == len(capacity) - 1:
                break
            k, room = k + 1, capacity[k + 1]
    return samples, classes


def _transport_plan(cost: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Exact minimiser x (N, K) of ``sum_ik x_ik cost_ik`` subject to ``sum_k x_ik = 1``,
    ``sum_i x_ik <= capacity_k`` (with ``sum_k capacity_k = N``, so all are tight), ``x >= 0``.

    Column generation on the sparse LP (HiGHS): start from each sample's cheapest classes plus
    the pairs of a feasible plan, solve, then add the pairs with a negative reduced cost
    ``cost_ik - u_i - v_k`` under the duals (u, v); when none is left the restricted optimum is
    optimal for the full N x K problem.
    """
    n, k = cost.shape
    per_sample = min(k, 8)
    active = np.zeros((n, k), dtype=bool)
    cheapest = np.argpartition(cost, per_sample - 1, axis=1)[:, :per_sample]
    np.put_along_axis(active, cheapest, True, axis=1)
    active[_northwest_corner(n, capacity)] = True
    while True:
        rows, cols = np.nonzero(active)
        ones, columns, m = np.ones(len(rows)), np.arange(len(rows)), len(rows)
        result = linprog(
            cost[rows, cols],
            A_ub=scipy.sparse.csr_array((ones, (cols, columns)), shape=(k, m)),
            b_ub=capacity,
            A_eq=scipy.sparse.csr_array((ones, (rows, columns)), shape=(n, m)),
            b_eq=np.ones(n),
            bounds=(0, None),
            method="highs",
        )
        if result.status != 0:
            raise TTABenchError(f"the COT transport problem failed to solve: {result.message}")
        reduced = cost - result.eqlin.marginals[:, None] - result.ineqlin.marginals[None, :]
        reduced[active] = 0.0
        if reduced.min() >= -1e-9:
            plan = np.zeros((n, k))
            plan[rows, cols] = result.x
            return plan
        worst = np.zeros_like(active)
        most_negative = np.argpartition(reduced, per_sample - 1, axis=1)[:, :per_sample]
        np.put_along_axis(worst, most_negative, True, axis=1)
        active |= worst & (reduced < -1e-9)


def transport_costs(
    logits: torch.Tensor, source_marginal: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-sample cost of the exact optimal transport from predictions to the label marginal.

    The transport: sample i carries mass 1/N, class k receives mass ``pi_k`` (uniform if
    ``source_marginal`` is None), moving mass from i to k costs ``1 - p_ik``
    (= ``||e_k - p_i||_1 / 2``). Solved exactly as a sparse linear program (see
    ``_transport_plan``; N = 5000, K = 10 takes about a second). Returns
    ``N * sum_k x_ik (1 - p_ik)``, the cost per unit mass of each sample (in [0, 1]); their
    mean is the COT transport cost.

    >>> costs = transport_costs(torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]]))
    >>> [round(c, 6) for c in costs.tolist()]
    [0.25, 0.5]
    """
    probs = _check_logits(logits).softmax(dim=1).cpu().numpy()
    n, k = probs.shape
    cost = 1.0 - probs
    plan = _transport_plan(cost, n * _marginal(source_marginal, k))
    return torch.from_numpy((plan * cost).sum(axis=1))


def cot(logits: torch.Tensor, source_marginal: torch.Tensor | None = None) -> float:
    """COT: ``1 - W``, W the optimal transport cost between the target softmax vectors and the
    source label marginal (see ``transport_costs``).

    >>> round(cot(torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])), 6)
    0.625
    """
    return 1.0 - transport_costs(logits, source_marginal).mean().item()


def cott(
    val_logits: torch.Tensor,
    val_labels: torch.Tensor,
    logits: torch.Tensor,
    source_marginal: torch.Tensor | None = None,
) -> float:
    """COTT: per-sample transport costs, thresholded.

    The threshold ``t`` is chosen on val so that the fraction of val costs above it equals the
    val error (``matched_threshold`` on ``-cost``); estimate ``= 1 - mean_i [cost_i > t]``.

    >>> val = torch.tensor([[4.0, 0.0], [0.0, 4.0], [0.0, 0.1], [0.3, 0.0]])
    >>> cott(val, torch.tensor([0, 1, 0, 0]), torch.tensor([[5.0, 0.0], [0.0, 0.0]]))
    0.5
    """
    target = _check_logits(logits)
    val, labels = _check_labelled(val_logits, val_labels, target)
    val_costs = transport_costs(val, source_marginal)
    threshold = matched_threshold(-val_costs, _val_correct(val, labels))
    return (-transport_costs(target, source_marginal) >= threshold).double().mean().item()


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


def mano_score(
    logits: torch.Tensor, return_branch: bool = False
) -> float | tuple[float, Literal["softmax", "taylor"]]:
    """MaNo: ``S = (mean_ik v_ik^4)^(1/4)`` for normalised logits v.

    Criterion ``phi = mean_i CE(uniform, p_i) = mean_i (logsumexp_k q_ik - mean_k q_ik)``.
    If ``phi > 5`` v is the softmax; else the order-2 Taylor normalisation: ``u = 1 + q + q^2/2``,
    ``v_i = (u_i - min_k u_ik) / sum_k (u_ik - min_k u_ik)`` (a constant row, e.g. K = 1, gives
    zeros). Higher means higher accuracy. ``return_branch`` also returns which branch fired.

    >>> mano_score(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), return_branch=True)
    (0.8408964152537145, 'taylor')
    """
    q = _check_logits(logits)
    phi = (q.logsumexp(dim=1) - q.mean(dim=1)).mean().item()
    if phi > 5.0:
        branch: Literal["softmax", "taylor"] = "softmax"
        v = q.softmax(dim=1)
    else:
        branch = "taylor"
        u = 1.0 + q + q**2 / 2.0
        v = F.normalize(u - u.min(dim=1, keepdim=True).values, p=1.0, dim=1)
    score = v.pow(4).mean().pow(0.25).item()
    return (score, branch) if return_branch else score


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


def dispersion_score(features: torch.Tensor, logits: torch.Tensor) -> float:
    """Dispersion score ``log D`` on penultimate features, grouped by predicted class.

    ``D = sum_k (n_k / N) ||mu_k - mu||^2``: mu the mean feature, mu_k the mean feature of the
    n_k samples predicted as class k (empty classes contribute 0). Higher means better
    separated features, i.e. higher accuracy. Undefined (raises) when every sample is
    predicted as one class, where ``D = 0``.

    >>> features = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    >>> dispersion_score(features, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    0.0
    """
    q = _check_logits(logits)
    f = _check_logits(features.flatten(1), "features")
    if f.shape[0] != q.shape[0]:
        raise TTABenchError(f"features have {f.shape[0]} rows but logits have {q.shape[0]}")
    one_hot = F.one_hot(q.argmax(dim=1), q.shape[1]).double()
    counts = one_hot.sum(dim=0)
    used = counts > 0
    if int(used.sum()) < 2:
        raise TTABenchError(
            "the dispersion score is undefined when every sample is predicted as one class"
        )
    class_means = (one_hot.T @ f)[used] / counts[used, None]
    spread = ((class_means - f.mean(dim=0)) ** 2).sum(dim=1)
    return (spread * counts[used] / f.shape[0]).sum().log().item()


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


def aetta_batch_error(predictions: torch.Tensor, dropout_logits: torch.Tensor) -> float:
    """AETTA's error estimate for one batch, before the moving average.

    ``predictions``: (B,) undropped predicted classes; ``dropout_logits``: (M, B, K) logits of
    M dropout inferences. ``err0 = 1 - mean_{m,i} [argmax_k dropout_logits_mik = predictions_i]``;
    ``Ebar`` = entropy of the dropout softmax averaged over inferences and samples;
    ``err = err0 / (Ebar / ln K)^3`` clipped to ``[0, 1 - 1/K]`` (0 when ``err0 = 0``).

    >>> drop = torch.tensor([[[2.0, 0.0], [0.0, 2.0]], [[0.0, 2.0], [0.0, 2.0]]])
    >>> round(aetta_batch_error(torch.tensor([0, 1]), drop), 4)  # 0.25 / 0.8927**3
    0.3514
    """
    if dropout_logits.ndim != 3 or predictions.shape != dropout_logits.shape[1:2]:
        raise TTABenchError(
            f"dropout_logits must be (M, B, K) with B = {predictions.shape[0]} predictions, "
            f"got {tuple(dropout_logits.shape)}"
        )
    num_classes = dropout_logits.shape[2]
    agreement = (dropout_logits.argmax(dim=2) == predictions.to(dropout_logits.device)).double()
    err0 = 1.0 - agreement.mean().item()
    if err0 == 0.0 or num_classes == 1:
        return 0.0
    mean_probs = dropout_logits.double().softmax(dim=2).mean(dim=(0, 1))
    ratio = -(torch.special.xlogy(mean_probs, mean_probs).sum().item()) / math.log(num_classes)
    ceiling = 1.0 - 1.0 / num_classes
    return min(err0 / ratio**3, ceiling) if ratio > 0 else ceiling
