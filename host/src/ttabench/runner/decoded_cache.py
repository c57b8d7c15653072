"""Decoded images of a split kept in memory within a byte budget, and the reader that serves
the adaptation stream from them.

Reading an image of a folder suite (ImageNet-C, CCC, image folders) decodes a JPEG; that, not
the model, bounds a cell's time there. The combined source and bn pass (see
``ttabench.runner.passes.split_passes``) reads every image of a split once, in the order of the
stream's first epoch, and hands each decoded batch to a ``DecodedCache``. The cache keeps

- the probe (the first ``probe_size`` images of the first epoch) always: the trajectory holds
  it in memory for its snapshots anyway;
- then further images, in the order read, while their bytes fit in ``budget_bytes``.

``StreamReader`` serves any batch of indices from the cache, decoding only the images it lacks
(``decodes`` counts them). Decodes per image of a split, with ``r`` stream reads:

    decodes / n = 1 (the combined pass) + (stream reads of uncached images) / n

so at most ``1 + r / n`` without a budget, and ``1`` when the whole split fits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

@dataclass(frozen=True)
class LoaderOptions:
    """How a split is read: DataLoader worker processes and pinned host memory."""

    workers: int = 0
    pin_memory: bool = False

    def loader(self, dataset: Dataset, index_batches: list[list[int]]) -> DataLoader:
        """A DataLoader reading exactly ``index_batches`` of ``dataset``, in that order."""
        return DataLoader(dataset, batch_sampler=index_batches, num_workers=self.workers,
                          pin_memory=self.pin_memory and self.workers > 0)


class DecodedCache:
    """Decoded images (any dtype, one shape) and the labels of a split, by dataset index.

    ``slot[i]`` is the row of image ``i`` in the storage, or -1 when it is not kept. Labels are
    kept for every image added (8 bytes each, not counted in the budget). One cache may serve
    several cells of the same split (``ttabench estimate``'s seeds).
    """

    def __init__(self, n: int, budget_bytes: int, keep_first: int = 0) -> None:
        self.budget_bytes = int(budget_bytes)
        self.keep_first = int(keep_first)
        self.slot = torch.full((n,), -1, dtype=torch.long)
        self.labels = torch.full((n,), -1, dtype=torch.long)
        self.rows: list[torch.Tensor] = []
        self.used_bytes = 0
        self.added = 0
        self._storage: torch.Tensor | None = None

    def add(self, indices: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Record a decoded batch: its labels, and as many of its images not kept yet as the
        budget (plus the first ``keep_first`` images ever added) allows."""
        self.labels[indices] = torch.as_tensor(labels, dtype=torch.long)
        new = self.slot[indices] < 0
        indices, images = indices[new], images[new]
        per_image = images[0].numel() * images.element_size() if len(images) else 0
        room = max(self.keep_first - self.added, 0)
        if per_image:
            room = max(room, (self.budget_bytes - self.used_bytes) // per_image)
        take = min(int(room), len(indices))
        if take:
            first_row = sum(len(r) for r in self.rows)
            self.rows.append(images[:take].clone())
            self.slot[indices[:take]] = torch.arange(first_row, first_row + take)
            self.used_bytes += take * per_image
            self._storage = None
        self.added += len(indices)

    @property
    def cached(self) -> int:
        """How many images are kept."""
        return int((self.slot >= 0).sum())

    def storage(self) -> torch.Tensor:
        """Every kept image, stacked by row (built once after the pass)."""
        if self._storage is None:
            self._storage = torch.cat(self.rows) if self.rows else torch.empty(0)
            self.rows = [self._storage]
        return self._storage

    def gather(self, indices: torch.Tensor, pin: bool) -> torch.Tensor:
        """The kept images at ``indices`` as one batch, in pinned host memory when ``pin`` (a
        copy to the GPU then need not wait: ``ttabench.runner.compute.batch_to_device``)."""
        storage = self.storage()
        out = torch.empty((len(indices), *storage.shape[1:]), dtype=storage.dtype,
                          pin_memory=pin)
        return torch.index_select(storage, 0, self.slot[indices], out=out)


class StreamReader:
    """Batches of a split by index: from the cache where it holds them, else decoded through
    the loader (worker processes when ``options.workers``: never on the main thread then).

    ``decodes`` counts images read from the dataset through this reader.
    """

    def __init__(self, dataset: Dataset, cache: DecodedCache, options: LoaderOptions) -> None:
        self.dataset, self.cache, self.options = dataset, cache, options
        self.decodes = 0

    def fill(self, index_batches: list[torch.Tensor]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``batches`` that add what they decode to the cache (the first read of a split)."""
        return self.batches(index_batches, keep=True)

    def batches(self, index_batches: list[torch.Tensor],
                keep: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` for each index batch, in order; images keep the dataset's
        dtype (in pinned memory where the options pin). Images the cache lacks are decoded
        (and, with ``keep``, added to it after their batch was used)."""
        pin = self.options.pin_memory
        hits = [self.cache.slot[idx] >= 0 for idx in index_batches]
        missing = [idx[~hit].tolist() for idx, hit in zip(index_batches, hits)]
        needed = [m for m in missing if m]
        decoded = iter(self.options.loader(self.dataset, needed)) if needed else iter(())
        for idx, hit, miss in zip(index_batches, hits, missing):
            if not miss:
                yield self.cache.gather(idx, pin), self.cache.labels[idx]
                continue
            images, got = next(decoded)
            got = torch.as_tensor(got)
            self.decodes += len(miss)
            if len(miss) == len(idx):
                yield images, got
            else:
                merged = torch.empty((len(idx), *images.shape[1:]), dtype=images.dtype,
                                     pin_memory=pin)
                merged[hit] = self.cache.gather(idx[hit], False)
                merged[~hit] = images
                labels = self.cache.labels[idx]
                labels[~hit] = got.long()
                yield merged, labels
            if keep:
                self.cache.add(idx[~hit], images, got)

    def take(self, indices: torch.Tensor) -> torch.Tensor:
        """The images at ``indices`` as one batch."""
        return next(self.batches([indices]))[0]
