"""Train/eval modes of a module's layers, changed for a while and put back layer by layer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Every layer of ``module`` in eval mode inside the block; afterwards each layer gets its
    own mode back (an adapter may keep some layers in train mode and others not)."""
    modes = [(layer, layer.training) for layer in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for layer, training in modes:
            layer.training = training
