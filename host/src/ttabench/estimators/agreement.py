"""Agreement: how often the frozen and the batch-statistics models predict the same class.

``score = mean_i [argmax_k frozen_ik = argmax_k bn_ik]`` over the split (``functional.agreement``),
mapped to an accuracy like any score. It is the agreement factor of estimators that multiply
one in, alone: those face their ablation in the same table.

The score compares two models, so it belongs to no single view: it is computed once, on the
``bn`` view (whose ``Outputs.frozen_logits`` hold the frozen model's logits on the same
samples), and scored in every target's table with a map fitted against that target.
"""

from __future__ import annotations

from ttabench.api import EstimateResult, Outputs, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.estimators import functional


class Agreement(StaticEstimator):
    """Frozen vs batch-statistics prediction agreement (score + map); higher = higher accuracy."""

    name = "agreement"
    kind = "score"
    view = "bn"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        if target.frozen_logits is None:
            raise TTABenchError("the agreement estimator needs the frozen model's logits on the "
                                "same samples, but the host passed none")
        return EstimateResult(value=functional.agreement(target.frozen_logits, target.logits))
