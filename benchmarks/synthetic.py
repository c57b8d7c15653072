"""A suite of seeded random images: for the GPU checks and benchmarks, where the plumbing and
the speed matter and the numbers do not (no data on disk, nothing to download)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import TensorDataset

from ttabench.api import SplitSpec, Suite


def random_images(n: int, size: int, num_classes: int, seed: int) -> TensorDataset:
    """``n`` uint8 RGB images of ``size`` px and uniform labels, fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return TensorDataset(images, torch.randint(0, num_classes, (n,), generator=generator))


class SyntheticSuite(Suite):
    """One split (``synthetic``) of ``n`` random images, and a labelled source val of
    ``source_val_n`` (none when 0)."""

    name = "synthetic"

    def __init__(self, n: int, size: int, num_classes: int, source_val_n: int = 0,
                 seed: int = 0) -> None:
        self.n, self.size, self.num_classes = n, size, num_classes
        self.source_val_n, self.seed = source_val_n, seed
        self._split = random_images(n, size, num_classes, seed)

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec("synthetic", "synthetic", None, "eval")]

    def dataset(self, split: SplitSpec) -> TensorDataset:
        return self._split

    def source_val(self) -> TensorDataset | None:
        if not self.source_val_n:
            return None
        return random_images(self.source_val_n, self.size, self.num_classes, self.seed + 1)

    def record(self) -> dict[str, Any]:
        return {"suite": self.name, "n": self.n, "size": self.size, "seed": self.seed,
                "source_val_n": self.source_val_n}
