"""``lame``: Laplacian-adjusted maximum likelihood on the frozen model's outputs.

Follows fiveai/LAME ``src/adaptation/lame.py`` (``LAME.run_step``, ``rbf_affinity``,
``kNN_affinity``, ``linear_affinity``, ``laplacian_optimization``, ``entropy_energy``) with the
defaults of ``configs/method/best/LAME/overall_best.yaml`` and ``src/config/defaults.py``
(rbf affinity, knn 5; their ``LAME_SIGMA`` is read by no affinity, so it is not a
parameter here); mariodoebler/test-time-adaptation
``methods/lame.py`` uses the same for CIFAR- and ImageNet-scale data. The model is never
updated (eval mode, running statistics). Per batch of N images:

- unary u_ik = -log(p_ik + 1e-10), p the model's softmax;
- features z_i: the input of the model's classifier (its last ``nn.Linear``, or ``classifier=``),
  L2-normalized; affinity W: rbf W_ij = exp(-|z_i - z_j|^2 / (2 s^2)) with s the mean over i
  of the distance to i's ``knn``-th nearest point counting i itself; kNN W_ij = 1 for the
  ``knn`` nearest j != i; linear W = Z Z^T;
- Y <- softmax(-u) then, at most 100 times, Y <- softmax(-u + W Y), stopping once the energy
  E(Y) = sum(u Y - (W Y) Y + Y log max(Y, 1e-20)) changes by at most 1e-8 |E| (from the
  third iteration on).

A batch of one image (the first step of a sliding window, ``--batch-size 1``): their rbf scale
is 0 and their code gives NaN; here W = (1), the diagonal every rbf affinity has (kNN: W = 0,
as theirs; linear: W = (1), as theirs).

The adapter returns the logits -u + W Y of the last iteration, whose softmax is LAME's Y.
``predict`` computes the same (no state: a step changes nothing).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.adaptation.checks import check_choice, check_positive_int
from ttabench.api import Adapter, find_classifier
from ttabench.errors import TTABenchError

AFFINITIES = ("rbf", "kNN", "linear")


def affinity_matrix(features: torch.Tensor, kind: str, knn: int) -> torch.Tensor:
    """W (N, N) over L2-normalized features (see the module docstring)."""
    n = features.shape[0]
    if kind == "linear":
        return features @ features.T
    distances = torch.norm(features.unsqueeze(0) - features.unsqueeze(1), dim=-1, p=2)
    if kind == "kNN":
        nearest = distances.topk(min(knn + 1, n), -1, largest=False).indices[:, 1:]
        return torch.zeros(n, n, device=features.device).scatter_(-1, nearest, 1.0)
    if n == 1:  # the rbf scale of one point is 0 (their code: 0/0, NaN); its diagonal is 1
        return torch.ones(1, 1, device=features.device)
    scale = distances.topk(min(knn, n), -1, largest=False).values[:, -1].mean()
    return torch.exp(-distances.pow(2) / (2 * scale.pow(2)))


def laplacian_assignment(unary: torch.Tensor, kernel: torch.Tensor, *, bound_lambda: float = 1.0,
                         max_steps: int = 100) -> tuple[torch.Tensor, int]:
    """The last iteration's logits (-u + lambda W Y) and the number of iterations run."""
    assignment = (-unary).softmax(-1)
    exponent = -unary
    previous = float("inf")
    for i in range(max_steps):
        pairwise = bound_lambda * kernel.matmul(assignment)
        exponent = -unary + pairwise
        assignment = exponent.softmax(-1)
        energy = float((unary * assignment - bound_lambda * pairwise * assignment
                        + assignment * torch.log(assignment.clip(1e-20))).sum())
        if i > 1 and abs(energy - previous) <= 1e-8 * abs(previous):
            return exponent, i + 1
        previous = energy
    return exponent, max_steps


class LAME(Adapter):
    """LAME: Laplacian-adjusted maximum likelihood on the frozen model's outputs.

    ``affinity`` rbf | kNN | linear, ``knn`` neighbours,
    ``force_symmetry`` averages W with its transpose, ``classifier`` names the head whose input
    are the features (default: the last ``nn.Linear``)."""

    name = "lame"

    def __init__(self, model: nn.Module, *, affinity: str = "rbf", knn: int = 5,
                 force_symmetry: bool = False, max_steps: int = 100,
                 classifier: str | None = None) -> None:
        super().__init__(model.eval().requires_grad_(False))
        self.affinity = check_choice("affinity", affinity, AFFINITIES)
        self.knn = check_positive_int("knn", knn)
        self.force_symmetry = bool(force_symmetry)
        self.max_steps = check_positive_int("max_steps", max_steps)
        self.classifier = classifier if classifier is not None else find_classifier(self.model)
        if self.classifier is None:
            raise TTABenchError("lame needs the model's penultimate features: the model has no "
                                "nn.Linear head; name its classifier with classifier=...")
        try:
            self.head = self.model.get_submodule(self.classifier)
        except AttributeError:
            raise TTABenchError(f"lame: the model has no module {self.classifier!r}") from None
        self.steps = 0
        self.last_iterations = 0

    @torch.no_grad()
    def adjusted(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        captured: list[torch.Tensor] = []
        handle = self.head.register_forward_hook(
            lambda _m, inputs, _out: captured.append(inputs[0]))
        try:
            logits = self.model(x)
        finally:
            handle.remove()
        unary = -torch.log(logits.softmax(dim=1) + 1e-10)
        features = F.normalize(captured[-1].flatten(1), p=2, dim=-1)
        kernel = affinity_matrix(features, self.affinity, self.knn)
        if self.force_symmetry:
            kernel = 0.5 * (kernel + kernel.t())
        return laplacian_assignment(unary, kernel, max_steps=self.max_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, self.last_iterations = self.adjusted(x)
        self.steps += 1
        return logits

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.adjusted(x)[0]

    def reset(self) -> None:
        """Nothing to restore: the model never changes."""

    def params(self) -> dict[str, Any]:
        return {"affinity": self.affinity, "knn": self.knn, "force_symmetry": self.force_symmetry,
                "max_steps": self.max_steps, "bound_lambda": 1.0, "classifier": self.classifier}

    def counters(self) -> dict[str, Any]:
        return {"steps": self.steps, "last_iterations": self.last_iterations}
