"""A user's labelled images, read for ``ttabench calibrate``: class folders or a labels file,
checked against the model's classes, decoded at the model's input size.

Two layouts of ``root``:

- **class folders**: ``<root>/<class>/**/<image>`` (any depth below the class folder);
- **a labels file** (``labels=FILE``): a CSV of ``path,label`` lines (an optional first line
  ``path,label``), ``path`` relative to ``root``; images of ``root`` the file does not name are
  left out.

A class name (folder or label) is read as the model's class by the first rule that fits all of
them: the model's own class names when it records them (``LoadedModel.class_names``, e.g.
CIFAR-10's ``airplane`` ... ``truck``); the model's output index written as an integer
(``0`` ... ``K-1``, as MNIST's digit folders are); an ImageNet WordNet id for a 1000-class model
(``n01440764`` ...). A name no rule reads is refused with one line naming it.

Refused too: fewer labelled images than ``needed_images`` (the calibration meta-set draws its
sets from them: with fewer, its sets repeat the same few images), and a labelled set with fewer
than two of the model's classes. Unreadable files are left out and counted.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ttabench.errors import TTABenchError
from ttabench.suites.images import (
    ImageTransform,
    decode,
    imagenet_wnids,
    is_image_file,
    list_images,
    screen_files,
)

#: At least this many labelled images, and ``MIN_PER_CLASS`` per class of the model.
MIN_IMAGES = 100
MIN_PER_CLASS = 10
HEADER = ("path", "label")


def needed_images(num_classes: int) -> int:
    """Labelled images a calibration needs: ``max(MIN_IMAGES, MIN_PER_CLASS * num_classes)``."""
    return max(MIN_IMAGES, MIN_PER_CLASS * int(num_classes))


def _is_index(name: str, num_classes: int) -> bool:
    return name.isdigit() and str(int(name)) == name and int(name) < num_classes


def class_rule(names: Sequence[str], num_classes: int,
               class_names: Sequence[str] | None) -> tuple[str, dict[str, int]]:
    """(the rule, class name -> model index) for every name in ``names`` (module docstring);
    a TTABenchError naming the first name no rule reads."""
    distinct = sorted(set(names))
    if class_names is not None and all(n in class_names for n in distinct):
        return "names", {n: list(class_names).index(n) for n in distinct}
    if all(_is_index(n, num_classes) for n in distinct):
        return "index", {n: int(n) for n in distinct}
    if num_classes == 1000:
        wnids = {w: i for i, w in enumerate(imagenet_wnids())}
        if all(n in wnids for n in distinct):
            return "imagenet", {n: wnids[n] for n in distinct}
    bad = next(n for n in distinct if not _is_index(n, num_classes)
               and (class_names is None or n not in class_names))
    ways = [f"the output index 0..{num_classes - 1}"]
    if class_names is not None:
        ways.append("one of its class names (" + ", ".join(class_names[:10])
                    + (" ..." if len(class_names) > 10 else "") + ")")
    if num_classes == 1000:
        ways.append("an ImageNet wnid")
    raise TTABenchError(f"class {bad!r} does not match the model's {num_classes} classes: name "
                        f"each class by {' or '.join(ways)}")


@dataclass(frozen=True)
class LabelledListing:
    """The readable labelled images of a folder: their paths and model-index labels, the rule
    that read the class names and the class name of each model index present."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    rule: str
    classes: dict[str, int]
    labels_file: Path | None
    skipped: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """Facts of the listing (no absolute path)."""
        return {"rule": self.rule, "classes": dict(sorted(self.classes.items())),
                "images": len(self.paths), "skipped_files": len(self.skipped),
                "labels_file": None if self.labels_file is None else self.labels_file.name}


def _class_folder_pairs(root: Path) -> list[tuple[Path, str]]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p.name)]
    if not folders:
        raise TTABenchError(f"no class folders in {root}: put each class's images in "
                            "<root>/<class>/, or pass --labels FILE (a CSV of path,label)")
    if loose:
        raise TTABenchError(f"{root} holds images outside class folders ({loose[0].name}); "
                            "put each in its class's folder, or pass --labels FILE")
    return [(path, folder.name) for folder in folders for path in list_images(folder)]


def _labels_file_pairs(root: Path, labels_file: Path) -> list[tuple[Path, str]]:
    try:
        with open(labels_file, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(c.strip() for c in row)]
    except FileNotFoundError:
        raise TTABenchError(f"labels file not found: {labels_file}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise TTABenchError(f"labels file {labels_file} cannot be read: {err}") from None
    if rows and tuple(c.strip().lower() for c in rows[0]) == HEADER:
        rows = rows[1:]
    pairs, seen = [], set()
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise TTABenchError(f"labels file {labels_file}: entry {line} is not 'path,label' "
                                f"({','.join(row)[:60]!r})")
        relative, label = row[0].strip(), row[1].strip()
        path = (root / relative).resolve()
        if Path(relative).is_absolute() or not path.is_relative_to(root.resolve()):
            raise TTABenchError(f"labels file {labels_file}: {relative!r} is not a path inside "
                                f"{root}")
        if not (path.is_file() and is_image_file(path.name)):
            raise TTABenchError(f"labels file {labels_file}: {relative!r} is not an image file "
                                f"in {root}")
        if path in seen:
            raise TTABenchError(f"labels file {labels_file}: {relative!r} is listed twice")
        seen.add(path)
        pairs.append((root / relative, label))
    if not pairs:
        raise TTABenchError(f"labels file {labels_file} names no image")
    return sorted(pairs, key=lambda pair: pair[0].relative_to(root).as_posix())


def read_listing(root: str | Path, num_classes: int, class_names: Sequence[str] | None = None,
                 labels_file: str | Path | None = None) -> LabelledListing:
    """The labelled images of ``root`` (module docstring), every check done before any image
    is decoded: the layout, the classes against the model's, the count."""
    root = Path(root)
    if not root.is_dir():
        raise TTABenchError(f"labelled image folder {root} does not exist or is not a folder")
    file = None if labels_file is None else Path(labels_file)
    pairs = _class_folder_pairs(root) if file is None else _labels_file_pairs(root, file)
    rule, classes = class_rule([name for _, name in pairs], num_classes, class_names)
    kept, skipped = screen_files([path for path, _ in pairs], "skip", str(root))
    paths = tuple(pairs[i][0] for i in kept)
    labels = tuple(classes[pairs[i][1]] for i in kept)
    needed = needed_images(num_classes)
    if len(paths) < needed:
        raise TTABenchError(
            f"{root} has {len(paths)} readable labelled images; a calibration needs at least "
            f"{needed} (max({MIN_IMAGES}, {MIN_PER_CLASS} per class x {num_classes} classes)): "
            "its meta-set draws every set from them")
    if len(set(labels)) < 2:
        raise TTABenchError(f"{root} has labelled images of {len(set(labels))} class; a "
                            "calibration needs at least two of the model's classes")
    present = {name: index for name, index in classes.items() if index in set(labels)}
    return LabelledListing(root, paths, labels, rule, present, file, tuple(skipped))


def decode_listing(listing: LabelledListing,
                   transform: ImageTransform) -> tuple[np.ndarray, np.ndarray]:
    """Every image of the listing, preprocessed, as uint8 (N, H, W, 3), and int64 labels."""
    images = np.stack([decode(str(path), transform).permute(1, 2, 0).numpy()
                       for path in listing.paths])
    return images, np.asarray(listing.labels, dtype=np.int64)


def content_digest(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 (16 hex digits) of the decoded images (shape included) and their labels."""
    digest = hashlib.sha256(str(tuple(images.shape)).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


class ArrayImages(Dataset[tuple[torch.Tensor, int]]):
    """Items ``(uint8 tensor (3, H, W), int label)`` of in-memory NHWC images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(np.ascontiguousarray(self.images[index].transpose(2, 0, 1)))
        return image, int(self.labels[index])


__all__ = ["ArrayImages", "LabelledListing", "MIN_IMAGES", "MIN_PER_CLASS", "class_rule",
           "content_digest", "decode_listing", "needed_images", "read_listing"]
