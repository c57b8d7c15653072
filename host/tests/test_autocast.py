"""bf16 autocast must not freeze adaptation.

``torch.autocast`` caches the bf16 copy of every fp32 weight that requires grad until its
region ends; a region around the whole trajectory would hide every in-place update of a conv
or linear weight from the later forward passes (the probe would not drift). Checked on the CPU
(CPU autocast has the same weight cache) through ``run_cell``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttabench.api import (
    Adapter,
    EstimateResult,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
)
from ttabench.models.tiny import load_tiny_cnn
from ttabench.runner.execute import CellInputs, run_cell
from ttabench.suites.tiny import TinySuite


class AllWeights(Adapter):
    """Moves every weight in place at each step (seeded noise), as an optimizer step does."""

    name = "all-weights"

    def __init__(self, model: nn.Module, scale: float = 0.02) -> None:
        super().__init__(model.eval())
        self.scale = scale
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        with torch.no_grad():
            for param in self.model.parameters():
                param.add_(self.scale * torch.randn(param.shape, generator=self.generator))
        return logits

    def reset(self) -> None:
        """Not needed here."""

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}


class ProbeDrift(TrajectoryEstimator):
    """Mean absolute change of the probe logits from step 0 to the last checkpoint."""

    name = "probe-drift"
    kind = "score"

    def __init__(self) -> None:
        self.snaps: dict[int, torch.Tensor] = {}

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(64, (0, 6), chunk=32)

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        self.snaps[step] = probe_logits.float()

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        return EstimateResult(value=float((self.snaps[6] - self.snaps[0]).abs().mean()))

    def reset(self) -> None:
        self.snaps = {}


def drift(precision: str) -> float:
    suite = TinySuite(n_examples=128)
    cell = run_cell(CellInputs(
        suite=suite, split=suite.splits()[-1], model=load_tiny_cnn(), adapter_cls=AllWeights,
        adapter_params={}, estimators={"probe-drift": ProbeDrift()}, seed=0, batch_size=16,
        steps=6, device=torch.device("cpu"), precision=precision))
    return cell["results"]["probe-drift"].value


def test_bf16_adaptation_moves_the_probe_as_fp32_does():
    fp32, bf16 = drift("fp32"), drift("bf16")
    assert fp32 > 0.05
    assert abs(bf16 - fp32) < 0.1 * fp32, (fp32, bf16)
