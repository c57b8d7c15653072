"""``mnist-resnet``: a small residual BatchNorm network for the ``mnist-c`` suite, trained on
first use; the second architecture of the offline suite (same data, same recipe as
``mnist-cnn``).

Architecture (32 px, 3-channel input): a stem conv3x3(16)-BN-ReLU, then three residual basic
blocks (conv3x3-BN-ReLU-conv3x3-BN plus a conv1x1-BN shortcut, ReLU after the sum) with 32, 64,
64 channels, each downsampling by 2 (32 -> 16 -> 8 -> 4 px), global average pooling and a
linear head ``fc``: 10 BatchNorm layers against mnist-cnn's 4, so batch statistics weigh more
in what test-time adaptation changes. Inputs are normalised inside the model with the MNIST
mean/std, as for mnist-cnn.

Training: ``ttabench.models.mnist_cnn.fit_network`` (the 2,500 ``train`` digits, the same
augmentations, Adam one-cycle, label smoothing), seeded and deterministic on the CPU; cached at
``<cache_dir>/models/mnist-resnet-<seed>.pt``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ttabench.api import LoadedModel
from ttabench.models.mnist_cnn import NUM_CLASSES, TrainConfig, load_mnist_network

STEM = 16
WIDTHS = (32, 64, 64)
#: The recipe of mnist-cnn with fewer epochs: the residual net fits the 2,500 digits sooner and
#: its training stays under three minutes on one core.
TRAIN_CONFIG = TrainConfig(epochs=20)


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + bn(conv1x1(x)))`` with stride 2 in the first conv
    and in the shortcut."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Sequential(
            nn.Conv2d(channels_in, channels_out, 1, stride=2, bias=False),
            nn.BatchNorm2d(channels_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class MnistResNet(nn.Module):
    """Stem conv-BN-ReLU (16), three stride-2 basic blocks (32-64-64), GAP, ``fc``."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(3, STEM, 3, padding=1, bias=False),
            nn.BatchNorm2d(STEM),
            nn.ReLU(inplace=True),
        ]
        channels = STEM
        for width in WIDTHS:
            layers.append(BasicBlock(channels, width))
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x.contiguous(memory_format=torch.channels_last)))


def load_mnist_resnet(
    arg: str | None = None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """The ``mnist-resnet`` model source; ``arg`` is an optional integer training seed (0)."""
    return load_mnist_network("mnist-resnet", MnistResNet, TRAIN_CONFIG, arg, cache_dir,
                              num_classes)
