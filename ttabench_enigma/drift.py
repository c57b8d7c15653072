"""The label-free drift signal of an adapting model, measured on a rolling probe.

The rolling probe is the last ``probe_batches`` batches the adapter saw (the current data,
whatever the stream has shifted to). On it, the adapted model and a pristine copy of the
adapter (the same adapter reset to its pretrained state, normalizing with the same batch
statistics) give predictions ``a_i`` and ``r_i`` with max-softmax confidences; then

- ``flips = WF(r, conf_r, a) / n = sum_i [r_i != a_i] * rank(conf_r)_i / n^2``: the Weighted
  Flips of the adapted model against its starting point, as a fraction of the probe (how far
  adaptation has moved the confident predictions);
- ``collapse = 1 - H(hist(a)) / H(hist(r))``, ``H`` the entropy of the histogram of predicted
  classes: how much of the class diversity of the pretrained model's predictions adaptation
  has lost. Entropy minimization's failing phase drives all predictions into few classes
  (``collapse`` near 1 - ln 2 / ln K at two classes), while adaptation that helps keeps the
  diversity of the data (``collapse`` near 0, or below 0);
- ``confidence``: the adapted model's mean max-softmax on the probe.
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass

import torch

from ttabench.api import Adapter
from ttabench_enigma.flips import weighted_flips


@dataclass(frozen=True)
class DriftSignal:
    """One measurement of the drift signal (see the module docstring)."""

    flips: float
    collapse: float
    confidence: float


def prediction_entropy(predictions: torch.Tensor, num_classes: int) -> float:
    """``H(hist) = -sum_k q_k ln q_k`` with ``q_k`` the fraction of predictions of class k."""
    q = torch.bincount(predictions, minlength=num_classes).double() / len(predictions)
    q = q[q > 0]
    return float(-(q * q.log()).sum())


def drift_signal(reference_logits: torch.Tensor, adapted_logits: torch.Tensor) -> DriftSignal:
    """The signal from the pristine and the adapted model's logits on the same probe."""
    num_classes = reference_logits.shape[1]
    ref_conf, ref_pred = reference_logits.softmax(1).max(1)
    conf, pred = adapted_logits.softmax(1).max(1)
    n = len(ref_pred)
    flips = weighted_flips(ref_pred, ref_conf, pred) / n
    h_ref = prediction_entropy(ref_pred, num_classes)
    h_adapted = prediction_entropy(pred, num_classes)
    collapse = 1.0 - h_adapted / h_ref if h_ref > 0 else 0.0
    return DriftSignal(flips=flips, collapse=collapse, confidence=float(conf.mean()))


class RollingProbe:
    """The last ``batches`` batches seen, and a pristine copy of the adapter to compare with.

    The copy is the adapter as it is when the probe first sees it, reset (``Adapter.reset``
    restores the pretrained state), so it never adapts afterwards.
    """

    def __init__(self, batches: int) -> None:
        if batches < 1:
            raise ValueError(f"a rolling probe needs at least one batch, got {batches}")
        self.batches: deque[torch.Tensor] = deque(maxlen=batches)
        self.reference: Adapter | None = None

    def set_reference(self, adapter: Adapter) -> None:
        """Keep a reset copy of ``adapter`` as the pristine model."""
        self.reference = copy.deepcopy(adapter)
        self.reference.reset()

    def add(self, x: torch.Tensor, adapter: Adapter) -> None:
        """Append a batch (the oldest leaves a full probe); the first call keeps the reference."""
        if self.reference is None:
            self.set_reference(adapter)
        self.batches.append(x.detach())

    @property
    def full(self) -> bool:
        return len(self.batches) == self.batches.maxlen

    def measure(self, adapter: Adapter) -> DriftSignal:
        """The drift signal of ``adapter`` on the probe (nothing adapts)."""
        if self.reference is None:
            raise ValueError("the rolling probe has seen no batch yet")
        probe = torch.cat(list(self.batches))
        return drift_signal(self.reference.predict(probe), adapter.predict(probe))

