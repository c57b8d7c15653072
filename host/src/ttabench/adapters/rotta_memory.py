"""RoTTA's category-balanced memory bank with timeliness and uncertainty (BIT-DA/RoTTA
``core/utils/memory.py``, ``CSTU``).

Capacity C over K classes, a share of C / K per class. An item is (image, pseudo-label, entropy
u, age a). Its heuristic score is lambda_t / (1 + exp(-a / C)) + lambda_u u / ln K (higher:
older or less certain, the first to go). Adding an item of class k with score h (age 0):

- if class k holds fewer than C / K items: it is added when the bank holds fewer than C
  items; otherwise the highest-scoring item of the classes holding the most items is removed
  if its score exceeds h (and then the new item added);
- otherwise the highest-scoring item of class k is removed if its score exceeds h;
- ties go to the later item (classes in order, items in insertion order); then every item in
  the bank, the new one included, ages by one.

``contents`` lists the images class by class in insertion order with their ages divided by C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class MemoryItem:
    image: torch.Tensor
    uncertainty: float
    age: int = 0


class BalancedMemory:
    """The bank; ``lambda_t`` weighs age, ``lambda_u`` uncertainty."""

    def __init__(self, capacity: int, num_classes: int, lambda_t: float = 1.0,
                 lambda_u: float = 1.0) -> None:
        self.capacity = capacity
        self.num_classes = num_classes
        self.per_class = capacity / num_classes
        self.lambda_t = lambda_t
        self.lambda_u = lambda_u
        self.classes: list[list[MemoryItem]] = [[] for _ in range(num_classes)]

    def __len__(self) -> int:
        return sum(len(items) for items in self.classes)

    def score(self, age: float, uncertainty: float) -> float:
        return (self.lambda_t * 1 / (1 + math.exp(-age / self.capacity))
                + self.lambda_u * uncertainty / math.log(self.num_classes))

    def add(self, image: torch.Tensor, label: int, uncertainty: float) -> None:
        if self._make_room(label, self.score(0, uncertainty)):
            self.classes[label].append(MemoryItem(image, uncertainty))
        for items in self.classes:
            for item in items:
                item.age += 1

    def _make_room(self, label: int, new_score: float) -> bool:
        if len(self.classes[label]) < self.per_class:
            if len(self) < self.capacity:
                return True
            counts = [len(items) for items in self.classes]
            most = max(counts)
            return self._evict([k for k, count in enumerate(counts) if count == most], new_score)
        return self._evict([label], new_score)

    def _evict(self, labels: list[int], new_score: float) -> bool:
        """Remove the highest-scoring item of ``labels`` if it scores above ``new_score``."""
        best: tuple[float, int, int] | None = None
        for label in labels:
            for index, item in enumerate(self.classes[label]):
                score = self.score(item.age, item.uncertainty)
                if best is None or score >= best[0]:
                    best = (score, label, index)
        if best is None:
            return True
        if best[0] > new_score:
            self.classes[best[1]].pop(best[2])
            return True
        return False

    def contents(self) -> tuple[list[torch.Tensor], list[float]]:
        images = [item.image for items in self.classes for item in items]
        ages = [item.age / self.capacity for items in self.classes for item in items]
        return images, ages
