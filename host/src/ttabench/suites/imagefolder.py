"""``imagefolder``: any ImageFolder-style dataset (ImageNet-R, -A, -V2, -Sketch, ImageNet-D...).

Layout: ``<root>/<class folder>/**/<image>`` for one split, or ``<root>/<split>/<class
folder>/**/<image>`` with ``splits="a,b"`` (``<root>/<split>/<split_subdir>/<class folder>`` with
``split_subdir``, e.g. the backgrounds challenge's ``<variant>/val``). Images are found
recursively inside each class folder (jpg, jpeg, png, bmp, webp, any letter case), sorted;
preprocessing is an optional border crop (``border`` pixels off each side, ObjectNet's frame),
then Resize(resize) + CenterCrop(image_size) for every image (recorded).

Class maps (option ``class_map``; ``ttabench.suites.class_maps`` describes each):
``imagenet`` (wnid folders; fewer than 1000 restrict the logits to the classes present),
``imagenet-1k`` (wnid folders, always all 1000 logits), ``index`` (folders named 0..999, the
label is the name: ImageNet-V2), ``sorted`` (torchvision's rule; refuses integer-named folders
unless ``integer_names="sorted"``), ``mapped`` (a many-to-one map file, ``class_map_file``),
``objectnet`` (ObjectNet's mapping files), ``none`` (no class of the model: accuracy 0) and
``per-image`` (``labels_file`` lists each image's correct classes; the images are those it
names, anywhere below the split folder).

``dataset`` names the group of every split for the per-dataset average (default: each split
its own). ``source_val`` names a folder holding the labelled clean validation split: ImageNet
val (wnid folders) labelled with the model's indices, or with positions in the subset for a
class-subset suite (other classes left out); with ``class_map="sorted"`` its folders use the
suite's own map.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ttabench.api import Role, SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.paths import data_dir as resolve_data_dir
from ttabench.suites.class_maps import (
    CLASS_MAPS,
    ClassMap,
    build_class_map,
    imagenet_val_labels,
    per_image_labels,
)
from ttabench.suites.identity import file_digest, files_digest, relative_name
from ttabench.suites.images import (
    ImageFileDataset,
    ImageTransform,
    check_on_corrupt,
    class_folder_files,
    screened_dataset,
)

ROLES: tuple[Role, ...] = ("eval", "calibration")


def class_folders(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` (hidden ones ignored)."""
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


class ImageFolderSuite(Suite):
    """Labelled image folders as a suite; see the module docstring for layout and class maps.

    Options: ``root`` (required; relative paths are taken under ``data_dir``), ``splits``
    (comma-separated sub-folders, or a list), ``split_subdir``, ``name`` (suite name recorded;
    default the root folder's name), ``dataset`` (the splits' group), ``image_size`` (224),
    ``resize`` (256; 0 or None: center crop only), ``border`` (0), ``num_classes``,
    ``class_map`` (default ``"imagenet"``), ``class_map_file``, ``labels_file``,
    ``integer_names``, ``role`` (``"eval"``), ``source_val`` (a folder), ``on_corrupt``
    (``"skip"`` or ``"error"``).
    """

    name = "imagefolder"
    streams_from_disk = True
    location_options = ("root", "source_val", "class_map_file", "labels_file")

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
        split_subdir: str | None = None,
        dataset: str | None = None,
        border: int = 0,
        class_map_file: str | Path | None = None,
        labels_file: str | Path | None = None,
        integer_names: str = "refuse",
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
        roles = [choice for choice in ROLES if choice == role]
        if not roles:
            raise TTABenchError(f"role must be one of {', '.join(ROLES)}, got '{role}'")
        if integer_names not in ("refuse", "sorted"):
            raise TTABenchError(f"integer_names must be 'refuse' or 'sorted', got {integer_names!r}")
        self.class_map = class_map
        self.role: Role = roles[0]
        self.suite_name = name or self.root.name
        self.group = dataset
        self.on_corrupt = check_on_corrupt(on_corrupt)
        self.transform = ImageTransform(int(image_size), int(resize) if resize else None,
                                        border=int(border))
        names = [s.strip() for s in splits.split(",")] if isinstance(splits, str) else splits
        self._split_dirs: dict[str, Path] = {}
        for split in names or []:
            folder = self.root / split / (split_subdir or "")
            if not folder.is_dir():
                raise TTABenchError(f"split folder {folder} not found (splits={splits})")
            self._split_dirs[split] = folder
        if not self._split_dirs:
            self._split_dirs[self.suite_name] = self.root / (split_subdir or "")
        self.source_val_dir = None if source_val is None else self._locate(data_dir, source_val)
        if self.source_val_dir is not None and not self.source_val_dir.is_dir():
            raise TTABenchError(f"source_val folder {self.source_val_dir} not found")
        self.class_map_file = None if class_map_file is None else self._locate(data_dir,
                                                                               class_map_file)
        self.labels_file = None if labels_file is None else self._locate(data_dir, labels_file)
        self._per_image: dict[str, int] = {}
        if class_map == "per-image":
            self.map = self._per_image_map(num_classes)
        else:
            folders = sorted({c for d in self._split_dirs.values() for c in class_folders(d)})
            if not folders:
                raise TTABenchError(
                    f"no class folders in {self.root}; expected <root>/<class>/<image>"
                )
            self.map = build_class_map(class_map, folders, self.root, num_classes=num_classes,
                                       class_map_file=self.class_map_file,
                                       integer_names=integer_names)
        self.num_classes = self.map.num_classes
        self.class_subset = self.map.class_subset
        self.label_sets = self.map.label_sets
        self._datasets: dict[str, ImageFileDataset] = {}
        self._listed: dict[str, tuple[list[Path], list[int]]] = {}
        self._record: dict[str, Any] | None = None

    @staticmethod
    def _locate(data_dir: str | Path | None, folder: str | Path) -> Path:
        folder = Path(folder).expanduser()
        return folder if folder.is_absolute() else resolve_data_dir(data_dir) / folder

    def _per_image_map(self, num_classes: int | None) -> ClassMap:
        if self.labels_file is None:
            raise TTABenchError("class_map=per-image needs labels_file=<JSON of image -> classes>")
        total = 1000 if num_classes is None else int(num_classes)
        self._per_image, label_sets = per_image_labels(self.labels_file, total)
        return ClassMap("per-image", {}, total, None, label_sets)

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec(name, self.group or name, None, self.role) for name in self._split_dirs]

    def dataset(self, split: SplitSpec) -> Dataset[Any]:
        if split.name not in self._split_dirs:
            raise TTABenchError(f"suite {self.suite_name} has no split '{split.name}'")
        if split.name not in self._datasets:
            paths, labels = self._listing(split.name)
            self._datasets[split.name] = self._screened(paths, labels, split.name)
        return self._datasets[split.name]

    def size(self, split: SplitSpec) -> int:
        if split.name in self._datasets:
            return len(self._datasets[split.name])
        return len(self._listing(split.name)[0])

    def _listing(self, split: str) -> tuple[list[Path], list[int]]:
        """The split's image paths and labels, listed once (see ``_files``)."""
        if split not in self._listed:
            self._listed[split] = self._files(self._split_dirs[split])
        return self._listed[split]

    def source_val(self) -> Dataset[Any] | None:
        if self.source_val_dir is None:
            return None
        if "source_val" not in self._datasets:
            label_of = (self.map.label_of if self.class_map == "sorted"
                        else imagenet_val_labels(self.class_subset))
            paths, labels = class_folder_files(self.source_val_dir, label_of)
            self._datasets["source_val"] = self._screened(paths, labels, "source_val",
                                                          self.source_val_dir)
        return self._datasets["source_val"]

    def _files(self, folder: Path) -> tuple[list[Path], list[int]]:
        """Image paths of a split folder and their labels (not yet screened)."""
        if self.class_map == "per-image":
            paths = [folder / rel for rel in self._per_image if (folder / rel).is_file()]
            missing = len(self._per_image) - len(paths)
            if missing:
                raise TTABenchError(f"{missing} of the {len(self._per_image)} images of "
                                    f"{self.labels_file} are missing below {folder}")
            return paths, list(self._per_image.values())
        # folders without a label here are left out (ObjectNet's non-ImageNet classes)
        return class_folder_files(folder, self.map.label_of)

    def _screened(self, paths: list[Path], labels: list[int], split: str,
                  folder: Path | None = None) -> ImageFileDataset:
        if not paths:
            raise TTABenchError(
                f"no image files in the class folders of {folder or self._split_dirs[split]}"
            )
        where = f"{self.suite_name} split {split}"
        return screened_dataset(paths, labels, self.transform, self.on_corrupt, where)

    @property
    def skipped_files(self) -> dict[str, int]:
        """Unreadable files left out, per split indexed so far (not in ``record()``: it changes
        as splits are read, and the record is part of every cell's key)."""
        return {name: ds.skipped_files for name, ds in self._datasets.items()}

    def record(self) -> dict[str, Any]:
        """The data's identity: the root folder's name, each split folder relative to it, and a
        digest of each split's index (file names relative to the split folder, and sizes);
        files a map reads by their content's digest. Listed once (the key of every cell)."""
        if self._record is None:
            self._record = {
                "suite": self.name,
                "name": self.suite_name,
                "root": self.root.name,
                "order": [s.name for s in self.splits()],
                "split_folders": {k: relative_name(v, self.root)
                                  for k, v in self._split_dirs.items()},
                "index": {k: files_digest(self._listing(k)[0], v)
                          for k, v in self._split_dirs.items()},
                "dataset": self.group,
                "class_map": self.class_map,
                "class_map_file": file_digest(self.class_map_file),
                "labels_file": file_digest(self.labels_file),
                "num_classes": self.num_classes,
                "class_subset": self.class_subset,
                "label_sets": None if self.label_sets is None else len(self.label_sets),
                "role": self.role,
                "source_val": None if self.source_val_dir is None else self.source_val_dir.name,
                "preprocessing": self.transform.record(),
                "on_corrupt": self.on_corrupt,
            }
        return self._record

    def location(self) -> dict[str, Any]:
        return {"root": str(self.root),
                "source_val": None if self.source_val_dir is None else str(self.source_val_dir),
                "class_map_file": None if self.class_map_file is None else str(self.class_map_file),
                "labels_file": None if self.labels_file is None else str(self.labels_file)}
