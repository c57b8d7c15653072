"""``tiny``: a synthetic 4-class suite of 16 px images that runs every code path in seconds.

Each class is a fixed random template; an image is its class template plus Gaussian pixel noise
whose strength grows with the severity (``noise`` splits, scored) or a brightness shift
(``shift`` splits, calibration). Everything is generated from a seed, so the suite is
byte-for-byte reproducible and needs no files.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError

NUM_CLASSES = 4
SIZE = 16


def _templates(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(NUM_CLASSES, 3, SIZE, SIZE, generator=generator) * 200 + 28


def make_images(
    n: int, seed: int, noise: float = 20.0, shift: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images (n, 3, 16, 16) and balanced int64 labels, fully determined by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=generator)]
    pixels = _templates(0)[labels] + shift
    pixels = pixels + noise * torch.randn(pixels.shape, generator=generator)
    return pixels.clamp(0, 255).round().to(torch.uint8), labels


class TinySuite(Suite):
    """Splits: ``clean`` and ``shift-1..2`` (calibration), ``noise-1..3`` (eval)."""

    name = "tiny"
    num_classes = NUM_CLASSES

    def __init__(self, data_dir: Any = None, n_examples: int = 256, seed: int = 0) -> None:
        for name, value, low in (("n_examples", n_examples, 1), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TTABenchError(f"suite tiny: {name} must be an integer >= {low}, got {value!r}")
        self.n_examples = n_examples
        self.seed = seed

    def splits(self) -> list[SplitSpec]:
        out = [SplitSpec("clean", "clean", None, "calibration")]
        out += [SplitSpec(f"shift-{s}", "shift", s, "calibration") for s in (1, 2)]
        out += [SplitSpec(f"noise-{s}", "noise", s, "eval") for s in (1, 2, 3)]
        return out

    def dataset(self, split: SplitSpec) -> Dataset:
        index = [s.name for s in self.splits()].index(split.name)
        severity = split.severity or 0
        noise = 20.0 + (45.0 * severity if split.dataset == "noise" else 0.0)
        shift = 40.0 * severity if split.dataset == "shift" else 0.0
        images, labels = make_images(self.n_examples, self.seed + 100 + index, noise, shift)
        return TensorDataset(images, labels)

    def source_val(self) -> Dataset:
        return TensorDataset(*make_images(128, self.seed + 1))

    def record(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "n_examples": self.n_examples,
            "seed": self.seed,
            "order": [s.name for s in self.splits()],
            "image_size": SIZE,
        }
