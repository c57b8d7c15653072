"""Trajectory signals beyond Weighted Flips: what a probe's adaptation trajectory reveals.

Every signal is a function of the probe snapshots ``z_t`` (logits (n, K) of the adapter's
``predict`` at checkpoint t; ``p_t`` their argmax, ``q_t`` their softmax) and, for agreement,
of the frozen model's probe logits ``s``:

- ``flips@t``    F(t) = mean_i [p_0,i != p_t,i]  (the dense flip curve, one score per t);
- ``auc``        area under F over [0, T] by the trapezoid rule, divided by T;
- ``first_flip`` mean_i of tau_i / T, tau_i the first checkpoint where p_t,i != p_0,i
                 (T when it never flips);
- ``flip_backs`` mean_i [flipped at some checkpoint and p_T,i == p_0,i];
- ``mflips@t``   margin-weighted flips sum_i w_i [p_0,i != p_t,i] / sum_i w_i with
                 w_i = 1 - (q_0,i(1st) - q_0,i(2nd)) (uncertain images weigh more);
- ``eflips@t``   entropy-weighted flips, w_i = H(q_0,i) / log K;
- ``cflips@t``   class-balanced flip rate: mean over step-0 predicted classes c of
                 mean_{i: p_0,i = c} [p_0,i != p_t,i]; ``cmax@t`` the largest class's rate;
- ``cos@t``      logit drift: mean_i (1 - cos(z_0,i, z_t,i));
- ``l2@t``       relative logit drift: mean_i ||z_t,i - z_0,i|| / mean_i ||z_0,i||;
- ``agree``      a = mean_i [argmax s_i == p_0,i] (frozen vs batch-statistics agreement);
- ``fa@t``       (1 - F(t)) * a, and ``ca@t`` (1 - cos@t) * a: signals combined with agreement;
- ``conf0``      mean_i max q_0,i, the batch-statistics average confidence on the probe.

Logits, not embeddings: the probe snapshots hand logits to an estimator; with the classifier
frozen (norm-layer adaptation) ``z_t - z_0 = W (h_t - h_0)``, the embedding drift seen through
the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import torch

from ttabench.api import (
    EstimateResult,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
    TTABenchError,
)

#: Signals computed at every checkpoint t > 0 (named ``<stem>@t``).
PER_STEP = ("flips", "mflips", "eflips", "cflips", "cmax", "cos", "l2", "fa", "ca")
#: Signals of the whole trajectory.
WHOLE = ("auc", "first_flip", "flip_backs", "agree", "conf0")


def signal_names(checkpoints: Iterable[int]) -> list[str]:
    """Every score name ``TrajectorySignals`` produces for these checkpoints (0 included)."""
    steps = [k for k in sorted(set(checkpoints)) if k > 0]
    return [f"{stem}@{k}" for stem in PER_STEP for k in steps] + list(WHOLE)


def _weighted_flip_rate(flipped: torch.Tensor, weights: torch.Tensor) -> float:
    total = float(weights.sum())
    return float((weights * flipped).sum()) / total if total > 0 else 0.0


def class_flip_rates(pred0: torch.Tensor, flipped: torch.Tensor) -> dict[int, float]:
    """Flip rate among the probe images of each step-0 predicted class."""
    return {int(c): float(flipped[pred0 == c].double().mean()) for c in torch.unique(pred0)}


def trajectory_signals(
    snapshots: Mapping[int, torch.Tensor], source_logits: torch.Tensor
) -> dict[str, float]:
    """All signals of the module docstring from probe logits per checkpoint (0 required)."""
    if 0 not in snapshots or len(snapshots) < 2:
        raise TTABenchError("trajectory signals need the step-0 snapshot and one later one")
    steps = sorted(snapshots)
    z0 = snapshots[0].double()
    n, classes = z0.shape
    q0 = torch.softmax(z0, dim=1)
    pred0 = z0.argmax(dim=1)
    top2 = q0.topk(min(2, classes), dim=1).values
    margin_w = 1.0 - (top2[:, 0] - top2[:, -1]) if classes > 1 else torch.ones(n, dtype=z0.dtype)
    entropy = -(q0 * torch.log(q0.clamp_min(1e-300))).sum(dim=1)
    entropy_w = entropy / math.log(classes) if classes > 1 else torch.zeros(n, dtype=z0.dtype)
    agree = float((source_logits.argmax(dim=1).cpu() == pred0).double().mean())
    out: dict[str, float] = {}
    flips_by_step = {0: 0.0}
    ever = torch.zeros(n, dtype=torch.bool)
    first = torch.full((n,), float(steps[-1]), dtype=torch.float64)
    for k in steps[1:]:
        zk = snapshots[k].double()
        flipped = zk.argmax(dim=1) != pred0
        first = torch.where(flipped & ~ever, torch.tensor(float(k), dtype=torch.float64), first)
        ever |= flipped
        rate = float(flipped.double().mean())
        flips_by_step[k] = rate
        per_class = class_flip_rates(pred0, flipped)
        cos = float((1.0 - torch.cosine_similarity(z0, zk, dim=1)).mean())
        out.update({
            f"flips@{k}": rate,
            f"mflips@{k}": _weighted_flip_rate(flipped, margin_w),
            f"eflips@{k}": _weighted_flip_rate(flipped, entropy_w),
            f"cflips@{k}": sum(per_class.values()) / len(per_class),
            f"cmax@{k}": max(per_class.values()),
            f"cos@{k}": cos,
            f"l2@{k}": float((zk - z0).norm(dim=1).mean() / z0.norm(dim=1).mean().clamp_min(1e-12)),
            f"fa@{k}": (1.0 - rate) * agree,
            f"ca@{k}": (1.0 - cos) * agree,
        })
    last_flipped = snapshots[steps[-1]].argmax(dim=1) != pred0
    area = sum((flips_by_step[b] + flips_by_step[a]) / 2 * (b - a) for a, b in zip(steps, steps[1:]))
    out.update({
        "auc": area / steps[-1],
        "first_flip": float(first.mean()) / steps[-1],
        "flip_backs": float((ever & ~last_flipped).double().mean()),
        "agree": agree,
        "conf0": float(q0.max(dim=1).values.mean()),
    })
    return out


class TrajectorySignals(TrajectoryEstimator):
    """One trajectory signal (``signal``, a name of ``signal_names``) as the score of the
    batch-statistics accuracy; ``scores`` holds every signal, so any can be mapped.

    Parameters: ``probe_size`` (500) images from the start of the stream, ``checkpoints``
    (0 is always added; default 0, 50, 100: three probe passes), ``signal`` (default the
    last checkpoint's flip rate), ``chunk`` probe images per forward pass.
    """

    name: ClassVar[str] = "enigma-signals"
    target = "bn"
    kind = "score"
    default_adapter: ClassVar[str] = "rdumb"

    def __init__(self, probe_size: int = 500, checkpoints: Iterable[int] = (0, 50, 100),
                 signal: str | None = None, chunk: int = 100) -> None:
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
        self.checkpoints = tuple(sorted({0, *given}))
        names = signal_names(self.checkpoints)
        signal = f"flips@{self.checkpoints[-1]}" if signal is None else signal
        if signal not in names:
            raise TTABenchError(f"{self.name}: unknown signal {signal!r} for checkpoints "
                                f"{list(self.checkpoints)}; choose from {', '.join(names)}")
        self.probe_size, self.signal, self.chunk = probe_size, signal, chunk
        self._snapshots: dict[int, torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        return {"probe_size": self.probe_size, "checkpoints": list(self.checkpoints),
                "signal": self.signal, "chunk": self.chunk}

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(self.probe_size, self.checkpoints, self.chunk, "stream")

    def reset(self) -> None:
        self._snapshots = {}

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        if step in self.checkpoints:
            if probe_logits.ndim != 2:
                raise TTABenchError(f"{self.name}: probe logits must be (n, classes), got "
                                    f"shape {tuple(probe_logits.shape)}")
            self._snapshots[step] = probe_logits.detach().double().cpu()

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        missing = [k for k in self.checkpoints if k not in self._snapshots]
        if missing:
            raise TTABenchError(f"{self.name}: no probe snapshot at step(s) {missing} (the "
                                f"trajectory ran {context.steps_run} steps)")
        scores = trajectory_signals(self._snapshots, context.probe_source_logits)
        return EstimateResult(value=scores[self.signal], scores=scores,
                              extras={"signal": self.signal,
                                      "probe_size": len(self._snapshots[0])})


class TrajectorySignalsSource(TrajectorySignals):
    """``TrajectorySignals`` as a score of the frozen (source) model's accuracy; the default
    signal is ``fa@T`` = (1 - F(T)) * agreement, which sees the frozen model through ``a``."""

    name: ClassVar[str] = "enigma-signals-source"
    target = "source"

    def __init__(self, probe_size: int = 500, checkpoints: Iterable[int] = (0, 50, 100),
                 signal: str | None = None, chunk: int = 100) -> None:
        steps = [] if isinstance(checkpoints, (str, bytes)) else list(checkpoints)
        last = max([k for k in steps if isinstance(k, int)], default=0)
        super().__init__(probe_size, checkpoints, signal or (f"fa@{last}" if last else None),
                         chunk)


__all__ = ["PER_STEP", "WHOLE", "TrajectorySignals", "TrajectorySignalsSource",
           "class_flip_rates", "signal_names", "trajectory_signals"]
