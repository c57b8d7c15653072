"""The stream of a cell: which splits it reads, the order its images are first seen in, and the
batches the adapter steps through (``--stream``, ``ttabench.spec.StreamSpec``).

Kinds, named as mariodoebler/test-time-adaptation names its settings (``classification/conf.py``):

- ``reset-each-split`` (its ``reset_each_shift``): a cell per split, the adapter fresh for it;
  the split's seeded epochs (``ttabench.runner.stream``), as many steps as the estimators need;
- ``continual``: a cell per split order, no reset: split ``order[k]`` fills ``steps_per_split``
  steps (0: one pass, ``n_k // batch_size``) from its own seeded stream (seed
  ``seed * SPLIT_SEED_STRIDE + k``), one split after another;
- ``gradual``: ``continual`` with a CCC-style slide: at step ``t`` of segment ``k`` each image
  comes from split ``k + 1`` with probability ``t / steps_per_split`` (coins from a generator
  seeded ``seed``; the last segment is pure);
- ``mixed`` (its ``mixed_domains``): one cell per role: the splits' images concatenated and
  shuffled together (epochs of ``randperm`` over all of them), so consecutive batches mix splits
  in proportion to their sizes; ``steps_per_split * n_splits`` steps (0: one pass);
- ``+correlated`` (its ``correlated``), with any kind: every epoch of a split (of the whole
  concatenation for ``mixed``) is a Dirichlet class order, ``correlated_order``, instead of a
  uniform permutation.

The order of a multi-split stream is ``randperm(n_splits)`` seeded with the order seed, over the
role's selected splits in the suite's order, or, with ``split_order = "suite"``, the suite's
order itself (qinenergy/cotta ``cifar/cifar10c.py`` loops over its ``CORRUPTION.TYPE`` list so);
it is recorded in the cell's protocol. ``shuffle = false`` reads every epoch of a split in the
files' order (``arange``), as the authors' loaders do (robustbench ``load_cifar10c(...,
shuffle=False)`` in DequanWang/tent and qinenergy/cotta ``cifar10c.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.runner.decoded_cache import LoaderOptions
from ttabench.runner.stream import epoch_batches, epochs
from ttabench.spec import StreamSpec

SPLIT_SEED_STRIDE = 1_000_003
#: Images every class chunk of a correlated order must get at least (the draw is repeated until
#: it does), and the draws tried before giving up.
MIN_CHUNK = 10
MAX_DRAWS = 1000


def correlated_order(labels: np.ndarray, delta: float, rng: np.random.Generator) -> np.ndarray:
    """A permutation of ``range(len(labels))`` whose classes come in runs: the Dirichlet
    label-shift order of NOTE (TaesikGong/NOTE ``learner/dnn.py``), as mariodoebler's
    ``sort_by_dirichlet`` (``datasets/data_loading.py``) applies it.

    With ``K`` classes and ``N`` images there are ``K`` chunks. For each class ``k`` in turn, its
    images (shuffled) are split over the chunks by proportions ``p ~ Dir(delta * 1_K)``, except
    that a chunk already holding ``N / K`` images or more gets none (``p_j = 0``, the rest
    renormalised): image counts ``floor(cumsum(p) * n_k)`` mark the cuts. The draw is repeated
    until every chunk holds at least ``MIN_CHUNK`` images (or as many as there are when fewer).
    The order visits the chunks in turn, and within a chunk its classes in a shuffled order.
    ``delta == 0``: the images sorted by class (mariodoebler's rule for ``DELTA_DIRICHLET = 0``).
    """
    labels = np.asarray(labels)
    if delta == 0:
        return np.argsort(labels, kind="stable")
    classes = int(labels.max()) + 1
    n = len(labels)
    floor = min(MIN_CHUNK, n // classes)
    for _ in range(MAX_DRAWS):
        chunks: list[list[np.ndarray]] = [[] for _ in range(classes)]
        sizes = np.zeros(classes, dtype=np.int64)
        for k in range(classes):
            members = np.flatnonzero(labels == k)
            rng.shuffle(members)
            p = rng.dirichlet(np.full(classes, delta)) * (sizes < n / classes)
            cuts = (np.cumsum(p / p.sum()) * len(members)).astype(np.int64)[:-1]
            for j, part in enumerate(np.split(members, cuts)):
                chunks[j].append(part)
                sizes[j] += len(part)
        if sizes.min() >= floor:
            break
    else:
        raise TTABenchError(f"no correlated order with delta {delta} gives every class chunk "
                            f"{floor} images in {MAX_DRAWS} draws; use another --delta")
    order = []
    for chunk in chunks:
        for k in rng.permutation(classes):
            order.append(chunk[k])
    return np.concatenate(order)


def _orders(n: int, seed: int, labels: np.ndarray | None, delta: float,
            shuffle: bool = True) -> Iterator[torch.Tensor]:
    """The epochs of a split's stream: ``randperm(n)`` draws seeded ``seed`` (``epochs``);
    with ``labels``, correlated orders drawn one after another from a generator seeded
    ``seed``; without ``shuffle``, ``arange(n)`` every epoch (the files' order)."""
    if not shuffle:
        while True:
            yield torch.arange(n)
    if labels is None:
        yield from epochs(n, seed)
    rng = np.random.default_rng(seed)
    while True:
        yield torch.from_numpy(correlated_order(labels, delta, rng))


@dataclass
class CellStream:
    """One cell's stream. ``dataset`` is the cell's splits concatenated (global index ``i`` of
    split ``k`` is ``offsets[k] + i``); ``epoch`` the order the source and bn passes read the
    images in (every image the stream shows, each once, first seen first; the probe is its
    start); ``steps`` the adaptation's index batches; ``segments`` the split each step is in
    (0 for one split and for ``mixed``)."""

    splits: list[SplitSpec]
    dataset: Dataset[Any]
    epoch: torch.Tensor
    steps: list[torch.Tensor]
    segments: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Images in the concatenation."""
        return len(self.dataset)  # type: ignore[arg-type]


def _first_seen(steps: list[torch.Tensor]) -> torch.Tensor:
    """Every index of ``steps`` once, in the order first seen."""
    flat = torch.cat(steps) if steps else torch.empty(0, dtype=torch.long)
    seen, order = set(), []
    for i in flat.tolist():
        if i not in seen:
            seen.add(i)
            order.append(i)
    return torch.tensor(order, dtype=torch.long)


def dataset_labels(dataset: Dataset[Any], loader: LoaderOptions) -> np.ndarray:
    """The labels of ``dataset`` in index order (read through the loader: a correlated stream's
    order depends on them; estimators never see them)."""
    size = len(dataset)  # type: ignore[arg-type]
    batches = [list(range(i, min(i + 256, size))) for i in range(0, size, 256)]
    return np.concatenate([np.asarray(y) for _, y in loader.loader(dataset, batches)])


def cell_stream(spec: StreamSpec, suite: Suite, splits: list[SplitSpec], seed: int,
                batch_size: int, steps: int = 0, start: int = 0,
                loader: LoaderOptions | None = None) -> CellStream:
    """The stream of one cell over ``splits`` (one split for ``reset-each-split``, else the
    order). ``steps`` (-1: one epoch) and ``start`` (the probe draw's first stream epoch) apply
    to ``reset-each-split``; the other kinds last ``steps_per_split`` per split."""
    loader = loader or LoaderOptions()
    datasets = [suite.dataset(s) for s in splits]
    sizes = [len(d) for d in datasets]  # type: ignore[arg-type]
    offsets = np.cumsum([0, *sizes])
    whole: Dataset[Any] = datasets[0] if len(datasets) == 1 else ConcatDataset(datasets)
    labels = dataset_labels(whole, loader) if spec.correlated else None

    def split_labels(k: int) -> np.ndarray | None:
        return None if labels is None else labels[offsets[k]:offsets[k + 1]]

    if spec.resets:
        n = sizes[0]
        steps = n // batch_size if steps < 0 else steps
        epoch = next(_orders(n, seed, labels, spec.delta, spec.shuffle))
        batches = list(epoch_batches(_orders(n, seed, labels, spec.delta, spec.shuffle), n,
                                     batch_size, steps, start)) if steps else []
        return CellStream(splits, whole, epoch, batches, [0] * len(batches))
    if spec.kind == "mixed":
        total = int(offsets[-1])
        count = spec.steps_per_split * len(splits) or total // batch_size
        batches = list(epoch_batches(_orders(total, seed, labels, spec.delta, spec.shuffle),
                                     total, batch_size, count))
        return CellStream(splits, whole, _first_seen(batches), batches, [0] * len(batches))
    per_split = [spec.steps_per_split or size // batch_size for size in sizes]
    streams = [epoch_batches(_orders(size, seed * SPLIT_SEED_STRIDE + k, split_labels(k),
                                     spec.delta, spec.shuffle), size, batch_size, sum(per_split))
               for k, size in enumerate(sizes)]
    coins = torch.Generator().manual_seed(seed)
    batches, segments = [], []
    for k, count in enumerate(per_split):
        for t in range(count):
            batch = next(streams[k]) + int(offsets[k])
            if spec.kind == "gradual" and k + 1 < len(splits):
                other = next(streams[k + 1]) + int(offsets[k + 1])
                take = torch.rand(batch_size, generator=coins) < t / count
                batch = torch.where(take, other, batch)
            batches.append(batch)
            segments.append(k)
    return CellStream(splits, whole, _first_seen(batches), batches, segments)


def split_order(pool: list[SplitSpec], order_seed: int) -> list[SplitSpec]:
    """``pool`` permuted by ``randperm(len(pool))`` drawn with a generator seeded ``order_seed``."""
    generator = torch.Generator().manual_seed(order_seed)
    return [pool[int(i)] for i in torch.randperm(len(pool), generator=generator)]


def stream_pools(splits: list[SplitSpec]) -> dict[str, list[SplitSpec]]:
    """The selected splits of a multi-split stream by role (eval first), in the suite's order.
    A role with splits that have a severity leaves out those without (``clean``): a continual
    stream is a sequence of shifts."""
    pools: dict[str, list[SplitSpec]] = {}
    for role in ("eval", "calibration"):
        members = [s for s in splits if s.role == role]
        shifted = [s for s in members if s.severity is not None]
        if shifted or members:
            pools[role] = shifted or members
    return pools


def stream_cells(spec: StreamSpec, splits: list[SplitSpec]) -> list[tuple[SplitSpec, list[SplitSpec], int | None]]:
    """The cells of a stream over the selected ``splits``: ``(the cell's split record, the
    splits it reads in order, its order seed)``. ``reset-each-split``: one per split; ``mixed``:
    one per role (no order); ``continual`` and ``gradual``: one per role and order seed, or one
    per role in the suite's order (``split_order = "suite"``)."""
    if spec.resets:
        return [(s, [s], None) for s in splits]
    suite_order = spec.split_order == "suite"
    out = []
    for role, pool in stream_pools(splits).items():
        seeds: list[int | None] = ([None] if spec.kind == "mixed" or suite_order
                                   else list(spec.order_seeds))
        for order_seed in seeds:
            order = pool if order_seed is None else split_order(pool, order_seed)
            name = f"{spec.name}/{role}" + ("/suite-order" if suite_order else
                                            "" if order_seed is None else f"/order-{order_seed}")
            out.append((SplitSpec(name=name, dataset=name, severity=None, role=role), order,
                        order_seed))
    return out


def stream_record(spec: StreamSpec, order: list[SplitSpec], order_seed: int | None,
                  batch_size: int) -> dict[str, Any]:
    """What a cell's protocol records of its stream (what decides its numbers)."""
    record: dict[str, Any] = {"kind": spec.name, "window": spec.window,
                              "stats_window": spec.stats_window}
    if spec.stats_window > batch_size:
        record["batch_statistics"] = (f"sliding window of the last {spec.stats_window} images; "
                                      f"one update per {spec.stats_window} new images")
    if spec.correlated:
        record["delta"] = spec.delta
    if not spec.resets:
        record.update(steps_per_split=spec.steps_per_split, order=[s.name for s in order])
        if order_seed is not None:
            record.update(order_seed=order_seed, split_seed_stride=SPLIT_SEED_STRIDE)
        elif spec.split_order == "suite":
            record.update(split_order="suite", split_seed_stride=SPLIT_SEED_STRIDE)
    if not spec.shuffle:
        record["shuffle"] = False
    return record


#: The protocol record of the default stream: a cell with it keeps the key it had before
#: streams were recorded (``ttabench.runner.cells.cell_key``).
DEFAULT_STREAM_RECORD = stream_record(StreamSpec(), [], None, batch_size=1)
