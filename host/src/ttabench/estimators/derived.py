"""What the baselines derive from one ``Outputs`` object, computed once per object.

Each function here computes a quantity of one ``Outputs`` object through ``Outputs.derive``,
keyed by the quantity's name and parameters (the formulas are in
``ttabench.estimators.functional``). The host makes a view's target outputs once per (split,
view) and each view's source-val outputs once per process (``Benchmark.source_val``), so:

- COT and COTT solve the transport problem of a view's target outputs once (``transport_costs``);
- what is fitted on labelled source val (the ATC and COTT thresholds, DoC's val accuracy and
  confidence, the temperature of the ``+ts`` variants, MaNo's branch criterion) is fitted once
  per view per process, not once per cell.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ttabench.errors import TTABenchError
from ttabench.estimators import functional
from ttabench.estimators.functional import AtcScore, CottValidation, DocReference, ThresholdRank

if TYPE_CHECKING:  # ttabench.api re-exports this module's temperature: no import back at run time
    from ttabench.api import Outputs


def _labels(val: Outputs) -> torch.Tensor:
    if val.labels is None:
        raise TTABenchError("source-validation outputs without labels")
    return val.labels


def _marginal_key(source_marginal: list[float] | None) -> tuple[float, ...] | None:
    return None if source_marginal is None else tuple(source_marginal)


def _marginal(source_marginal: list[float] | None) -> torch.Tensor | None:
    return None if source_marginal is None else torch.tensor(source_marginal)


def transport_costs(outputs: Outputs, source_marginal: list[float] | None) -> torch.Tensor:
    """``functional.transport_costs`` of ``outputs.logits`` to ``source_marginal`` (uniform when
    None): the per-sample costs of the one exact transport problem COT and COTT share."""
    return outputs.derive(
        ("transport_costs", _marginal_key(source_marginal)),
        lambda: functional.transport_costs(outputs.logits, _marginal(source_marginal)))


def cott_threshold(val: Outputs, source_marginal: list[float] | None,
                   validation: CottValidation, rank: ThresholdRank) -> float:
    """``functional.cott_threshold`` on labelled source val (one transport problem on val)."""
    labels = _labels(val)
    return val.derive(
        ("cott_threshold", _marginal_key(source_marginal), validation, rank),
        lambda: functional.cott_threshold(val.logits, labels, _marginal(source_marginal),
                                          validation, rank))


def atc_threshold(val: Outputs, score: AtcScore, rank: ThresholdRank) -> float:
    """``functional.atc_threshold`` on labelled source val."""
    labels = _labels(val)
    return val.derive(("atc_threshold", score, rank),
                      lambda: functional.atc_threshold(val.logits, labels, score, rank))


def doc_reference(val: Outputs) -> DocReference:
    """``functional.doc_reference`` (val accuracy and confidence) on labelled source val."""
    labels = _labels(val)
    return val.derive(("doc_reference",), lambda: functional.doc_reference(val.logits, labels))


def temperature(val: Outputs) -> float:
    """``functional.fit_temperature`` on labelled source val."""
    labels = _labels(val)
    return val.derive(("temperature",), lambda: functional.fit_temperature(val.logits, labels))


def scaled(outputs: Outputs, temperature: float) -> Outputs:
    """``outputs`` with logits divided by ``temperature`` (labels kept, nothing else), one
    object per (outputs, temperature), so that what is derived from it is kept too."""
    return outputs.derive(("scaled", temperature),
                          lambda: type(outputs)(logits=outputs.logits / temperature,
                                                       labels=outputs.labels))


def mano_criterion(outputs: Outputs) -> float:
    """``functional.mano_criterion`` of ``outputs.logits``."""
    return outputs.derive(("mano_criterion",), lambda: functional.mano_criterion(outputs.logits))
