"""``cifar10c`` and ``cifar100c``: Hendrycks & Dietterich's corruption sets, read from disk.

Expected layout (as published; see ``ttabench.suites.npy_layout``)::

    <data_dir>/CIFAR-10-C/<corruption>.npy   uint8 (50000, 32, 32, 3), severities in blocks of 10000
    <data_dir>/CIFAR-10-C/labels.npy         (50000,)
    <data_dir>/CIFAR-10-C/clean.npy          optional: the CIFAR-10 test set (source-val and
    <data_dir>/CIFAR-10-C/clean_labels.npy   the ``clean`` calibration split), uint8 NHWC

``CIFAR-100-C`` is the same under ``<data_dir>/CIFAR-100-C``. `ttabench run` downloads nothing
(`ttabench fetch cifar10c` does, verified); the data is published on Zenodo (CIFAR-10-C https://zenodo.org/records/2535967, CIFAR-100-C
https://zenodo.org/records/3555552).
"""

from __future__ import annotations

from ttabench.suites.npy_layout import CorruptionArraySuite


class CIFAR10C(CorruptionArraySuite):
    """CIFAR-10-C: 10 classes, 32 px, 10,000 images per corruption and severity."""

    name = "cifar10c"
    num_classes = 10
    folder = "CIFAR-10-C"
    published_at = "https://zenodo.org/records/2535967 (Hendrycks & Dietterich, CIFAR-10-C)"
    fetch_key = "cifar10c"


class CIFAR100C(CorruptionArraySuite):
    """CIFAR-100-C: 100 classes, 32 px, 10,000 images per corruption and severity."""

    name = "cifar100c"
    num_classes = 100
    folder = "CIFAR-100-C"
    published_at = "https://zenodo.org/records/3555552 (Hendrycks & Dietterich, CIFAR-100-C)"
    fetch_key = "cifar100c"
