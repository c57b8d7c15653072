"""How an adapter runs a model's layers: train/eval modes changed for a while and put back layer
by layer, and BatchNorm on batch statistics only."""

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


def use_batch_statistics(layer: nn.modules.batchnorm._BatchNorm) -> None:
    """The layer normalizes with each batch's statistics, in train and eval mode alike: its
    running statistics are removed (neither used, nor updated, nor in its state)."""
    layer.track_running_stats = False
    layer.running_mean = None
    layer.running_var = None
