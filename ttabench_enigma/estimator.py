"""Weighted Flips estimators: the score is how many probe predictions adaptation flips.

The host runs one adaptation trajectory (RDumb unless the user names another adapter) and
hands each estimator the adapter's ``predict`` logits on the probe at the planned checkpoints.
Those snapshots see the model with test-batch normalization statistics, so the flips track the
accuracy of the batch-statistics model: ``WeightedFlips`` declares target ``bn``.

Probe smaller than requested (a split with fewer images than ``probe_size``): refused by the
runner with a one-line error unless ``small_probe="rescale"``; then the flip scores
are rescaled to the requested probe size, ``score * requested / actual``, the paper's own rule
for a 100-image probe ("multiply WF by 10 and use the 1000-image f"). The factor is recorded in
``extras["rescale"]``.

Limited memory (the paper's ablation): a 100-image probe with ``flip_scale=10`` multiplies the
flip scores by 10 so the 1,000-image f applies; a calibration is checked against the effective
probe size ``probe_size * flip_scale``.

Probe draw: ``probe_draw="stream"`` (the default) takes the probe from the start of the
adaptation stream; ``"reference"`` from a separate shuffled pass, as the reference code does
(see ``ttabench.runner.stream``). ``faithful=True`` uses the reference draw.

Confidences are max softmax probabilities computed in float64 at temperature 1 (see
``ttabench_enigma.flips`` on why a temperature would matter).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import torch

from ttabench.api import (
    PROBE_DRAWS,
    Calibration,
    EstimateResult,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
    TTABenchError,
    source_val_temperature,
)
from ttabench_enigma.calibrations import load_calibration
from ttabench_enigma.flips import flip_curve

#: The reference protocol (oripress/EntropyEnigma): probe 1000 drawn from a separate shuffled
#: pass, snapshots at 0 and 990, chunks of 100. The batch size (64) and the adapter are the
#: runner's.
REFERENCE = {"probe_size": 1000, "checkpoints": (0, 990), "estimate_at": 990, "chunk": 100,
             "probe_draw": "reference", "flip_scale": 1.0}


class WeightedFlips(TrajectoryEstimator):
    """WF at ``estimate_at`` (a score; a calibration maps it to an accuracy).

    Parameters: ``probe_size`` images from the start of the stream; ``checkpoints`` (step 0 is
    always added); ``estimate_at`` (default: the last checkpoint) gives ``value``; ``weighted``
    (False: the plain flip count); ``calibration`` (a shipped id or a JSON path: then
    ``estimate = f(value)`` as a fraction, after checking the calibration's estimator, input
    score, steps, probe size, number of classes and, when the context carries a ``model_id``,
    the model, unless ``force_calibration``); ``chunk`` probe
    images per forward pass; ``faithful`` refuses anything but the reference protocol;
    ``probe_draw`` (``"stream"``, or ``"reference"``, the default when faithful);
    ``flip_scale`` multiplies the flip scores (10 with a 100-image probe: the paper's
    limited-memory rule). ``scores`` holds ``wf@k`` and ``u@k`` for every checkpoint ``k > 0``.
    """

    name: ClassVar[str] = "enigma"
    target = "bn"
    kind = "score"
    #: The adapter the runner uses when the user names none.
    default_adapter: ClassVar[str] = "rdumb"

    def __init__(
        self,
        probe_size: int = 1000,
        checkpoints: Iterable[int] = (0, 990),
        estimate_at: int | None = None,
        weighted: bool = True,
        calibration: str | Path | None = None,
        force_calibration: bool = False,
        chunk: int = 100,
        faithful: bool = False,
        small_probe: str = "error",
        probe_draw: str | None = None,
        flip_scale: float = 1.0,
    ) -> None:
        if small_probe not in ("error", "rescale"):
            raise TTABenchError(
                f"{self.name}: small_probe must be 'error' or 'rescale', got {small_probe!r}"
            )
        self.small_probe = small_probe
        probe_draw = ("reference" if faithful else "stream") if probe_draw is None else probe_draw
        if probe_draw not in PROBE_DRAWS:
            raise TTABenchError(
                f"{self.name}: probe_draw must be one of {', '.join(PROBE_DRAWS)}, "
                f"got {probe_draw!r}"
            )
        self.probe_draw = probe_draw
        if isinstance(flip_scale, bool) or not isinstance(flip_scale, (int, float)) \
                or not flip_scale > 0:
            raise TTABenchError(f"{self.name}: flip_scale must be a positive number, "
                                f"got {flip_scale!r}")
        self.flip_scale = float(flip_scale)
        if not isinstance(probe_size, int) or probe_size < 1:
            raise TTABenchError(
                f"{self.name}: probe_size must be a positive integer, got {probe_size!r}"
            )
        if not isinstance(chunk, int) or chunk < 1:
            raise TTABenchError(f"{self.name}: chunk must be a positive integer, got {chunk!r}")
        given = [] if isinstance(checkpoints, (str, bytes)) else list(checkpoints)
        valid = all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in given)
        steps = sorted({0, *given}) if valid else []
        if len(steps) < 2:
            raise TTABenchError(
                f"{self.name}: checkpoints must be non-negative integers with at least one > 0, "
                f"got {checkpoints!r}"
            )
        estimate_at = steps[-1] if estimate_at is None else estimate_at
        if estimate_at not in steps or estimate_at == 0:
            raise TTABenchError(
                f"{self.name}: estimate_at={estimate_at!r} must be one of the checkpoints > 0 "
                f"{steps[1:]}"
            )
        self.probe_size = probe_size
        self.checkpoints = tuple(steps)
        self.estimate_at = estimate_at
        self.weighted = bool(weighted)
        self.chunk = chunk
        self.faithful = bool(faithful)
        self.force_calibration = bool(force_calibration)
        if self.faithful:
            used = {
                "probe_size": probe_size,
                "checkpoints": self.checkpoints,
                "estimate_at": estimate_at,
                "chunk": chunk,
                "probe_draw": probe_draw,
                "flip_scale": self.flip_scale,
            }
            wrong = {k: v for k, v in used.items() if v != REFERENCE[k]}
            if wrong:
                raise TTABenchError(
                    f"{self.name}: faithful=True is the reference protocol {REFERENCE}, "
                    f"but got {wrong}; drop faithful or those parameters"
                )
        self.calibration_arg = None if calibration is None else str(calibration)
        self.calibration: Calibration | None = None
        if calibration is not None:
            self.calibration = load_calibration(calibration)
            self._check_calibration({})
        self._snapshots: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._logits0: torch.Tensor | None = None
        self._scores: dict[str, float] = {}
        self._steps_run = 0

    # ------------------------------------------------------------------ protocol

    @property
    def score_input(self) -> str:
        """The calibration ``input`` this estimator's ``value`` matches."""
        return "weighted_flips" if self.weighted else "flips"

    def params(self) -> dict[str, Any]:
        cal = self.calibration
        return {
            "probe_size": self.probe_size,
            "checkpoints": list(self.checkpoints),
            "estimate_at": self.estimate_at,
            "weighted": self.weighted,
            "calibration": None if cal is None else cal.id,
            "calibration_source": self.calibration_arg,
            "calibration_coefficients": None if cal is None else list(cal.coefficients),
            "force_calibration": self.force_calibration,
            "chunk": self.chunk,
            "faithful": self.faithful,
            "small_probe": self.small_probe,
            "probe_draw": self.probe_draw,
            "flip_scale": self.flip_scale,
        }

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(self.probe_size, self.checkpoints, self.chunk, self.probe_draw)

    def reset(self) -> None:
        self._snapshots = {}
        self._logits0 = None
        self._scores = {}
        self._steps_run = 0

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        """Keep argmax class and max softmax probability per probe image at a planned step."""
        if step not in self.checkpoints:
            return
        if probe_logits.ndim != 2:
            raise TTABenchError(
                f"{self.name}: probe logits must be (n, classes), got shape "
                f"{tuple(probe_logits.shape)}"
            )
        logits = probe_logits.detach().double().cpu()
        conf, pred = torch.softmax(logits, dim=1).max(dim=1)
        self._snapshots[step] = (pred, conf)
        if step == 0:
            self._logits0 = logits

    def temperature(self, context: TrajectoryContext) -> float:
        """The temperature of the step-0 confidences that weight the flips (1: none)."""
        return 1.0

    # ------------------------------------------------------------------ computing

    def check_calibration(self, run: dict[str, Any]) -> None:
        """Refuse unless a calibration is held and fits a run with these facts (model id,
        number of classes), as ``compute`` would: ``ttabench estimate`` asks before any work."""
        if self.calibration is None:
            super().check_calibration(run)
        self._check_calibration(run)

    def _check_calibration(self, run_facts: dict[str, Any]) -> None:
        """Refuse a calibration fitted for another estimator, score or protocol unless forced."""
        cal = self.calibration
        if cal is None or self.force_calibration:
            return
        if cal.input != self.score_input:
            raise TTABenchError(
                f"calibration {cal.id!r} maps {cal.input!r} but {self.name} produces "
                f"{self.score_input!r}; use a matching calibration or force_calibration=True"
            )
        if cal.estimator != self.name:
            raise TTABenchError(
                f"calibration {cal.id!r} was fitted for estimator {cal.estimator!r}, not "
                f"{self.name!r}; fit one for it (`ttabench fit --estimator {self.name}`) or "
                "force_calibration=True"
            )
        probe = self.probe_size * self.flip_scale
        cal.check({"steps": self.estimate_at,
                   "probe_size": int(probe) if float(probe).is_integer() else probe, **run_facts})

    def _flip_scores(self, context: TrajectoryContext) -> tuple[dict[str, float], dict[str, Any]]:
        """Rescaled ``wf@k`` (weighted) or ``u@k`` (unweighted) scores, one per checkpoint, and
        the raw flip curve (both kinds) in ``extras``."""
        missing = [k for k in self.checkpoints if k not in self._snapshots]
        if missing:
            raise TTABenchError(
                f"{self.name}: no probe snapshot at step(s) {missing} (the trajectory ran "
                f"{context.steps_run} steps); the runner must reach every planned checkpoint"
            )
        pred0, conf0 = self._snapshots[0]
        temperature = self.temperature(context)
        if temperature != 1.0:  # argmax is unchanged; the confidence ranks can change (K > 2)
            conf0 = torch.softmax(self._logits0 / temperature, dim=1).max(dim=1).values
        n = len(pred0)
        if n != context.probe_size or n > self.probe_size:
            raise TTABenchError(
                f"{self.name}: got {n} probe images but the context says {context.probe_size} "
                f"(requested {self.probe_size})"
            )
        rescale = self.probe_size / n * self.flip_scale
        curve = flip_curve(pred0, conf0, {k: self._snapshots[k][0] for k in self.checkpoints[1:]})
        kind = "wf" if self.weighted else "u"
        scores = {f"{kind}@{k}": c[kind] * rescale for k, c in curve.items()}
        extras = {
            "flip_curve": [{"step": k, "wf": c["wf"], "u": c["u"]} for k, c in curve.items()],
            "probe_size": n,
            "probe_size_requested": self.probe_size,
            "rescale": rescale,
            "temperature": temperature,
        }
        return scores, extras

    def _result(
        self,
        value: float,
        scores: dict[str, float],
        extras: dict[str, Any],
        context: TrajectoryContext,
    ) -> EstimateResult:
        estimate = None
        if self.calibration is not None:
            # the model's own class count: a 1000-class model's f holds on a 200-class subset
            classes = context.model_num_classes or context.num_classes
            self._check_calibration({"num_classes": classes, "model": context.model_id,
                                     "precision": context.precision})
            estimate = float(self.calibration(value))
            extras["calibration"] = {
                "id": self.calibration.id,
                "target": self.calibration.target,
                "forced": self.force_calibration,
            }
        return EstimateResult(value=float(value), estimate=estimate, scores=scores, extras=extras)

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        scores, extras = self._flip_scores(context)
        self._scores, self._steps_run = scores, context.steps_run
        value = scores[f"{'wf' if self.weighted else 'u'}@{self.estimate_at}"]
        return self._result(value, scores, extras, context)

    def window_results(self, window: int) -> list[EstimateResult] | None:
        """Per window ``w`` the flip score at its last step, ``wf@k`` with ``k = (w + 1) W``
        (the drift of the probe since step 0): a score a map fitted on calibration windows
        turns into the window's online accuracy. Only when every complete window ends at a
        checkpoint (``checkpoints`` every ``W`` steps); else None."""
        kind = "wf" if self.weighted else "u"
        found = [self._scores.get(f"{kind}@{(w + 1) * window}")
                 for w in range(self._steps_run // window)]
        if not found or None in found:
            return None
        return [EstimateResult(value=float(v)) for v in found]


class UnweightedFlips(WeightedFlips):
    """The plain flip count U at ``estimate_at`` (``WeightedFlips`` with ``weighted=False``)."""

    name: ClassVar[str] = "enigma-unweighted"

    def __init__(self, **params: Any) -> None:
        if "weighted" in params:
            raise TTABenchError(
                "enigma-unweighted takes no 'weighted' parameter; use enigma instead"
            )
        super().__init__(weighted=False, **params)


class WeightedFlipsSource(WeightedFlips):
    """A score for the frozen eval-mode (source) model's accuracy.

    Flips only see the batch-statistics model; the frozen model with running statistics can
    collapse (one class for everything) while the batch-statistics model is fine. So the
    score also uses ``a``, the agreement rate on the probe between the frozen model's
    predictions and the step-0 batch-statistics predictions::

        value = (1 - WF / WF_max) * a,   WF_max = (n + 1) / 2   (n for unweighted flips)

    Reasoning: ``1 - WF / WF_max`` is a normalized non-flip mass, a proxy that rises with the
    bn accuracy; and acc_source >= P(frozen agrees with bn, bn correct) = acc_bn *
    P(agree | bn correct), which is about acc_bn * a when agreement does not depend on whether
    the bn prediction is right. A collapsed frozen model agrees on about 1/classes of the probe
    and scores near 0. ``value`` is a score: a calibration (input ``wf_agreement``) maps it.
    """

    name: ClassVar[str] = "enigma-source"
    target = "source"

    @property
    def score_input(self) -> str:
        return "wf_agreement"

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        scores, extras = self._flip_scores(context)
        pred0 = self._snapshots[0][0]
        n = len(pred0)
        source_logits = context.probe_source_logits
        if source_logits.ndim != 2 or len(source_logits) != n:
            raise TTABenchError(
                f"{self.name}: probe_source_logits must be ({n}, classes), got shape "
                f"{tuple(source_logits.shape)}"
            )
        agreement = float((source_logits.argmax(dim=1).cpu() == pred0).double().mean())
        kind, flips_max = ("wf", (n + 1) / 2) if self.weighted else ("u", float(n))
        combined = {f"{kind}a@{c['step']}": (1.0 - c[kind] / flips_max) * agreement
                    for c in extras["flip_curve"]}
        extras["agreement"] = agreement
        extras["flip_scores"] = scores
        value = combined[f"{kind}a@{self.estimate_at}"]
        return self._result(value, combined, extras, context)


class WeightedFlipsTS(WeightedFlips):
    """WF whose step-0 confidences are temperature-scaled before ranking (``enigma+ts``).

    One temperature ``T = argmin_T NLL(softmax(z / T), y)`` is fitted on the labelled
    source-validation outputs of the frozen model in eval mode (the reference code fitted it
    with the model left in train mode). Predictions, hence flips, do not depend on T; the
    weights ``rank(max softmax(z0 / T)) / n`` can, with more than two classes. Reported as a
    separate entry; needs the suite's labelled validation split.
    """

    name: ClassVar[str] = "enigma+ts"
    needs = frozenset({"source_val"})

    def temperature(self, context: TrajectoryContext) -> float:
        val = context.source_val
        if val is None or val.labels is None:
            raise TTABenchError(f"{self.name} needs labelled source-validation outputs")
        return float(source_val_temperature(val))


__all__ = ["REFERENCE", "UnweightedFlips", "WeightedFlips", "WeightedFlipsSource", "WeightedFlipsTS"]
