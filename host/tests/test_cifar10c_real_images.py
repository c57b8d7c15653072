"""Real CIFAR-10 images through the cifar10c suite and the pretrained cifar10-resnet18.

foolbox ships the first 20 CIFAR-10 test images (``cifar10_<idx>_<label>.png``). They are
written into a sparse fake CIFAR-10-C file of the real shape (50000, 32, 32, 3), at the start
of every severity block, with their labels; the suite must hand them back with the right
labels, and the pyautoattack ResNet-18 classifies all 20 correctly (its known clean count).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttabench.api import to_unit_float
from ttabench.models.cifar_resnet import load_cifar10_resnet18
from ttabench.suites.cifar import CIFAR10C

BLOCK = 10000  # rows per severity in the published files


def foolbox_cifar10() -> tuple[np.ndarray, np.ndarray]:
    """The 20 images (20, 32, 32, 3) uint8 and labels parsed from the file names."""
    spec = importlib.util.find_spec("foolbox")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    files = sorted(folder.glob("cifar10_*_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    assert len(files) == 20
    images = np.stack([np.array(Image.open(f).convert("RGB")) for f in files])
    labels = np.array([int(f.stem.split("_")[2]) for f in files])
    return images, labels


def fake_cifar10c(root: Path, images: np.ndarray, labels: np.ndarray, corruption: str) -> None:
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    data = np.lib.format.open_memmap(
        folder / f"{corruption}.npy", mode="w+", dtype=np.uint8, shape=(5 * BLOCK, 32, 32, 3)
    )
    all_labels = np.zeros(5 * BLOCK, dtype=np.int64)
    for severity in range(1, 6):
        start = (severity - 1) * BLOCK
        data[start : start + len(images)] = images
        all_labels[start : start + len(images)] = labels
    data.flush()
    del data
    np.save(folder / "labels.npy", all_labels)


def test_pretrained_resnet18_on_real_images_through_cifar10c(tmp_path: Path) -> None:
    images, labels = foolbox_cifar10()
    fake_cifar10c(tmp_path, images, labels, "fog")
    suite = CIFAR10C(tmp_path, corruptions="fog", severities=[2, 5], n_examples=20)
    model = load_cifar10_resnet18()
    assert model.num_classes == suite.num_classes
    for split in suite.splits():
        dataset = suite.dataset(split)
        batch = [dataset[i] for i in range(len(dataset))]
        x = torch.stack([image for image, _ in batch])
        y = torch.tensor([label for _, label in batch])
        assert x.dtype == torch.uint8 and tuple(x.shape) == (20, 3, 32, 32)
        assert torch.equal(x, torch.from_numpy(images).permute(0, 3, 1, 2))
        assert y.tolist() == labels.tolist()
        with torch.no_grad():
            predictions = model.module(to_unit_float(x)).argmax(dim=1)
        assert int((predictions == y).sum()) == 20
