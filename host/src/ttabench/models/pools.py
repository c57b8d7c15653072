"""Model pools: named lists of model specs, for the estimators that compare models.

A pool name stands for its members wherever a list of models is taken: ``expand_models``
replaces each pool name by its member specs, in order. The host ships one pool:

- ``mnist-pool``: the offline pool of the ``mnist-c`` suite, seven BatchNorm networks trained
  on its training split (``ttabench.models.mnist_pool``): the two offline models ``mnist-cnn:0``
  and ``mnist-resnet:0``, then five members of the ``mnist-pool`` model source
  (``mnist-pool:<member>``) that differ in architecture, width, training length and seed.

This module imports nothing heavy (no torch), so a command can expand a list before it loads
any model.
"""

from __future__ import annotations

from collections.abc import Sequence

from ttabench.errors import TTABenchError

#: The members of ``mnist-pool`` (see ``ttabench.models.mnist_pool.MEMBERS``).
MNIST_POOL: tuple[str, ...] = (
    "mnist-cnn:0",
    "mnist-resnet:0",
    "mnist-pool:cnn-narrow",
    "mnist-pool:cnn-wide",
    "mnist-pool:convmlp",
    "mnist-pool:cnn-short",
    "mnist-pool:resnet-short",
)

#: Pool name -> its member model specs.
POOLS: dict[str, tuple[str, ...]] = {"mnist-pool": MNIST_POOL}


def expand_models(specs: Sequence[str]) -> list[str]:
    """``specs`` with every pool name replaced by its members, in order.

    A model named twice (directly or through a pool) is a TTABenchError: every model of a run
    must be one row of the cross-model comparison.

    >>> expand_models(["tiny-cnn", "mnist-pool"])[:3]
    ['tiny-cnn', 'mnist-cnn:0', 'mnist-resnet:0']
    """
    expanded: list[str] = []
    for spec in specs:
        for member in POOLS.get(spec, (spec,)):
            if member in expanded:
                raise TTABenchError(f"model '{member}' is named twice in the model list "
                                    f"{list(specs)} (pools expand to their members)")
            expanded.append(member)
    if not expanded:
        raise TTABenchError("the model list is empty")
    return expanded
