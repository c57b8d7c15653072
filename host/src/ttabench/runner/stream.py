"""The seeded test stream an adapter sees, and the probe taken from its start.

Protocol (the reference protocol of Weighted Flips, with its pitfalls fixed):

- epoch ``e`` visits the split in the order ``randperm(N)`` drawn from a generator seeded with
  ``seed``; epochs are drawn one after another from the same generator, so the whole stream is
  fixed by ``(N, seed)``;
- batches of ``batch_size``, ``drop_last``: an epoch gives ``N // batch_size`` batches, and the
  stream replays further epochs until the requested number of steps is reached;
- the probe is the first ``probe_size`` images of the first draw (``first_epoch``); it is
  stored as the dataset gives it (uint8), a quarter of a float32 copy. Two draws (the
  ``probe_draw`` of a ``TrajectoryPlan``):

  - ``"stream"``: the adaptation stream starts with that same draw, so the probe is also the
    stream's first images;
  - ``"reference"``: the reference implementation's draw. Its probe is the start of a separate
    shuffled pass over the loader (``get_unlabeled_subset`` in the reference main.py
    breaks off a fresh shuffled epoch after 1,000 images), and adaptation then iterates the
    loader anew, each pass a fresh permutation. Here the probe is the first draw and the stream
    starts at the second, so the probe images are adapted on wherever the later epochs put them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from ttabench.errors import TTABenchError
from ttabench.runner.decoded_cache import LoaderOptions

#: How the probe is drawn (``ttabench.api.TrajectoryPlan.probe_draw``), in the order of the draw
#: the adaptation stream starts at (see ``stream_start``).
PROBE_DRAWS: tuple[str, ...] = ("stream", "reference")


def epochs(n: int, seed: int) -> Iterator[torch.Tensor]:
    """The stream's epochs: consecutive ``randperm(n)`` draws from one generator seeded with
    ``seed``, without end."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randperm(n, generator=generator)


def stream_start(probe_draw: str) -> int:
    """The draw the adaptation stream starts at: 0 for ``"stream"``, 1 for ``"reference"``."""
    if probe_draw not in PROBE_DRAWS:
        raise TTABenchError(
            f"probe_draw must be one of {', '.join(PROBE_DRAWS)}, got {probe_draw!r}"
        )
    return PROBE_DRAWS.index(probe_draw)


def stream_indices(n: int, seed: int, batch_size: int, steps: int,
                   start: int = 0) -> Iterator[torch.Tensor]:
    """Index batches of the seeded stream: ``steps`` batches of ``batch_size``, drop_last per
    epoch, replaying epochs as needed, from draw ``start`` of ``epochs(n, seed)`` on."""
    return epoch_batches(epochs(n, seed), n, batch_size, steps, start)


def epoch_batches(orders: Iterator[torch.Tensor], n: int, batch_size: int, steps: int,
                  start: int = 0) -> Iterator[torch.Tensor]:
    """``steps`` batches of ``batch_size`` cut from the epochs ``orders`` (permutations of
    ``n`` indices), drop_last per epoch, from epoch ``start`` on."""
    if n < batch_size:
        raise TTABenchError(
            f"the split has {n} images, fewer than one batch of {batch_size}; lower --batch-size"
        )
    per_epoch = n // batch_size
    step = 0
    for draw, order in enumerate(orders):
        if draw < start:
            continue
        for b in range(per_epoch):
            if step == steps:
                return
            yield order[b * batch_size : (b + 1) * batch_size]
            step += 1


def batches_of(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches of ``batch_size``, the last one shorter; a last batch of a
    single image joins the batch before it (batch statistics need two images)."""
    chunks = list(torch.split(order, batch_size))
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


def first_epoch(n: int, seed: int) -> torch.Tensor:
    """The first draw of ``epochs(n, seed)`` (the probe is its start)."""
    return next(epochs(n, seed))


def gather(dataset: Dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the images and labels of ``dataset`` at ``indices`` (images keep their dtype)."""
    items = [dataset[int(i)] for i in indices]
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    return images, labels


def source_batches(dataset: Dataset, samples: int, batch_size: int, seed: int,
                   loader: LoaderOptions | None = None,
                   ) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], dict[str, Any]]:
    """Labelled source batches for an adapter that asks for them (``Adapter.source_data_param``)
    and the facts recorded about them.

    The first ``samples`` images of a permutation of ``dataset`` (the suite's source-validation
    split) drawn with ``seed``, in ``batches_of(..., batch_size)``. EATA's authors draw their
    Fisher samples the same way: a random subset of clean validation images, shuffled, in
    batches of the test batch size. The batches are read through ``loader`` (its worker
    processes decode them, not the main thread) as they are consumed (one pass), never held
    all at once.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset), generator=generator)[:samples]
    chunks = batches_of(order, batch_size)
    facts = {"split": "source_val", "samples": len(order), "batch_size": batch_size,
             "batches": len(chunks), "seed": seed,
             "draw": "first samples of a seeded permutation of the source-validation split"}
    read = (loader or LoaderOptions()).loader(dataset, [idx.tolist() for idx in chunks])
    return iter(read), facts
