"""``enigma-stack`` / ``enigma-stack-source``: label-free features of one accuracy target,
stacked by the host.

Each cell's result carries named features (``scores``); the estimator's ``score_input`` is
the host's ``STACK_INPUT``, so the leaderboard fits one monotone stack over them on the
calibration cells (``ttabench.scoring.stack``: non-negative weights on standardised,
direction-oriented features, at most three, chosen by forward selection on
leave-one-dataset-out error; entry ``<name>[stack]``). Which features earn a place is decided
there, on calibration data only, never here.

Features (``n`` probe images, checkpoints ``k > 0`` of the trajectory):

- ``<view>:<est>`` for every estimator ``est`` of ``static`` (the host's static baselines,
  e.g. ``bn:atc-mc``): its value on that view's outputs of the whole split, computed by the
  host's own estimator on the very outputs the static estimators were given
  (``TrajectoryContext.views``: no forward pass, shared derived quantities). Views:
  ``bn`` for ``enigma-stack``; ``source`` and ``bn`` for ``enigma-stack-source``;
- ``agree``: the fraction of the split on which the frozen and the batch-statistics models
  predict the same class;
- ``u@k``: the flip rate ``mean_i [p_0,i != p_k,i]`` of the probe; ``wf@k``: Weighted Flips
  divided by its maximum ``(n + 1) / 2`` (``ttabench_enigma.flips``);
- ``enigma-stack-source`` only: ``fa@k = (1 - u@k) * agree`` and ``agree*bn:<est>`` for
  every direct estimator of ``static``: since acc_source >= acc_bn * P(agree | bn correct),
  an estimate of the bn accuracy times the agreement sees the frozen model (an additive stack
  cannot form that product itself).

``value`` is ``u@T`` (``fa@T`` for the source variant), T the last checkpoint, so the 1-D maps
of the leaderboard still apply to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch

from ttabench.api import (
    STACK_INPUT,
    EstimateResult,
    Outputs,
    StaticEstimator,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
    TTABenchError,
    get_plugin,
)
from ttabench_enigma.flips import flip_curve

#: The host's static estimators whose values are features (Dispersion needs penultimate
#: features, which the default run does not compute, so it is left out).
STATIC: tuple[str, ...] = ("ac", "ac+ts", "doc", "doc+ts", "atc-mc", "atc-mc+ts", "atc-ne",
                           "atc-ne+ts", "cot", "cot+ts", "cott", "nuclear", "mano", "mde")


def _static_estimator(name: str, owner: str) -> StaticEstimator:
    """An instance of the host's static estimator ``name`` computed in every view."""
    cls = get_plugin("estimators", name)
    if not (isinstance(cls, type) and issubclass(cls, StaticEstimator)) or cls.view is not None:
        raise TTABenchError(f"{owner}: static feature {name!r} must be a static estimator "
                            "computed in every view")
    return cls()


class StackFeatures(TrajectoryEstimator):
    """Features of the batch-statistics accuracy for the host's stack (module docstring).

    Parameters: ``probe_size`` images from the start of the stream, ``checkpoints`` (0 is
    always added), ``chunk`` probe images per forward pass, ``static`` the host's static
    estimators whose values are features.
    """

    name: ClassVar[str] = "enigma-stack"
    target = "bn"
    kind = "score"
    default_adapter: ClassVar[str] = "rdumb"
    #: The views whose static scores are features.
    feature_views: ClassVar[tuple[str, ...]] = ("bn",)

    def __init__(self, probe_size: int = 1000, checkpoints: Iterable[int] = (0, 50, 100, 150, 200),
                 chunk: int = 100, static: Iterable[str] = STATIC) -> None:
        if not isinstance(probe_size, int) or isinstance(probe_size, bool) or probe_size < 1:
            raise TTABenchError(f"{self.name}: probe_size must be a positive integer, "
                                f"got {probe_size!r}")
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise TTABenchError(f"{self.name}: chunk must be a positive integer, got {chunk!r}")
        given = [] if isinstance(checkpoints, (str, bytes)) else list(checkpoints)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in given) \
                or not any(k > 0 for k in given):
            raise TTABenchError(f"{self.name}: checkpoints must be non-negative integers with "
                                f"at least one > 0, got {checkpoints!r}")
        names = [static] if isinstance(static, str) else list(static)
        self.static = {name: _static_estimator(name, self.name) for name in names}
        self.probe_size, self.chunk = probe_size, chunk
        self.checkpoints = tuple(sorted({0, *given}))
        self._predictions: dict[int, torch.Tensor] = {}
        self._confidence0: torch.Tensor | None = None

    @property
    def score_input(self) -> str:
        return STACK_INPUT

    def params(self) -> dict[str, Any]:
        return {"probe_size": self.probe_size, "checkpoints": list(self.checkpoints),
                "chunk": self.chunk, "static": list(self.static)}

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(self.probe_size, self.checkpoints, self.chunk, "stream")

    def reset(self) -> None:
        self._predictions = {}
        self._confidence0 = None

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        if step not in self.checkpoints:
            return
        if probe_logits.ndim != 2:
            raise TTABenchError(f"{self.name}: probe logits must be (n, classes), got shape "
                                f"{tuple(probe_logits.shape)}")
        conf, pred = torch.softmax(probe_logits.detach().double().cpu(), dim=1).max(dim=1)
        self._predictions[step] = pred
        if step == 0:
            self._confidence0 = conf

    def _static_features(self, context: TrajectoryContext) -> dict[str, float]:
        out = {}
        for view in self.feature_views:
            if view not in context.views:
                raise TTABenchError(f"{self.name}: the host passed no {view!r} view outputs")
            outputs, source_val = context.views[view]
            for name, est in self.static.items():
                if "source_val" in est.needs and source_val is None:
                    continue
                if "features" in est.needs and outputs.features is None:
                    continue
                out[f"{view}:{name}"] = float(est.estimate(outputs, source_val).value)
        return out

    @staticmethod
    def _agreement(outputs: Outputs) -> float:
        if outputs.frozen_logits is None:
            raise TTABenchError("the stack's agreement needs the frozen model's logits")
        return float((outputs.frozen_logits.argmax(1) == outputs.logits.argmax(1)).double().mean())

    def features(self, context: TrajectoryContext) -> dict[str, float]:
        """Every feature of the module docstring for this estimator's target."""
        missing = [k for k in self.checkpoints if k not in self._predictions]
        if missing or self._confidence0 is None:
            raise TTABenchError(f"{self.name}: no probe snapshot at step(s) {missing} (the "
                                f"trajectory ran {context.steps_run} steps)")
        out = self._static_features(context)
        out["agree"] = self._agreement(context.views["bn"][0])
        pred0 = self._predictions[0]
        n = len(pred0)
        curve = flip_curve(pred0, self._confidence0,
                           {k: self._predictions[k] for k in self.checkpoints[1:]})
        for k, c in curve.items():
            out[f"u@{k}"] = c["u"] / n
            out[f"wf@{k}"] = c["wf"] / ((n + 1) / 2)
        return out

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        scores = self.features(context)
        last = self.checkpoints[-1]
        return EstimateResult(value=scores[f"u@{last}"], scores=scores,
                              extras={"features": len(scores), "probe_size": len(
                                  self._predictions[0])})


class StackFeaturesSource(StackFeatures):
    """Features of the frozen (source) model's accuracy: both views' static scores, and the
    agreement products of the module docstring; ``value`` is ``fa@T``."""

    name: ClassVar[str] = "enigma-stack-source"
    target = "source"
    feature_views: ClassVar[tuple[str, ...]] = ("source", "bn")

    def features(self, context: TrajectoryContext) -> dict[str, float]:
        out = super().features(context)
        agree = out["agree"]
        for k in self.checkpoints[1:]:
            out[f"fa@{k}"] = (1.0 - out[f"u@{k}"]) * agree
        for name, est in self.static.items():
            if est.kind == "direct" and f"bn:{name}" in out:
                out[f"agree*bn:{name}"] = agree * out[f"bn:{name}"]
        return out

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        result = super().compute(context)
        result.value = result.scores[f"fa@{self.checkpoints[-1]}"]
        return result


__all__ = ["STATIC", "StackFeatures", "StackFeaturesSource"]
