"""``ccc``: Continuously Changing Corruptions (Press et al., NeurIPS 2023), read from its tars.

Layout under ``data_dir`` (what oripress/CCC ``generate.py`` writes)::

    CCC/baseline_<b>_transition+speed_<s>_seed_<seed>/serial_<00000>.tar    webdataset shards

27 streams: baseline accuracy b in 0, 20, 40 (CCC-Hard, -Medium, -Easy; the folder may spell
it ``40`` or ``40.0``, as ``generate.py`` formats its float argument) x transition speed s in
1000, 2000, 5000 x seed 43, 44, 45. Each shard holds samples ``<key>.input.jpg`` (224 px, JPEG)
and ``<key>.output.cls`` (the ImageNet class index, in sorted-wnid order: the model's index).

A split is the first ``max_images`` images of a stream in shard and member order (the paper
uses the first 25,000 of each); the stream is then shuffled like any other split. The tars are
indexed once (member offsets, no decoding) and images are read by seeking into them. The
labelled clean ImageNet val folder (``val_dir``, default ``<data_dir>/ImageNet/val``) is the
source-validation split. Published: https://github.com/oripress/CCC (generation code; the
streams are generated from ImageNet val).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.paths import data_dir as resolve_data_dir
from ttabench.suites.identity import relative_name
from ttabench.suites.class_maps import imagenet_val_labels
from ttabench.suites.images import ImageTransform, class_folder_files, decode, screened_dataset

BASELINES: tuple[int, ...] = (0, 20, 40)
SPEEDS: tuple[int, ...] = (1000, 2000, 5000)
SEEDS: tuple[int, ...] = (43, 44, 45)
IMAGES_PER_STREAM = 25_000
URL = "https://github.com/oripress/CCC"


def stream_folder(root: Path, baseline: int, speed: int, seed: int) -> Path | None:
    """The folder of one stream, spelled with an integer or a float baseline, or None."""
    for spelled in (str(baseline), f"{float(baseline)}"):
        folder = root / f"baseline_{spelled}_transition+speed_{speed}_seed_{seed}"
        if folder.is_dir():
            return folder
    return None


class TarImageDataset(Dataset):
    """Items ``(uint8 tensor (3, H, W), int label)`` read by seeking into webdataset tars.

    Holds the shard paths and, per image, the shard number, byte offset and size (numpy
    arrays), never decoded images.
    """

    def __init__(self, shards: list[Path], max_images: int, transform: ImageTransform) -> None:
        self.shards = [str(s) for s in shards]
        self.transform = transform
        where, offsets, sizes, labels = [], [], [], []
        for number, shard in enumerate(shards):
            for offset, size, label in self._members(shard):
                where.append(number)
                offsets.append(offset)
                sizes.append(size)
                labels.append(label)
                if len(labels) == max_images:
                    break
            if len(labels) == max_images:
                break
        self.where = np.asarray(where, dtype=np.int32)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)

    @staticmethod
    def _members(shard: Path):
        """(offset, size, label) of each complete sample of a shard, in member order."""
        pending: dict[str, dict[str, Any]] = {}
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.isfile() or "." not in member.name:
                        continue
                    key, _, kind = member.name.partition(".")
                    entry = pending.setdefault(key, {})
                    if kind == "input.jpg":
                        entry["image"] = (member.offset_data, member.size)
                    elif kind == "output.cls":
                        entry["label"] = int(tar.extractfile(member).read().decode().strip())
                    if "image" in entry and "label" in entry:
                        yield (*pending.pop(key)["image"], entry["label"])
        except (tarfile.TarError, OSError, ValueError) as err:
            raise TTABenchError(f"CCC shard {shard} is not a readable webdataset tar "
                                f"({err})") from None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        shard = self.shards[int(self.where[index])]
        with open(shard, "rb") as handle:
            handle.seek(int(self.offsets[index]))
            data = handle.read(int(self.sizes[index]))
        image = decode(io.BytesIO(data), self.transform, name=f"{shard} image {index}")
        return image, int(self.labels[index])


class CCC(Suite):
    """The 27 CCC streams found under ``<data_dir>/CCC`` (see the module docstring).

    Options: ``root`` (default ``CCC``), ``max_images`` (25,000), ``val_dir``, ``dataset``
    (the splits' group, default ``CCC``).
    """

    name = "ccc"
    location_options = ("val_dir",)
    streams_from_disk = True
    num_classes = 1000

    def __init__(self, data_dir: str | Path | None = None, root: str = "CCC",
                 max_images: int = IMAGES_PER_STREAM, val_dir: str | Path | None = None,
                 dataset: str = "CCC") -> None:
        self.data_dir = resolve_data_dir(data_dir)
        self.root = self.data_dir / root
        if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
            raise TTABenchError(f"ccc max_images must be a positive integer, got {max_images!r}")
        self.max_images = max_images
        self.group = dataset
        self.transform = ImageTransform(224, 256, only_if_needed=True)
        self._streams: dict[str, Path] = {}
        for baseline in BASELINES:
            for speed in SPEEDS:
                for seed in SEEDS:
                    folder = stream_folder(self.root, baseline, speed, seed)
                    if folder is not None:
                        self._streams[f"baseline{baseline}-speed{speed}-seed{seed}"] = folder
        if not self._streams:
            raise TTABenchError(
                f"CCC not found: no stream folder baseline_<b>_transition+speed_<s>_seed_<seed> "
                f"in {self.root} (`ttabench fetch ccc --no-verify` downloads the authors' "
                f"shards, or generate the streams with {URL}; then pass --data-dir)"
            )
        default_val = self.data_dir / "ImageNet" / "val"
        self.val_dir = Path(val_dir) if val_dir is not None else (
            default_val if default_val.is_dir() else None)
        if self.val_dir is not None and not self.val_dir.is_dir():
            raise TTABenchError(f"ImageNet val folder {self.val_dir} not found")
        self._datasets: dict[str, Dataset] = {}

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec(name, self.group, None, "eval") for name in self._streams]

    def dataset(self, split: SplitSpec) -> Dataset:
        if split.name not in self._streams:
            raise TTABenchError(f"ccc has no split '{split.name}'")
        if split.name not in self._datasets:
            folder = self._streams[split.name]
            shards = sorted(p for p in folder.iterdir() if p.name.endswith(".tar"))
            if not shards:
                raise TTABenchError(f"no serial_*.tar shards in {folder}")
            self._datasets[split.name] = TarImageDataset(shards, self.max_images, self.transform)
        return self._datasets[split.name]

    def source_val(self) -> Dataset | None:
        if self.val_dir is None:
            return None
        if "source_val" not in self._datasets:
            paths, labels = class_folder_files(self.val_dir, imagenet_val_labels(None))
            self._datasets["source_val"] = screened_dataset(paths, labels, self.transform,
                                                            "skip", "ccc source_val")
        return self._datasets["source_val"]

    def record(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "root": relative_name(self.root, self.data_dir),
            "order": list(self._streams),
            "max_images": self.max_images,
            "image_order": "shard then member order (the stream's first max_images)",
            "labels": "output.cls: index among the sorted 1000 ImageNet wnids",
            "val_dir": None if self.val_dir is None else relative_name(self.val_dir, self.data_dir),
            "preprocessing": {**self.transform.record(), "image_size": 224},
        }

    def location(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), "root": str(self.root),
                "val_dir": None if self.val_dir is None else str(self.val_dir)}
