"""Continual scenarios: one stream that runs through a sequence of splits without a reset.

A scenario is fixed by a ``ScenarioSpec``: which splits (the suite's ``eval`` splits or its
``calibration`` splits, at the given severities), the seeded order they are visited in, the
steps spent on each, the window of online accuracy, and the kind of transition:

- ``sequence``: split ``order[k]`` fills steps ``[k * steps_per_split, (k + 1) * steps_per_split)``
  (the continual protocol of CoTTA/RDumb: all corruptions at severity 5, one after another);
- ``gradual``: a CCC-style mixture. At step ``t`` of segment ``k`` each image of the batch comes
  from ``order[k + 1]`` with probability ``w = t / steps_per_split`` and from ``order[k]``
  otherwise, so the stream slides from one split into the next (the last segment is pure).

The order is ``order = pool[randperm(len(pool))]`` with a generator seeded by ``order_seed``,
and it is recorded in the scenario's protocol record, so a reader sees exactly what ran.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from ttabench.api import Role, SplitSpec, Suite
from ttabench.errors import TTABenchError

Kind = Literal["sequence", "gradual"]
KINDS: tuple[str, ...] = ("sequence", "gradual")
ROLES: tuple[str, ...] = ("eval", "calibration")


@dataclass(frozen=True)
class ScenarioSpec:
    """What defines a continual scenario (everything here is in its protocol record)."""

    kind: Kind = "sequence"
    role: Role = "eval"
    severities: tuple[int, ...] = (5,)
    steps_per_split: int = 100
    window: int = 20
    order_seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise TTABenchError(f"scenario kind must be one of {', '.join(KINDS)}, "
                                f"got {self.kind!r}")
        if self.role not in ROLES:
            raise TTABenchError(f"scenario role must be one of {', '.join(ROLES)}, "
                                f"got {self.role!r}")
        if self.steps_per_split < 1:
            raise TTABenchError(f"--steps-per-split must be at least 1, got {self.steps_per_split}")
        if self.window < 1 or self.steps_per_split % self.window:
            raise TTABenchError(f"--window must be at least 1 and divide --steps-per-split "
                                f"({self.steps_per_split}), got {self.window}")
        if not self.severities:
            raise TTABenchError("a scenario needs at least one severity")

    def record(self) -> dict[str, Any]:
        return {**asdict(self), "severities": list(self.severities)}


def scenario_pool(suite: Suite, spec: ScenarioSpec) -> list[SplitSpec]:
    """The suite's splits of ``spec.role`` at ``spec.severities``, in the suite's order.

    Splits without a severity (``clean``) are left out: a continual scenario is a sequence of
    shifts. An empty pool is an error naming what the suite has."""
    pool = [s for s in suite.splits()
            if s.role == spec.role and s.severity is not None and s.severity in spec.severities]
    if not pool:
        have = sorted({s.severity for s in suite.splits()
                       if s.role == spec.role and s.severity is not None})
        raise TTABenchError(
            f"suite {suite.name!r} has no {spec.role} split at severities "
            f"{', '.join(map(str, spec.severities))}; it has severities "
            f"{', '.join(map(str, have)) or 'none'} for that role")
    return pool


def scenario_order(pool: list[SplitSpec], order_seed: int) -> list[SplitSpec]:
    """``pool`` permuted by ``randperm(len(pool))`` drawn with a generator seeded ``order_seed``."""
    generator = torch.Generator().manual_seed(order_seed)
    return [pool[int(i)] for i in torch.randperm(len(pool), generator=generator)]


def total_steps(spec: ScenarioSpec, n_splits: int) -> int:
    """Steps in the whole scenario: ``n_splits * steps_per_split``."""
    return n_splits * spec.steps_per_split


def mixture_weight(step: int, spec: ScenarioSpec, n_splits: int) -> tuple[int, float]:
    """Segment ``k`` of the 0-based ``step`` and the weight ``w`` of split ``k + 1`` in it.

    ``sequence``: ``w = 0``. ``gradual``: ``w = (step mod steps_per_split) / steps_per_split``,
    except in the last segment, where ``w = 0`` (there is no next split)."""
    segment = step // spec.steps_per_split
    if spec.kind == "sequence" or segment == n_splits - 1:
        return segment, 0.0
    return segment, (step % spec.steps_per_split) / spec.steps_per_split
