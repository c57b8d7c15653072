"""``imagefolder``: any ImageFolder-style dataset (ImageNet-R, -A, -V2, -Sketch, ImageNet-D...).

Layout: ``<root>/<class folder>/**/<image>`` for one split, or ``<root>/<split>/<class
folder>/**/<image>`` with ``splits="a,b"``. Images are found recursively inside each class
folder (jpg, jpeg, png, bmp, webp, any letter case), sorted; preprocessing is Resize(resize) +
CenterCrop(image_size) for every image (recorded).

Class maps (how a class folder name becomes a model class index):

- ``class_map="imagenet"``: folder names are ImageNet wnids; a wnid's model index is its
  position among the sorted 1000 ImageNet wnids. When the folders cover all 1000 classes,
  labels are those indices. When they cover fewer (ImageNet-R and -A have 200), the suite sets
  ``class_subset`` to the sorted model indices of the wnids present (the union over all
  splits), the host restricts logits to those columns, and labels are positions in the subset.
  ``num_classes`` stays the model's output count (1000).
- ``class_map="sorted"``: torchvision's ImageFolder rule: label = position of the folder name
  among the sorted folder names (union over all splits). ``num_classes`` defaults to the number
  of folders.

``source_val`` names a folder of the same layout holding the labelled clean validation split
(e.g. ImageNet val); for a class-subset suite it keeps only the subset's classes, labelled as
positions in the subset.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ttabench.api import Role, SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.paths import data_dir as resolve_data_dir
from ttabench.suites.images import (
    ImageFileDataset,
    ImageTransform,
    check_on_corrupt,
    imagenet_wnids,
    list_images,
    screened_dataset,
)

CLASS_MAPS: tuple[str, ...] = ("imagenet", "sorted")
ROLES: tuple[str, ...] = ("eval", "calibration")


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (hidden ones ignored)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


class ImageFolderSuite(Suite):
    """Labelled image folders as a suite; see the module docstring for layout and class maps.

    Options: ``root`` (required; relative paths are taken under ``data_dir``), ``splits``
    (comma-separated sub-folders, or a list), ``name`` (suite name recorded; default the root
    folder's name), ``image_size`` (224), ``resize`` (256; 0 or None: center crop only),
    ``num_classes``, ``class_map`` (``"imagenet"`` or ``"sorted"``), ``role`` (``"eval"``),
    ``source_val`` (a folder), ``on_corrupt`` (``"skip"`` or ``"error"``).
    """

    name = "imagefolder"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        root: str | Path | None = None,
        splits: str | list[str] | None = None,
        name: str | None = None,
        image_size: int = 224,
        resize: int | None = 256,
        num_classes: int | None = None,
        class_map: str = "imagenet",
        role: str = "eval",
        source_val: str | Path | None = None,
        on_corrupt: str = "skip",
    ) -> None:
        if root is None:
            raise TTABenchError("suite imagefolder needs the option root=<folder of class folders>")
        self.root = self._locate(data_dir, root)
        if not self.root.is_dir():
            raise TTABenchError(
                f"image folder {self.root} not found; expected <root>/<class>/<image> "
                "(or <root>/<split>/<class>/<image> with splits=a,b)"
            )
        if class_map not in CLASS_MAPS:
            raise TTABenchError(
                f"class_map must be one of {', '.join(CLASS_MAPS)}, got '{class_map}'"
            )
        if role not in ROLES:
            raise TTABenchError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        self.class_map = class_map
        self.role: Role = role  # type: ignore[assignment]
        self.suite_name = name or self.root.name
        self.on_corrupt = check_on_corrupt(on_corrupt)
        self.transform = ImageTransform(int(image_size), int(resize) if resize else None)
        names = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else splits
        self._split_dirs: dict[str, Path] = {}
        for split in names or []:
            folder = self.root / split
            if not folder.is_dir():
                raise TTABenchError(f"split folder {folder} not found (splits={splits})")
            self._split_dirs[split] = folder
        if not self._split_dirs:
            self._split_dirs[self.suite_name] = self.root
        self.source_val_dir = None if source_val is None else self._locate(data_dir, source_val)
        if self.source_val_dir is not None and not self.source_val_dir.is_dir():
            raise TTABenchError(f"source_val folder {self.source_val_dir} not found")
        folders = sorted({c for d in self._split_dirs.values() for c in class_folders(d)})
        if not folders:
            raise TTABenchError(f"no class folders in {self.root}; expected <root>/<class>/<image>")
        self._label_of, self.num_classes, self.class_subset = self._class_map(folders, num_classes)
        self._datasets: dict[str, ImageFileDataset] = {}

    @staticmethod
    def _locate(data_dir: str | Path | None, folder: str | Path) -> Path:
        folder = Path(folder).expanduser()
        return folder if folder.is_absolute() else resolve_data_dir(data_dir) / folder

    def _class_map(
        self, folders: list[str], num_classes: int | None
    ) -> tuple[dict[str, int], int, list[int] | None]:
        """Label of each class folder name, the model's class count, and the subset (or None)."""
        if self.class_map == "sorted":
            total = len(folders) if num_classes is None else int(num_classes)
            if len(folders) > total:
                raise TTABenchError(
                    f"{self.root} has {len(folders)} class folders but num_classes={total}"
                )
            return {f: i for i, f in enumerate(folders)}, total, None
        wnids = imagenet_wnids()
        total = 1000 if num_classes is None else int(num_classes)
        if total != 1000:
            raise TTABenchError(f"class_map=imagenet needs num_classes=1000, got {total}")
        index = {w: i for i, w in enumerate(wnids)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            raise TTABenchError(
                f"class folder '{unknown[0]}' in {self.root} is not an ImageNet wnid "
                f"({len(unknown)} such folders); use class_map=sorted for other datasets"
            )
        if len(folders) == 1000:
            return index, 1000, None
        subset = sorted(index[f] for f in folders)
        position = {model_index: i for i, model_index in enumerate(subset)}
        return {f: position[index[f]] for f in folders}, 1000, subset

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec(name, name, None, self.role) for name in self._split_dirs]

    def dataset(self, split: SplitSpec) -> Dataset:
        if split.name not in self._split_dirs:
            raise TTABenchError(f"suite {self.suite_name} has no split '{split.name}'")
        if split.name not in self._datasets:
            self._datasets[split.name] = self._index(self._split_dirs[split.name], split.name)
        return self._datasets[split.name]

    def source_val(self) -> Dataset | None:
        if self.source_val_dir is None:
            return None
        if "source_val" not in self._datasets:
            self._datasets["source_val"] = self._index(
                self.source_val_dir, "source_val", drop_unknown=True
            )
        return self._datasets["source_val"]

    def _index(self, folder: Path, split: str, drop_unknown: bool = False) -> ImageFileDataset:
        """Files of every class folder in ``folder`` with their labels, screened.

        ``drop_unknown`` leaves out class folders outside the label map (source_val of a
        class-subset suite); otherwise such a folder cannot occur (the map covers all splits).
        """
        paths, labels = [], []
        for name in class_folders(folder):
            if name not in self._label_of:
                if drop_unknown and self.class_map == "imagenet":
                    continue
                raise TTABenchError(f"class folder {folder / name} is not in the suite's class map")
            files = list_images(folder / name)
            paths += files
            labels += [self._label_of[name]] * len(files)
        if not paths:
            raise TTABenchError(f"no image files in the class folders of {folder}")
        where = f"{self.suite_name} split {split}"
        return screened_dataset(paths, labels, self.transform, self.on_corrupt, where)

    @property
    def skipped_files(self) -> dict[str, int]:
        """Unreadable files left out, per split indexed so far (not in ``record()``: it changes
        as splits are read, and the record is part of every cell's key)."""
        return {name: ds.skipped_files for name, ds in self._datasets.items()}

    def record(self) -> dict[str, Any]:
        return {
            "suite": self.name,
            "name": self.suite_name,
            "root": str(self.root),
            "order": [s.name for s in self.splits()],
            "class_map": self.class_map,
            "num_classes": self.num_classes,
            "class_subset": self.class_subset,
            "role": self.role,
            "source_val": None if self.source_val_dir is None else str(self.source_val_dir),
            "preprocessing": self.transform.record(),
            "on_corrupt": self.on_corrupt,
        }
