"""An adapter's private random generator, so its draws do not depend on other code's."""

from __future__ import annotations

import torch

from ttabench.errors import TTABenchError


def adapter_seed(seed: int | None) -> int:
    """``seed``, or torch's initial seed when None (the cell's seed: the runner seeds torch
    before it builds the adapter)."""
    if seed is None:
        return int(torch.initial_seed())
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise TTABenchError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    return seed


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (re-seed it to replay the same draws)."""
    return torch.Generator().manual_seed(seed)
