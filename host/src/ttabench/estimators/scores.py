"""Score + map baselines: Nuclear norm, MaNo, MDE, Dispersion and GdScore.

Each returns a raw score of one model view's outputs on the target split (``value``) and no
estimate of its own: the host fits the score-to-accuracy map on the calibration splits, with
the same sets and functional forms as every other score estimator. The formulas are in
``ttabench.estimators.functional``.
"""

from __future__ import annotations

from typing import Any

import torch

from ttabench.api import EstimateResult, Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.estimators import derived, functional, gradient_score


def require_features(name: str, outputs: Outputs) -> torch.Tensor:
    """The penultimate features of ``outputs``, or a clear error when the host passed none."""
    if outputs.features is None:
        raise TTABenchError(
            f"the {name} estimator needs penultimate features, but the host passed none")
    return outputs.features


class NuclearNorm(StaticEstimator):
    """``||P||_* / sqrt(N * min(N, K))`` of the softmax matrix; higher = higher accuracy."""

    name = "nuclear"
    kind = "score"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=functional.nuclear_norm_score(target.logits))


MANO_CRITERIA = ("source_val", "split")


class MaNo(StaticEstimator):
    """MaNo: entry-wise 4-norm of normalised logits; higher = higher accuracy.

    ``criterion``: where the softmax/Taylor choice is made. ``"source_val"`` (default, as the
    authors' code: once per model, reused for every shift) decides it on the view's source-val
    outputs, so every split of a view uses the same score function; ``"split"`` decides it on
    each split's own logits (the formula read per split). ``extras`` record the branch and the
    criterion value.
    """

    name = "mano"
    kind = "score"

    def __init__(self, criterion: str = "source_val") -> None:
        if criterion not in MANO_CRITERIA:
            raise TTABenchError(f"estimator 'mano': criterion must be one of "
                                f"{list(MANO_CRITERIA)}, got {criterion!r}")
        self.criterion = criterion
        self.needs = frozenset({"source_val"}) if criterion == "source_val" else frozenset()

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        if self.criterion == "source_val":
            if source_val is None:
                raise TTABenchError("estimator 'mano' decides its branch on source val, but the "
                                    "host passed none; set criterion = 'split'")
            phi = derived.mano_criterion(source_val)
        else:
            phi = functional.mano_criterion(target.logits)
        branch = functional.mano_branch(phi)
        score = functional.mano_score(target.logits, branch=branch)
        return EstimateResult(value=score, extras={"branch": branch, "criterion": phi})

    def params(self) -> dict[str, Any]:
        return {"criterion": self.criterion}


class MDE(StaticEstimator):
    """MDE score ``log(-MDE)`` on logits with energy temperature ``temperature``.

    The score grows as the energies of the samples spread out. The MDE paper reports MDE
    rising with accuracy, i.e. this score falling as accuracy rises (lower = higher accuracy);
    on the ``tiny`` suite with ``tiny-cnn`` it shows no consistent direction. The fitted map
    learns the direction.
    """

    name = "mde"
    kind = "score"

    def __init__(self, temperature: float = 1.0) -> None:
        self.temperature = float(temperature)

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=functional.mde_score(target.logits, self.temperature))

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}


class Dispersion(StaticEstimator):
    """Log of the count-weighted spread of predicted-class feature means around the global
    feature mean (penultimate features); higher = higher accuracy.

    ``normaliser``: ``"classes"`` (default, the authors' code: divide by L - 1, L the number of
    predicted classes) or ``"samples"`` (divide by N); see ``functional.dispersion_score``.
    """

    name = "dispersion"
    kind = "score"
    needs = frozenset({"features"})

    def __init__(self, normaliser: str = "classes") -> None:
        if normaliser not in functional.DISPERSION_NORMALISERS:
            raise TTABenchError(f"estimator 'dispersion': normaliser must be one of "
                                f"{list(functional.DISPERSION_NORMALISERS)}, got {normaliser!r}")
        self.normaliser = normaliser

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=functional.dispersion_score(
            require_features(self.name, target), target.logits, self.normaliser))

    def params(self) -> dict[str, Any]:
        return {"normaliser": self.normaliser}


class GdScore(StaticEstimator):
    """GdScore: the mean over target batches of the 0.3-norm of the last layer's weight
    gradient under pseudo-labels (penultimate features); lower = higher accuracy.

    ``threshold``, ``norm``, ``batch_size``: the authors' confidence threshold under which a
    pseudo-label is drawn at random (0.5), norm order (0.3) and batch size (128); ``seed``
    seeds those draws. The authors' code takes the gradient in train mode, i.e. with
    test-batch statistics: the ``bn`` view; in the ``source`` view it reads the frozen
    model. See ``ttabench.estimators.gradient_score``.
    """

    name = "gdscore"
    kind = "score"
    needs = frozenset({"features"})

    def __init__(self, threshold: float = gradient_score.THRESHOLD,
                 norm: float = gradient_score.NORM,
                 batch_size: int = gradient_score.BATCH_SIZE, seed: int = 0) -> None:
        if not (norm > 0 and isinstance(batch_size, int) and batch_size >= 1):
            raise TTABenchError(f"estimator 'gdscore': norm must be > 0 and batch_size an "
                                f"integer >= 1, got norm={norm}, batch_size={batch_size}")
        self.threshold, self.norm = float(threshold), float(norm)
        self.batch_size, self.seed = batch_size, int(seed)

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=gradient_score.gdscore(
            require_features(self.name, target), target.logits, self.threshold, self.norm, self.batch_size,
            self.seed))

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "norm": self.norm, "batch_size": self.batch_size,
                "seed": self.seed}
