"""RoTTA's robust batch normalization (BIT-DA/RoTTA ``core/utils/bn_layers.py``, ``RobustBN1d``,
``RobustBN2d``).

A BatchNorm layer replaced by one that keeps running statistics (mu, sigma^2), starting from
the source ones. In train mode it normalizes with mu' = (1 - alpha) mu + alpha mu_B and
sigma'^2 = (1 - alpha) sigma^2 + alpha sigma_B^2 (batch statistics, biased variance) and keeps
them as the new (mu, sigma^2); in eval mode it normalizes with (mu, sigma^2). Output:
(x - mu') / sqrt(sigma'^2 + eps) * weight + bias.
"""

from __future__ import annotations

import torch
from torch import nn

from ttabench.errors import TTABenchError


class RobustBN(nn.Module):
    """Replaces a BatchNorm1d (over dim 0) or BatchNorm2d (over dims 0, 2, 3)."""

    def __init__(self, layer: nn.BatchNorm1d | nn.BatchNorm2d, alpha: float) -> None:
        super().__init__()
        if layer.running_mean is None or layer.running_var is None or layer.weight is None:
            raise TTABenchError("rotta needs BatchNorm layers with source running statistics "
                                "and an affine weight and bias")
        self.alpha = alpha
        self.eps = layer.eps
        self.dims = (0,) if isinstance(layer, nn.BatchNorm1d) else (0, 2, 3)
        self.weight = nn.Parameter(layer.weight.detach().clone())
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.register_buffer("source_mean", layer.running_mean.detach().clone())
        self.register_buffer("source_var", layer.running_var.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            batch_var, batch_mean = torch.var_mean(x, dim=self.dims, unbiased=False)
            mean = (1 - self.alpha) * self.source_mean + self.alpha * batch_mean
            var = (1 - self.alpha) * self.source_var + self.alpha * batch_var
            self.source_mean.copy_(mean.detach())
            self.source_var.copy_(var.detach())
        else:
            mean, var = self.source_mean, self.source_var
        normalized = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return normalized * self.weight.view(shape) + self.bias.view(shape)


def use_robust_bn(model: nn.Module, alpha: float) -> int:
    """Replace every BatchNorm1d/2d of ``model`` in place; returns how many."""
    names = [name for name, layer in model.named_modules()
             if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d))]
    if not names or "" in names:
        raise TTABenchError("rotta needs a model with BatchNorm1d/BatchNorm2d layers to adapt")
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, RobustBN(getattr(parent, child), alpha))
    return len(names)
