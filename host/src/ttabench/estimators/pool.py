"""Estimators that compare the cell's model with the other models of a pool.

Each is a ``PoolEstimator``: the host hands it, per view, the cell's model's outputs and its
peers' outputs of the same view (``Peers``). The formulas are in
``ttabench.estimators.agreement_line``.

- ``gde``: GDE, the agreement with the peers (direct);
- ``aline-s``, ``aline-d``: agreement-on-the-line, fitted on the pool's pairs on labelled
  source val (ID) and applied to the target split (OOD), in every view (direct);
- ``ttaline``: the same line on adapted models (Kim et al., NeurIPS 2024, "Test-Time
  Adaptation Induces Stronger Accuracy and Agreement-on-the-Line"): ALine computed on the
  ``adapted`` view only, where every model of the pool runs the run's adapter on the same
  stream; ID quantities come from that view's source-val outputs (the batch-statistics
  models every adapter starts from, see ``ttabench.runner.views``). Their code
  (github.com/EungyeupKim/TTALine) could not be read here; this follows the paper: ALine-S
  and ALine-D of Baek et al. applied unchanged to the adapted models' predictions.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch

from ttabench.api import EstimateResult, Outputs, Peers, PoolEstimator, Target
from ttabench.errors import TTABenchError
from ttabench.estimators.agreement_line import (
    AGREEMENT_LOW,
    AGREEMENT_HIGH,
    ALineResult,
    accuracy_of,
    aline,
    gde,
)


def _direct(accuracy: float, **extras: Any) -> EstimateResult:
    return EstimateResult(value=accuracy, estimate=accuracy, extras=extras)


def check_peers(name: str, peers: Peers, min_peers: int) -> None:
    """A TTABenchError unless at least ``min_peers`` peers were handed over."""
    if len(peers.model_ids) < min_peers:
        raise TTABenchError(f"estimator {name!r} compares models: it needs at least {min_peers} "
                            f"other model(s) of a pool, got {len(peers.model_ids)}")


class GDE(PoolEstimator):
    """GDE: the fraction of target samples on which the model and a peer predict the same
    class, averaged over the peers (``peer`` = one model id: that pair only)."""

    name = "gde"

    def __init__(self, peer: str | None = None) -> None:
        self.peer = peer

    def estimate(self, target: Outputs, source_val: Outputs | None, peers: Peers) -> EstimateResult:
        check_peers(self.name, peers, self.min_peers)
        chosen = list(zip(peers.model_ids, peers.target))
        if self.peer is not None:
            chosen = [(model, out) for model, out in chosen if model == self.peer]
            if not chosen:
                raise TTABenchError(f"estimator 'gde': peer {self.peer!r} is not in the pool "
                                    f"{list(peers.model_ids)}")
        return _direct(gde(target.logits, [out.logits for _, out in chosen]),
                       peers=[model for model, _ in chosen])

    def params(self) -> dict[str, Any]:
        return {"peer": self.peer or "all"}


class ALineS(PoolEstimator):
    """ALine-S: ``Phi(slope * Phi^-1(ID accuracy) + bias)`` with the agreement line of the
    pool (the model and its peers) fitted on pairs whose ID and OOD agreements lie in
    ``[low, high]``."""

    name = "aline-s"
    needs = frozenset({"source_val"})
    min_peers = 2  # a line needs two pairs: three models
    #: Which estimate of the fit is returned: ALine-S (``"s"``) or ALine-D (``"d"``).
    method: Literal["s", "d"] = "s"

    def __init__(self, low: float = AGREEMENT_LOW, high: float = AGREEMENT_HIGH) -> None:
        if not 0.0 < low < high < 1.0:
            raise TTABenchError(f"estimator {self.name!r}: need 0 < low < high < 1, got "
                                f"low={low}, high={high}")
        self.low, self.high = float(low), float(high)

    def fit(self, target: Outputs, source_val: Outputs | None, peers: Peers) -> ALineResult:
        """ALine over the pool, the estimated model first (index 0)."""
        check_peers(self.name, peers, self.min_peers)
        vals = [source_val, *peers.source_val]
        labelled = [(val.logits, val.labels) for val in vals
                    if val is not None and val.labels is not None]
        if len(labelled) != len(vals):
            raise TTABenchError(f"estimator {self.name!r} needs every model's labelled "
                                "source-validation outputs, but the host passed none for some")
        targets: list[torch.Tensor] = [target.logits, *(out.logits for out in peers.target)]
        return aline([logits.argmax(dim=1) for logits, _ in labelled],
                     [accuracy_of(logits, labels) for logits, labels in labelled],
                     [logits.argmax(dim=1) for logits in targets], self.low, self.high)

    def estimate(self, target: Outputs, source_val: Outputs | None, peers: Peers) -> EstimateResult:
        result = self.fit(target, source_val, peers)
        value = result.aline_s[0] if self.method == "s" else result.aline_d[0]
        if value is None:
            raise TTABenchError(
                f"estimator {self.name!r}: every pair of this model has an ID or OOD agreement "
                f"outside [{self.low}, {self.high}], so ALine-D has no equation for it")
        return _direct(value, slope=result.slope, bias=result.bias, pairs=len(result.pairs))

    def params(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high}


class ALineD(ALineS):
    """ALine-D: ``Phi(w_m)``, w the least-squares solution of one equation per kept pair
    (``ttabench.estimators.agreement_line.aline``)."""

    name = "aline-d"
    method = "d"


class TTALine(ALineS):
    """TTALine: agreement-on-the-line on the adapted models (the ``adapted`` view only);
    ``method``: ``"d"`` (ALine-D, default) or ``"s"`` (ALine-S)."""

    name = "ttaline"
    target = "adapted"
    views: ClassVar[tuple[Target, ...]] = ("adapted",)

    def __init__(self, method: str = "d", low: float = AGREEMENT_LOW,
                 high: float = AGREEMENT_HIGH) -> None:
        super().__init__(low, high)
        if method not in ("s", "d"):
            raise TTABenchError(f"estimator 'ttaline': method must be 's' or 'd', got {method!r}")
        self.method = "s" if method == "s" else "d"

    def params(self) -> dict[str, Any]:
        return {**super().params(), "method": self.method}
