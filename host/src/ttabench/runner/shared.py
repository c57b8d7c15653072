"""The work of a cell that does not depend on its adapter, done once and reused.

Cells that differ only in their adapter (same model, stream, split order, seed, estimators:
``ttabench.runner.cells.group_key``) read the same images in the same order, so their source
and ``bn`` passes, their ``source`` and ``bn`` targets and every static estimate in the
``source`` and ``bn`` views are the same. ``SharedWork`` holds them, with the stream, the
decoded images the pass kept (``DecodedCache``) and the global random state right after them,
and ``SharedCache`` keeps the last group's: a run plans a group's cells one after another
(``Benchmark.plan``: split, seed, then adapter), so a process running them in order computes
each group's work once, and N adapters cost N trajectories plus one set of passes. A worker
process of ``--jobs N`` keeps its own: a group whose cells land on J workers is computed at most
J times.

A cell that reuses the work restores the random state it was taken with before its trajectory,
so its numbers are those it would compute alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ttabench.records import ViewResult
from ttabench.runner.decoded_cache import DecodedCache
from ttabench.runner.passes import SplitPasses
from ttabench.runner.streams import CellStream
from ttabench.runner.views import View


@dataclass(frozen=True)
class RandomState:
    """Python's, NumPy's and torch's global random states (torch's CUDA ones where present)."""

    python: Any
    numpy: Any
    torch: torch.Tensor
    cuda: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def now(cls) -> RandomState:
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state(),
                   torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [])

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
        if self.cuda:
            torch.cuda.set_rng_state_all(self.cuda)


@dataclass
class SharedWork:
    """One group's adapter-independent work (see the module docstring).

    ``rows[i]``: image ``i``'s row of the passes' outputs; ``views``: the ``source`` and ``bn``
    views; ``static``: every static estimator's results in them; ``timings`` and ``decodes``:
    what computing it took."""

    stream: CellStream
    cache: DecodedCache
    passes: SplitPasses
    rows: torch.Tensor
    targets: dict[str, float | None]
    views: dict[str, View]
    static: dict[str, dict[str, ViewResult]]
    timings: dict[str, float]
    decodes: int
    random_state: RandomState

    def static_results(self) -> dict[str, dict[str, ViewResult]]:
        """The static results, per estimator a fresh dict (a cell adds its ``adapted`` view)."""
        return {name: dict(by_view) for name, by_view in self.static.items()}


class SharedCache:
    """The most recent group's ``SharedWork``, by group key."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.work: SharedWork | None = None

    def get(self, key: str | None, compute: Callable[[], SharedWork]) -> tuple[SharedWork, bool]:
        """The group's work and whether this call computed it (a key of None: never kept)."""
        if key is not None and key == self.key and self.work is not None:
            return self.work, False
        self.key, self.work = None, None  # the previous group's memory goes first
        work = compute()
        if key is not None:
            self.key, self.work = key, work
        return work, True
