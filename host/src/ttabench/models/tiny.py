"""``tiny-cnn``: a two-conv BatchNorm network trained in about a second on the tiny suite."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.api import LoadedModel
from ttabench.models.base import NormalizedModel, weights_hash
from ttabench.suites.tiny import NUM_CLASSES, make_images


class TinyCNN(nn.Module):
    """conv(3->8)-BN-ReLU-pool, conv(8->16)-BN-ReLU, global pool, linear."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def train_tiny_cnn(seed: int = 0, steps: int = 60) -> TinyCNN:
    """Train on 512 clean tiny-suite images with Adam; deterministic for a given seed, whatever
    the thread count (training runs on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(seed, steps)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, steps: int) -> TinyCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TinyCNN()
        images, labels = make_images(512, seed=10_000 + seed)
        x = images.float() / 255.0
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        net.train()
        for step in range(steps):
            batch = slice((step * 64) % 512, (step * 64) % 512 + 64)
            loss = F.cross_entropy(net((x[batch] - 0.5) / 0.25), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def load_tiny_cnn(
    arg: str | None = None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """The ``tiny-cnn`` model source (``arg`` is an optional integer seed)."""
    net = train_tiny_cnn(seed=int(arg) if arg else 0)
    module = NormalizedModel(net, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    return LoadedModel(
        module=module.eval(),
        num_classes=NUM_CLASSES,
        model_id=f"tiny-cnn:{arg or 0}",
        weights_hash=weights_hash(module),
        preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": 16},
        classifier="net.fc",
    )
