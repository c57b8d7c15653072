"""``source``: the unadapted model (the no-adaptation baseline)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ttabench.api import Adapter


class SourceAdapter(Adapter):
    """No adaptation: eval mode, running statistics, nothing updated."""

    name = "source"
    source_val_reference = "source"

    def __init__(self, model: nn.Module, **params: Any) -> None:
        if params:
            raise TypeError(f"the source adapter takes no parameters, got {sorted(params)}")
        super().__init__(model.eval())

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def reset(self) -> None:
        """Nothing to restore: the weights never change."""
