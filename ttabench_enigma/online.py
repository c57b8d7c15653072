"""``enigma-online``: an online accuracy estimate per window of an adapting stream.

For window ``w`` (steps ``[wW, (w+1)W)``) the estimator takes

- ``conf_w``: the mean max-softmax of the adapter's online logits in the window's steps;
- ``flips_w``, ``collapse_w``: the drift signal (``ttabench_enigma.drift``) of the adapted model
  at the window's last step, on the rolling probe of the last ``probe_batches`` batches,
  against the pristine model;

and estimates the adapted model's online accuracy in the window as

    acc_w = clip(c0 + c_conf * conf_w + c_flips * flips_w + c_collapse * collapse_w, 0, 1)

with coefficients fitted by least squares on calibration streams (the ``online`` part of a
guard settings file, ``ttabench_enigma.guard_settings``). Without a fit (coefficients
``(0, 1, 0, 0)``) it is the average confidence of the window.
"""

from __future__ import annotations

from typing import Any

import torch

from ttabench.api import (
    Adapter,
    EstimateResult,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
    TTABenchError,
)
from ttabench_enigma.drift import RollingProbe
from ttabench_enigma.guard_settings import DEFAULT_ID, load_settings

FEATURES: tuple[str, ...] = ("conf", "flips", "collapse")


def window_estimate(coefficients: tuple[float, ...], confidence: float, flips: float,
                    collapse: float) -> float:
    """``clip(c0 + c_conf * conf + c_flips * flips + c_collapse * collapse, 0, 1)``."""
    c0, c_conf, c_flips, c_collapse = coefficients
    return min(1.0, max(0.0, c0 + c_conf * confidence + c_flips * flips + c_collapse * collapse))


class OnlineFlips(TrajectoryEstimator):
    """Per-window estimate of the online accuracy from confidence, flips and collapse.

    ``window``: steps per window (the host gives it the stream's window; another is refused);
    ``settings``: where the coefficients come from (a shipped id or a JSON file).
    """

    name = "enigma-online"
    target = "adapted"
    kind = "direct"

    def __init__(self, window: int = 20, settings: str = DEFAULT_ID) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise TTABenchError(f"enigma-online window must be an integer >= 1, got {window!r}")
        self.window = int(window)
        fitted = load_settings(settings)
        self.settings_id = fitted.id
        self.coefficients = fitted.coefficients
        self.probe_batches = fitted.probe_batches
        self.reset()

    def reset(self) -> None:
        self.probe = RollingProbe(self.probe_batches)
        self.features: list[tuple[float, float, float]] = []
        self._confidence_sum = 0.0
        self._steps_in_window = 0

    def plan(self) -> TrajectoryPlan:
        """No fixed probe or checkpoints: the probe rolls along the stream in ``on_step``."""
        return TrajectoryPlan(probe_size=0, checkpoints=())

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        """Unused: the rolling probe is kept in ``on_step``."""

    def on_step(self, step: int, x: torch.Tensor, logits: torch.Tensor, adapter: Adapter) -> None:
        self.probe.add(x, adapter)
        self._confidence_sum += float(logits.softmax(1).max(1).values.mean())
        self._steps_in_window += 1
        if step % self.window == 0:
            self._close_window(adapter)

    def _close_window(self, adapter: Adapter) -> None:
        signal = self.probe.measure(adapter)
        confidence = self._confidence_sum / self._steps_in_window
        self.features.append((confidence, signal.flips, signal.collapse))
        self._confidence_sum = 0.0
        self._steps_in_window = 0

    def window_results(self, window: int) -> list[EstimateResult]:
        """One estimate per complete window of ``window`` steps (the one it was built for), with
        the window's ``conf``, ``flips`` and ``collapse`` as its scores."""
        if window != self.window:
            raise TTABenchError(f"enigma-online was built for windows of {self.window} steps, "
                                f"the stream uses {window}; pass window={window}")
        out = []
        for features in self.features:
            estimate = window_estimate(self.coefficients, *features)
            out.append(EstimateResult(value=estimate, estimate=estimate,
                                      scores=dict(zip(FEATURES, features))))
        return out

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        """The mean of the window estimates (an estimate of the whole stream's online accuracy)."""
        estimates = [r.value for r in self.window_results(self.window)]
        if not estimates:
            raise TTABenchError(f"enigma-online saw fewer than {self.window} steps")
        value = sum(estimates) / len(estimates)
        return EstimateResult(value=value, estimate=value, extras={"windows": estimates})

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "settings": self.settings_id,
                "coefficients": list(self.coefficients), "probe_batches": self.probe_batches}
