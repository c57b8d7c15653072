"""Shared model plumbing: normalization inside the model, weight hashes, embedding hooks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """Applies ``(x - mean) / std`` to float images in [0, 1], then the wrapped network."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def weights_hash(module: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) over every parameter and buffer, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        if tensor.is_floating_point() or tensor.dtype in (torch.int64, torch.int32, torch.uint8):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def find_classifier(module: nn.Module) -> str | None:
    """Name of the last ``nn.Linear`` in the module (the classifier head), or None."""
    name = None
    for candidate, sub in module.named_modules():
        if isinstance(sub, nn.Linear):
            name = candidate
    return name
