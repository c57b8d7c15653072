"""``mnist-pool``: the members of the offline model pool of ``mnist-c`` beyond its two models.

The pool (``ttabench.models.pools.MNIST_POOL``) is ``mnist-cnn:0``, ``mnist-resnet:0`` and the
five members of this model source, each a model spec ``mnist-pool:<member>`` (or
``mnist-pool:<member>:<seed>`` for another training seed):

========== ==================================================== ======== ====
member     network                                              epochs   seed
========== ==================================================== ======== ====
cnn-narrow ``MnistCNN`` with 8-16-32-32 channels                  20       0
cnn-wide   ``MnistCNN`` with 32-48-96-96 channels                 15       0
convmlp    two strided conv-BN-ReLU, then linear-BatchNorm1d-ReLU  20       0
cnn-short  ``MnistCNN`` (16-32-64-64), trained briefly            5        1
resnet-short ``MnistResNet``, trained briefly                     5        1
========== ==================================================== ======== ====

Every member is a BatchNorm network (so adapters and the ``bn`` view apply), trained by the
shared mnist-c recipe (``ttabench.models.mnist_cnn.fit_network``: the 2,500 ``train`` digits,
the same augmentations, Adam one-cycle) with its own epoch count, seeded and deterministic on
the CPU, and cached like ``mnist-cnn`` (``cached_network``: atomic, under a file lock) at
``<cache_dir>/models/mnist-pool-<member>-<seed>.pt``. The short trainings give the pool its
spread of accuracies: agreement-on-the-line fits a line through models of unlike accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ttabench.api import LoadedModel
from ttabench.errors import TTABenchError
from ttabench.models.mnist_cnn import NUM_CLASSES, MnistCNN, TrainConfig, load_mnist_network
from ttabench.models.mnist_resnet import MnistResNet

SOURCE = "mnist-pool"


class ConvMLP(nn.Module):
    """conv5x5(16, stride 2)-BN-ReLU, conv3x3(32, stride 2)-BN-ReLU, flatten (32 x 8 x 8),
    linear(128)-BatchNorm1d-ReLU, ``fc``: few convolutions, most weights in a BN MLP."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(32 * 8 * 8, 128, bias=False),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.fc(self.features(x))
        return logits


@dataclass(frozen=True)
class Member:
    """One member of the pool: its network, training recipe and default seed."""

    build: Callable[[], nn.Module]
    config: TrainConfig
    seed: int


def _narrow() -> nn.Module:
    return MnistCNN(widths=(8, 16, 32, 32))


def _wide() -> nn.Module:
    return MnistCNN(widths=(32, 48, 96, 96))


MEMBERS: dict[str, Member] = {
    "cnn-narrow": Member(_narrow, TrainConfig(epochs=20), seed=0),
    "cnn-wide": Member(_wide, TrainConfig(epochs=15), seed=0),
    "convmlp": Member(ConvMLP, TrainConfig(epochs=20), seed=0),
    "cnn-short": Member(MnistCNN, TrainConfig(epochs=5), seed=1),
    "resnet-short": Member(MnistResNet, TrainConfig(epochs=5), seed=1),
}


def load_mnist_pool(
    arg: str | None = None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """The ``mnist-pool`` model source: ``arg`` is ``<member>`` or ``<member>:<seed>``."""
    if not arg:
        raise TTABenchError(
            f"'{SOURCE}' is a pool of models; name one member as {SOURCE}:<member> "
            f"(members: {', '.join(MEMBERS)}), or give '{SOURCE}' where a list of models is taken"
        )
    name, _, seed = arg.partition(":")
    if name not in MEMBERS:
        raise TTABenchError(f"unknown {SOURCE} member '{name}'; members: {', '.join(MEMBERS)}")
    member = MEMBERS[name]
    return load_mnist_network(f"{SOURCE}:{name}", member.build, member.config,
                              seed or str(member.seed), cache_dir, num_classes,
                              cache_name=f"{SOURCE}-{name}")
