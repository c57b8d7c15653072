"""Score + map baselines: Nuclear norm, MaNo, MDE and Dispersion.

Each returns a raw score of the source model's outputs on the target split (``value``) and no
estimate of its own: the host fits the score-to-accuracy map on the calibration splits, with
the same sets and functional forms as every other score estimator. The formulas are in
``ttabench.estimators.functional``.
"""

from __future__ import annotations

from typing import Any

from ttabench.api import EstimateResult, Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.estimators import functional


class NuclearNorm(StaticEstimator):
    """``||P||_* / sqrt(N * min(N, K))`` of the softmax matrix; higher = higher accuracy."""

    name = "nuclear"
    kind = "score"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=functional.nuclear_norm_score(target.logits))


class MaNo(StaticEstimator):
    """MaNo: entry-wise 4-norm of normalised logits; higher = higher accuracy.

    ``extras["branch"]`` says which normalisation fired (``softmax`` or ``taylor``).
    """

    name = "mano"
    kind = "score"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        score, branch = functional.mano_score(target.logits, return_branch=True)
        return EstimateResult(value=score, extras={"branch": branch})


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
    feature mean (penultimate features); higher = higher accuracy."""

    name = "dispersion"
    kind = "score"
    needs = frozenset({"features"})

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        if target.features is None:
            raise TTABenchError(
                "the dispersion estimator needs penultimate features, but the host passed none"
            )
        return EstimateResult(value=functional.dispersion_score(target.features, target.logits))
