"""The dataset family whose published hyper-parameters an adapter follows.

The authors of SAR, DeYO, ROID, CoTTA and RoTTA publish one setting for CIFAR-scale data
(CIFAR-10-C, CIFAR-100-C: Adam, lr 1e-3, batch 200) and another for ImageNet-scale data
(ImageNet-C: SGD, batch 64). An adapter takes the family from ``family=`` or, by default, from
the number of classes K its model outputs::

    K <= 10: "cifar10"     10 < K <= 100: "cifar100"     K > 100: "imagenet"

(CoTTA alone tells CIFAR-10 from CIFAR-100: its confidence threshold differs.)
"""

from __future__ import annotations

from ttabench.errors import TTABenchError

FAMILIES: tuple[str, ...] = ("cifar10", "cifar100", "imagenet")
#: How ``dataset_family`` picks a family when none is given (recorded in ``params()``).
FAMILY_RULE = "num_classes <= 10: cifar10, <= 100: cifar100, else imagenet"


def check_family(family: str | None) -> str | None:
    """``family`` if it is None or one of ``FAMILIES``; TTABenchError otherwise."""
    if family is not None and family not in FAMILIES:
        raise TTABenchError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    return family


def dataset_family(num_classes: int, family: str | None = None) -> str:
    """``family`` when given, else the family of a model with ``num_classes`` outputs."""
    if check_family(family) is not None:
        return str(family)
    if num_classes <= 10:
        return "cifar10"
    return "cifar100" if num_classes <= 100 else "imagenet"

