"""An adapter's optimizer as its authors configure it, built from a recorded setting.

The TTA code bases build theirs from a config (``OPTIM.METHOD``, ``LR``, ``BETA``,
``MOMENTUM``, ``DAMPENING``, ``NESTEROV``, ``WD``): Adam with betas (BETA, 0.999), or SGD.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import nn


@dataclass(frozen=True)
class OptimizerSetting:
    """One optimizer setting; ``build`` makes a fresh optimizer (its state empty)."""

    method: Literal["Adam", "SGD"]
    lr: float
    beta: float = 0.9
    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    weight_decay: float = 0.0

    def build(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.method == "Adam":
            return torch.optim.Adam(params, lr=self.lr, betas=(self.beta, 0.999),
                                    weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                               dampening=self.dampening, weight_decay=self.weight_decay,
                               nesterov=self.nesterov)

    def with_lr(self, lr: float | None) -> OptimizerSetting:
        """The same setting with ``lr`` instead (None: unchanged)."""
        return self if lr is None else replace(self, lr=float(lr))

    def record(self) -> dict[str, Any]:
        """The fields that apply to the method, for ``params()``."""
        out = asdict(self)
        drop = ("momentum", "nesterov", "dampening") if self.method == "Adam" else ("beta",)
        return {key: value for key, value in out.items() if key not in drop}


#: The CIFAR-10-C/CIFAR-100-C setting of CoTTA, RoTTA, ROID and DeYO (cfgs/cifar*_c/*.yaml).
CIFAR_ADAM = OptimizerSetting("Adam", lr=1e-3, beta=0.9)
