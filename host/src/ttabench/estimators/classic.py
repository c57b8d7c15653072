"""Direct baseline estimators: AC, DoC, ATC, COT, COTT.

Each is computed once per model view (``ttabench.runner.views``) on that view's outputs and
source-val outputs, so it estimates the accuracy of the model that produced them. Each returns an accuracy fraction (``value == estimate``) computed by the pure functions in
``ttabench.estimators.functional``. The ``+ts`` variants fit one temperature T by NLL on the
labelled source-validation outputs and divide both the source-val and the target logits by T
before estimating; they do this themselves (the host hands them unscaled logits), and report T
in ``extras``. What they take from source val (thresholds, DoC's val accuracy and confidence,
T) and COT's and COTT's shared transport problem are derived once per ``Outputs`` object
(``ttabench.estimators.derived``): once per view per process, and once per (split, view).
"""

from __future__ import annotations

from typing import Any

from ttabench.api import EstimateResult, Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.estimators import derived, functional


def require_source_val(name: str, source_val: Outputs | None) -> Outputs:
    """The labelled source-val outputs, or a clear error when the host passed none."""
    if source_val is None or source_val.labels is None:
        raise TTABenchError(
            f"estimator {name!r} needs a labelled source-validation split; "
            "use a suite that provides one or drop this estimator"
        )
    return source_val


def _direct(accuracy: float) -> EstimateResult:
    return EstimateResult(value=accuracy, estimate=accuracy)


class AverageConfidence(StaticEstimator):
    """AC: the mean maximum softmax probability on the target split."""

    name = "ac"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return _direct(functional.average_confidence(target.logits))


class DifferenceOfConfidences(StaticEstimator):
    """DoC: source-val accuracy minus the drop in average confidence from val to target."""

    name = "doc"
    needs = frozenset({"source_val"})

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        val = require_source_val(self.name, source_val)
        functional.check_classes(val.logits, target.logits)
        return _direct(functional.doc_from_reference(derived.doc_reference(val), target.logits))


def check_choice(name: str, option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` when it is one of ``choices``, else a one-line error naming the option."""
    if value not in choices:
        raise TTABenchError(f"estimator {name!r}: {option} must be one of {list(choices)}, got {value!r}")
    return value


class ATCMaxConf(StaticEstimator):
    """ATC with the max-confidence score: threshold matched to the val error.

    ``rank``: ``"code"`` (default, the authors' code: ``t = s_(e)``) or ``"paper"``
    (``t = s_(e+1)``, e val errors); see ``functional.matched_threshold``.
    """

    name = "atc-mc"
    needs = frozenset({"source_val"})
    score: functional.AtcScore = "maxconf"

    def __init__(self, rank: str = "code") -> None:
        self.rank = check_choice(self.name, "rank", rank, functional.THRESHOLD_RANKS)

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        val = require_source_val(self.name, source_val)
        functional.check_classes(val.logits, target.logits)
        threshold = derived.atc_threshold(val, self.score, self.rank)
        return _direct(functional.atc_from_threshold(threshold, target.logits, self.score))

    def params(self) -> dict[str, Any]:
        return {"score": self.score, "rank": self.rank}


class ATCNegEntropy(ATCMaxConf):
    """ATC with the negative-entropy score ``sum_k p_k log p_k``."""

    name = "atc-ne"
    score = "negentropy"


class COT(StaticEstimator):
    """COT: one minus the optimal-transport cost from target predictions to the label marginal.

    ``source_marginal``: the source label distribution (K numbers summing to 1); uniform when
    not given.
    """

    name = "cot"

    def __init__(self, source_marginal: list[float] | None = None) -> None:
        self.source_marginal = source_marginal

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        costs = derived.transport_costs(target, self.source_marginal)
        return _direct(1.0 - costs.mean().item())

    def params(self) -> dict[str, Any]:
        return {"source_marginal": self.source_marginal or "uniform"}


class COTT(COT):
    """COTT: the fraction of target samples whose transport cost stays under a threshold
    matched to the source-val error.

    ``validation``: ``"labels"`` (default, the authors' code: val transported to its own
    one-hot labels) or ``"marginal"`` (val transported to the source marginal as the target
    is); ``rank`` as ATC's. See ``functional.cott``.
    """

    name = "cott"
    needs = frozenset({"source_val"})

    def __init__(self, source_marginal: list[float] | None = None, validation: str = "labels",
                 rank: str = "code") -> None:
        super().__init__(source_marginal)
        self.validation = check_choice(self.name, "validation", validation,
                                       functional.COTT_VALIDATIONS)
        self.rank = check_choice(self.name, "rank", rank, functional.THRESHOLD_RANKS)

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        val = require_source_val(self.name, source_val)
        functional.check_classes(val.logits, target.logits)
        threshold = derived.cott_threshold(val, self.source_marginal, self.validation, self.rank)
        costs = derived.transport_costs(target, self.source_marginal)
        return _direct(functional.cott_from_costs(threshold, costs))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "validation": self.validation, "rank": self.rank}


class _TemperatureScaled(StaticEstimator):
    """Mixin: fit T on source val, divide val and target logits by T, run the plain estimator."""

    needs = frozenset({"source_val"})

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        val = require_source_val(self.name, source_val)
        temperature = derived.temperature(val)
        result = super().estimate(derived.scaled(target, temperature),
                                  derived.scaled(val, temperature))
        result.extras["temperature"] = temperature
        return result


class AverageConfidenceTS(_TemperatureScaled, AverageConfidence):
    """AC after temperature scaling."""

    name = "ac+ts"


class DifferenceOfConfidencesTS(_TemperatureScaled, DifferenceOfConfidences):
    """DoC after temperature scaling."""

    name = "doc+ts"


class ATCMaxConfTS(_TemperatureScaled, ATCMaxConf):
    """ATC-MC after temperature scaling."""

    name = "atc-mc+ts"


class ATCNegEntropyTS(_TemperatureScaled, ATCNegEntropy):
    """ATC-NE after temperature scaling."""

    name = "atc-ne+ts"


class COTTS(_TemperatureScaled, COT):
    """COT after temperature scaling."""

    name = "cot+ts"
