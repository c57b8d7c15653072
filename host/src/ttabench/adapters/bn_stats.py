"""Test-batch normalization statistics mixed with the source ones: ``bn-ema`` and ``bn-alpha``.

Two methods, two registrations (rather than one adapter with a switch): they keep different
state (``bn-ema`` a running average that every step moves, ``bn-alpha`` none) and a results
table names them apart. Both follow mariodoebler/test-time-adaptation ``methods/norm.py``
(``BNEMA``, ``BNAlpha``) with ``methods/bn.py`` (``EMABatchNorm``, ``AlphaBatchNorm``, after
Schneider et al., NeurIPS 2020, "alpha-BN"); nothing is learned, no gradient is taken.

- ``bn-ema``: per step, a train-mode forward (output discarded) moves every BatchNorm layer's
  running statistics toward the batch's, mu <- (1 - m) mu + m mu_B and sigma^2 <- (1 - m)
  sigma^2 + m s_B^2 (s_B^2 the unbiased batch variance, m the layer's own momentum, 0.1 in
  PyTorch), then an eval-mode forward with the updated statistics gives the logits.
- ``bn-alpha``: every BatchNorm2d normalizes with (1 - alpha) (mu_s, sigma_s^2) + alpha (mu_B,
  s_B^2), the source running statistics mixed with the batch's (s_B^2 unbiased, as the
  ``momentum=1`` BatchNorm2d of ``AlphaBatchNorm`` records it); alpha = 0.1
  (``cfgs/*/norm_alpha.yaml``). Stateless: a step and ``predict`` compute the same.

Their hyper-parameters are the same for CIFAR- and ImageNet-scale data.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.adaptation.checks import check_fraction
from ttabench.api import Adapter, ResettableAdapter
from ttabench.errors import TTABenchError


def _batch_norms(model: nn.Module, types: tuple[type[nn.Module], ...],
                 what: str) -> list[tuple[str, nn.Module]]:
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, types) and getattr(m, "running_mean", None) is not None]
    if not layers:
        raise TTABenchError(f"{what} needs {' or '.join(t.__name__ for t in types)} layers with "
                            "source running statistics; the model has none")
    return layers


class BNEMA(ResettableAdapter):
    """``bn-ema``: running BatchNorm statistics updated on every test batch, then used;
    ``momentum`` overrides every layer's own."""

    name = "bn-ema"
    source_val_reference = "source"  # the running statistics, before a batch moves them
    feature_call = 1  # the eval-mode pass; the train-mode pass before it only moves statistics

    def __init__(self, model: nn.Module, *, momentum: float | None = None) -> None:
        super().__init__(model.eval().requires_grad_(False))
        layers = _batch_norms(self.model, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
                              self.name)
        self.momentum = None if momentum is None else check_fraction("momentum", momentum)
        if self.momentum is not None:
            for _, layer in layers:
                layer.momentum = self.momentum
        momenta = {layer.momentum for _, layer in layers}
        self.layer_momenta = sorted(momenta, key=lambda m: -1.0 if m is None else float(m))
        self.layers = len(layers)
        self.save_initial_state()

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Update the statistics on ``x`` (train-mode pass), then the eval-mode logits."""
        self.model.train()
        self.model(x)
        self.model.eval()
        self.count_step()
        logits: torch.Tensor = self.model(x)
        return logits

    def params(self) -> dict[str, Any]:
        return {"momentum": self.momentum, "momentum_rule": "given" if self.momentum is not None
                else "each layer's own", "layer_momenta": self.layer_momenta,
                "adapted_layers": self.layers}


class AlphaNorm(nn.Module):
    """A BatchNorm2d normalizing with (1 - alpha) source + alpha test-batch statistics."""

    def __init__(self, layer: nn.BatchNorm2d, alpha: float) -> None:
        super().__init__()
        self.layer = layer.eval()
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=True)
        layer = self.layer
        assert layer.running_mean is not None and layer.running_var is not None
        mixed_mean = (1 - self.alpha) * layer.running_mean + self.alpha * mean
        mixed_var = (1 - self.alpha) * layer.running_var + self.alpha * var
        return F.batch_norm(x, mixed_mean, mixed_var, layer.weight, layer.bias, False, 0.0,
                            layer.eps)


class BNAlpha(Adapter):
    """``bn-alpha``: every BatchNorm2d normalizes with source and batch statistics mixed."""

    name = "bn-alpha"

    def __init__(self, model: nn.Module, *, alpha: float = 0.1) -> None:
        super().__init__(model.eval().requires_grad_(False))
        self.alpha = check_fraction("alpha", alpha)
        layers = _batch_norms(self.model, (nn.BatchNorm2d,), self.name)
        for name, layer in layers:
            parent_name, _, child = name.rpartition(".")
            parent = self.model.get_submodule(parent_name) if parent_name else self.model
            setattr(parent, child, AlphaNorm(layer, self.alpha))
        self.layers = len(layers)
        self.steps = 0

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return self.predict(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return logits

    def reset(self) -> None:
        """Nothing to restore: no state changes."""

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "variance": "unbiased", "adapted_layers": self.layers}

    def counters(self) -> dict[str, Any]:
        return {"steps": self.steps}
