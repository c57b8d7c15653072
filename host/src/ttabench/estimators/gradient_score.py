"""GdScore (Xie et al., TMLR 2025, "Leveraging Gradients for Unsupervised Accuracy
Estimation under Distribution Shift") as pure functions of penultimate features and logits.

The authors' code (Renchunzi-Xie/GdScore, ``algs/gdscore.py``, ``GdScore.evaluate``) runs each
target batch of 128 through the model in train mode, takes pseudo-labels ``argmax_k p_ik``
(replaced by a uniformly drawn class where ``max_k p_ik < 0.5``), back-propagates the mean
cross-entropy once and scores the batch by the entry-wise 0.3-norm of the gradient of the last
linear layer's weight (``fc.weight.grad``); the score is the mean over batches.

For a last layer ``q = W h + c`` that gradient needs no backward pass: with ``P`` the batch's
softmax rows, ``Y`` the one-hot pseudo-labels and ``H`` the penultimate features (the layer's
input), ``dL/dW = (P - Y)^T H / B`` (K x D). So the score is a function of the outputs a
forward pass already gives.
"""

from __future__ import annotations

import torch

from ttabench.errors import TTABenchError

#: The authors' defaults (``bash/gdscore.sh``): confidence threshold, norm order, batch size.
THRESHOLD = 0.5
NORM = 0.3
BATCH_SIZE = 128


def pseudo_labels(logits: torch.Tensor, threshold: float, generator: torch.Generator) -> torch.Tensor:
    """``argmax_k p_ik``, replaced where ``max_k p_ik < threshold`` by a class drawn uniformly
    from ``[0, K)`` with ``generator`` (in row order, one draw per replaced row).

    >>> pseudo_labels(torch.tensor([[3.0, 0.0], [0.0, 3.0]]), 0.5, torch.Generator())
    tensor([0, 1])
    """
    confidence, labels = logits.softmax(dim=1).max(dim=1)
    low = confidence < threshold
    drawn = torch.randint(0, logits.shape[1], (int(low.sum()),), generator=generator)
    labels[low] = drawn.to(labels.device)
    return labels


def classifier_gradient(features: torch.Tensor, logits: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the batch's mean cross-entropy ``1/B sum_i -log softmax(q_i)_{y_i}`` with
    respect to the weight W of the last linear layer ``q = W h + c``:
    ``(softmax(Q) - onehot(y))^T H / B``, a (K, D) matrix.

    >>> g = classifier_gradient(torch.tensor([[2.0]]), torch.zeros(1, 2), torch.tensor([0]))
    >>> g.flatten().tolist()  # (p - y) * h = (0.5 - 1, 0.5 - 0) * 2
    [-1.0, 1.0]
    """
    residual = logits.softmax(dim=1)
    residual[torch.arange(len(labels), device=residual.device), labels] -= 1.0
    return residual.T @ features / len(labels)


def gdscore(features: torch.Tensor, logits: torch.Tensor, threshold: float = THRESHOLD,
            norm: float = NORM, batch_size: int = BATCH_SIZE, seed: int = 0) -> float:
    """GdScore of a split: the mean over consecutive batches of ``batch_size`` rows (the last
    one may be smaller) of ``(sum_kd |G_kd|^norm)^(1/norm)``, ``G = classifier_gradient`` under
    ``pseudo_labels`` drawn from one generator seeded with ``seed``. A larger gradient means a
    less certain model, i.e. a lower accuracy. Computed in float64.
    """
    f = features.detach().flatten(1).double()
    q = logits.detach().double()
    if q.ndim != 2 or q.shape[0] == 0 or f.shape[0] != q.shape[0]:
        raise TTABenchError(f"GdScore needs (N, D) features and (N, K) logits of N > 0 rows, got "
                            f"{tuple(features.shape)} and {tuple(logits.shape)}")
    if not (torch.isfinite(q).all() and torch.isfinite(f).all()):
        raise TTABenchError("GdScore: the logits or features contain NaN or infinite values")
    if not norm > 0 or batch_size < 1:
        raise TTABenchError(f"GdScore needs norm > 0 and batch_size >= 1, got {norm}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for start in range(0, q.shape[0], batch_size):
        batch = slice(start, start + batch_size)
        labels = pseudo_labels(q[batch], threshold, generator)
        gradient = classifier_gradient(f[batch], q[batch], labels)
        scores.append(gradient.abs().pow(norm).sum().pow(1.0 / norm).item())
    return sum(scores) / len(scores)
