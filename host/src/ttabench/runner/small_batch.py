"""Batch statistics for batches smaller than a window: the sliding window of recent images.

A model that normalizes with test-batch statistics (BatchNorm in training mode, what most
adapters do) cannot get them from one image. mariodoebler/test-time-adaptation's single-sample
setting (``methods/base.py``, ``TTAMethod.forward`` with ``TEST.WINDOW_LENGTH``) keeps a buffer
of the last ``L`` images: each new image is predicted from a forward pass over the buffer (its
row of the output), and the model is updated once the buffer has been refilled with ``L`` new
images, on the buffer. ``SlidingWindow`` does the same around any adapter, for any batch size
``b < L`` (``L`` a multiple of ``b`` is the reference's ``b = 1`` case):

- ``forward(x)``: append ``x``, keep the last ``L`` images; when ``L`` images have arrived since
  the last update, one adaptation step on the buffer (``inner(buffer)``), else
  ``inner.predict(buffer)``; the logits of ``x`` are its rows of that output;
- ``predict(x)`` (probe snapshots, an estimator's extra passes) with fewer than ``L`` images:
  on ``x`` after the buffer's most recent ``L - len(x)`` images, the rows of ``x``.

The features of a step's logits are the last rows of the inner pass that gave them
(``feature_call``: the inner adapter's on an update, the one ``predict`` call otherwise).

While the buffer holds one image, BatchNorm1d layers (which have no spatial statistics) use
their running statistics, as the reference does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttabench.api import Adapter


class SlidingWindow(Adapter):
    """``inner`` with batch statistics over the last ``length`` images (see the module)."""

    name = "sliding-window"

    def __init__(self, inner: Adapter, length: int) -> None:
        super().__init__(inner.model)
        self.inner = inner
        self.length = int(length)
        self.buffer: torch.Tensor | None = None
        self.arrived = 0  # images since the last update
        self.updates = 0

    def _window(self, x: torch.Tensor, keep: int) -> torch.Tensor:
        if self.buffer is None or keep <= 0:
            return x
        return torch.cat([self.buffer[-keep:], x])

    def _run(self, fn: Any, window: torch.Tensor) -> torch.Tensor:
        lone = [m for m in self.model.modules()
                if isinstance(m, nn.BatchNorm1d) and m.training] if len(window) == 1 else []
        for module in lone:
            module.eval()
        try:
            logits: torch.Tensor = fn(window)
        finally:
            for module in lone:
                module.train()
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.buffer = self._window(x, self.length - len(x))
        self.arrived += len(x)
        if self.arrived >= self.length:
            self.arrived = 0
            self.updates += 1
            self.feature_call = self.inner.feature_call
            logits = self._run(self.inner, self.buffer)
        else:
            self.feature_call = None  # one predict call
            logits = self._run(self.inner.predict, self.buffer)
        return logits[-len(x):]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) >= self.length:
            return self.inner.predict(x)
        return self._run(self.inner.predict, self._window(x, self.length - len(x)))[-len(x):]

    def reset(self) -> None:
        self.inner.reset()
        self.buffer = None
        self.arrived = 0

    def params(self) -> dict[str, Any]:
        return self.inner.params()

    def counters(self) -> dict[str, Any]:
        return {**self.inner.counters(), "window_updates": self.updates}
