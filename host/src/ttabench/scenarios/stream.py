"""The batches of a continual scenario, in order, from a seed.

Split ``k`` of the scenario order has its own seeded stream (``ttabench.runner.stream``'s
epochs of ``randperm``, drop-last batches, replayed as needed) with seed
``seed * SPLIT_SEED_STRIDE + k``. A ``sequence`` step of segment ``k`` takes the next batch of
stream ``k``. A ``gradual`` step takes the next batch of streams ``k`` and ``k + 1`` and keeps,
image by image, the one of ``k + 1`` with probability ``w`` (``spec.mixture_weight``), the coins
drawn from one generator seeded with ``seed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.runner.stream import gather, stream_indices
from ttabench.scenarios.spec import ScenarioSpec, mixture_weight, total_steps

SPLIT_SEED_STRIDE = 1_000_003


@dataclass
class ScenarioBatch:
    """One step of the scenario: the images (uint8), their labels, the segment and the weight
    of the next split in it (0 for a pure batch)."""

    step: int
    segment: int
    weight: float
    images: torch.Tensor
    labels: torch.Tensor


def _split_stream(dataset: Dataset, seed: int, batch_size: int,
                  steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for indices in stream_indices(len(dataset), seed, batch_size, steps):
        yield gather(dataset, indices)


def scenario_batches(suite: Suite, order: list[SplitSpec], spec: ScenarioSpec, seed: int,
                     batch_size: int) -> Iterator[ScenarioBatch]:
    """Every batch of the scenario in order (``total_steps(spec, len(order))`` of them)."""
    datasets = [suite.dataset(split) for split in order]
    n = len(order)
    steps = total_steps(spec, n)
    streams = [_split_stream(d, seed * SPLIT_SEED_STRIDE + k, batch_size, steps)
               for k, d in enumerate(datasets)]
    coins = torch.Generator().manual_seed(seed)
    for step in range(steps):
        segment, weight = mixture_weight(step, spec, n)
        images, labels = next(streams[segment])
        if spec.kind == "gradual" and segment + 1 < n:
            other_images, other_labels = next(streams[segment + 1])
            take = torch.rand(batch_size, generator=coins) < weight
            images = torch.where(take[:, None, None, None], other_images, images)
            labels = torch.where(take, other_labels, labels)
        yield ScenarioBatch(step, segment, weight, images, labels)
