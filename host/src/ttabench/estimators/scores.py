"""Score + map baselines: Nuclear norm, MaNo, MDE and Dispersion.

Each returns a raw score of one model view's outputs on the target split (``value``) and no
estimate of its own: the host fits the score-to-accuracy map on the calibration splits, with
the same sets and functional forms as every other score estimator. The formulas are in
``ttabench.estimators.functional``.
"""

from __future__ import annotations

from typing import Any

from ttabench.api import EstimateResult, Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.estimators import derived, functional


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
        if target.features is None:
            raise TTABenchError(
                "the dispersion estimator needs penultimate features, but the host passed none"
            )
        return EstimateResult(value=functional.dispersion_score(target.features, target.logits,
                                                                self.normaliser))

    def params(self) -> dict[str, Any]:
        return {"normaliser": self.normaliser}
