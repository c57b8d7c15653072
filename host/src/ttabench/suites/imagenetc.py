"""``imagenetc``: ImageNet-C (Hendrycks & Dietterich, 2019) streamed from its image folders,
and the datasets of the same layout (``corruption_set``): ImageNet-C-bar (Mintun et al., 2021;
severity folders named by the corruption's parameter, ``"%.2f"``), ImageNet-3DCC (Kar et al.,
2022) and ImageNet-C-Patch (Gu et al., 2022, the Shift Happens release).

Layout under ``data_dir`` (``--data-dir``, ``$TTABENCH_DATA_DIR`` or the cache)::

    ImageNet-C/<corruption>/<severity>/<wnid>/<file>.JPEG          15 corruptions (eval)
    ImageNet-C/extra/<corruption>/<severity>/<wnid>/<file>.JPEG    4 holdout ones (calibration;
                                                                   also accepted at top level)
    ImageNet/val/<wnid>/<file>.JPEG                                clean val (option val_dir)

Published at https://zenodo.org/records/2235448 (ImageNet-C) and image-net.org (ImageNet val).

Two modes:

- ``mode="5000"`` (default): robustbench's protocol, the 5,000 files listed in robustbench's
  ``helper_files/imagenet_test_image_ids.txt`` (lines ``<wnid>/<file>``), in that order; the
  first ``n_examples`` when given. The index logic is robustbench's ``CustomImageFolder``
  re-implemented to stream: robustbench's ``load_imagenetc`` decodes all 5,000 into one tensor.
- ``mode="full"``: every image of the 50,000-image folders, ImageFolder-style (class folders in
  sorted order, files sorted); ``n_examples`` then takes a seeded (seed 0) random subset, kept
  in index order.

Labels are indices among the sorted 1,000 wnid folders, which must all exist (robustbench
indexes the folders that exist, so a partial copy would silently shift labels). Splits: the
15 corruptions in the canonical order (or the order given) x severities (``eval``), then the
holdout corruptions present on disk x severities (``calibration``), then ``clean``
(``calibration``) when the val folder exists; the val folder is also the labelled source-val
split. Another ``corruption_set`` has no calibration splits unless ``calibration=true``; its
val folder still serves as source val. ``dataset`` groups every evaluation split under one
name for the per-dataset average (default: one group per corruption). The ImageNet-C files are
224 px already; any other size gets Resize(256) + CenterCrop(224) (recorded).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.paths import data_dir as resolve_data_dir
from ttabench.suites.identity import relative_name
from ttabench.suites.images import (
    ImageFileDataset,
    ImageTransform,
    check_on_corrupt,
    imagenet_wnids,
    list_images,
    robustbench_helper_file,
    screened_dataset,
)
from ttabench.suites.npy_layout import (
    CORRUPTIONS,
    HOLDOUT,
    corruption_splits,
    parse_names,
    parse_optional_int,
    parse_severities,
)

MODES: tuple[str, ...] = ("5000", "full")
#: The corruption sets of the ImageNet-C layout: root folder under ``data_dir``, corruptions in
#: their recorded order, and the severity folder names (1-5) where they are not ``1``-``5``.
CORRUPTION_SETS: dict[str, dict[str, Any]] = {
    "imagenet-c": {"root": "ImageNet-C", "corruptions": CORRUPTIONS, "fetch": "imagenetc"},
    "imagenet-c-bar": {
        "root": "ImageNet-C-Bar",
        "fetch": "imagenet-c-bar --no-verify",
        "corruptions": (
            "blue_noise_sample", "brownish_noise", "caustic_refraction", "checkerboard_cutout",
            "cocentric_sine_waves", "inverse_sparkles", "perlin_noise", "plasma_noise",
            "single_frequency_greyscale", "sparkles",
        ),
        # imagenet_c_bar.csv of facebookresearch/augmentation-corruption, formatted "%.2f"
        "severity_folders": {
            "blue_noise_sample": ("0.80", "1.60", "2.40", "4.00", "5.60"),
            "brownish_noise": ("1.00", "2.00", "3.00", "4.00", "5.00"),
            "caustic_refraction": ("2.35", "3.20", "4.90", "6.60", "9.15"),
            "checkerboard_cutout": ("2.00", "3.00", "4.00", "5.00", "6.00"),
            "cocentric_sine_waves": ("3.00", "5.00", "8.00", "9.00", "10.00"),
            "inverse_sparkles": ("1.00", "2.00", "4.00", "9.00", "10.00"),
            "perlin_noise": ("4.60", "5.20", "5.80", "7.60", "8.80"),
            "plasma_noise": ("4.75", "7.00", "8.50", "9.25", "10.00"),
            "single_frequency_greyscale": ("1.00", "1.50", "2.00", "4.50", "5.00"),
            "sparkles": ("1.00", "2.00", "3.00", "5.00", "6.00"),
        },
    },
    "imagenet-3dcc": {
        "root": "ImageNet-3DCC",
        "corruptions": (
            "near_focus", "far_focus", "fog_3d", "flash", "color_quant", "low_light",
            "xy_motion_blur", "z_motion_blur", "iso_noise", "bit_error", "h265_abr", "h265_crf",
        ),
    },
    "imagenet-c-patch": {"root": "ImageNet-C-Patch", "corruptions": CORRUPTIONS},
}
LIST_FILE = "imagenet_test_image_ids.txt"
IMAGENET_C_URL = "https://zenodo.org/records/2235448"
IMAGENET_URL = "https://image-net.org"
LAYOUT = "<data_dir>/ImageNet-C/<corruption>/<severity>/<wnid>/<file>.JPEG"


def robustbench_image_list() -> list[str]:
    """robustbench's 5,000 ``<wnid>/<file>`` lines, in file order."""
    text = robustbench_helper_file(LIST_FILE).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_class_folders(root: Path, wnids: list[str], hint: str) -> None:
    """Raise unless ``root`` holds a folder for each of the 1,000 ImageNet wnids."""
    if not root.is_dir():
        raise TTABenchError(f"missing folder {root}; expected layout {hint}")
    present = {entry.name for entry in os.scandir(root) if entry.is_dir()}
    missing = [w for w in wnids if w not in present]
    if missing:
        raise TTABenchError(
            f"{root} has {len(wnids) - len(missing)} of the 1000 ImageNet class folders "
            f"(missing {missing[0]} and {len(missing) - 1} more); labels are indices among the "
            f"sorted 1000 wnid folders, so all must exist (expected layout {hint})"
        )


class ImageNetC(Suite):
    """ImageNet-C from disk, robustbench's 5,000-image protocol or the full 50,000 per split.

    Options: ``corruptions`` (some of the set's, comma-separated or a list, in the order
    given), ``severities``, ``n_examples``, ``mode`` (``"5000"`` or ``"full"``), ``val_dir``
    (clean ImageNet val, default ``<data_dir>/ImageNet/val`` when it exists), ``on_corrupt``
    (``"skip"`` or ``"error"``, see ``ttabench.suites.images``), ``corruption_set`` (a key of
    ``CORRUPTION_SETS``), ``root`` (its folder under ``data_dir``), ``dataset`` (the group of
    the evaluation splits), ``calibration`` (holdout and clean splits; default only for
    ImageNet-C).
    """

    name = "imagenetc"
    location_options = ("val_dir",)
    streams_from_disk = True
    num_classes = 1000

    def __init__(
        self,
        data_dir: str | Path | None = None,
        corruptions: str | list[str] | None = None,
        severities: str | int | list[int] | None = None,
        n_examples: int | None = None,
        mode: str = "5000",
        val_dir: str | Path | None = None,
        on_corrupt: str = "skip",
        corruption_set: str = "imagenet-c",
        root: str | None = None,
        dataset: str | None = None,
        calibration: bool | None = None,
    ) -> None:
        if corruption_set not in CORRUPTION_SETS:
            raise TTABenchError(f"corruption_set must be one of {', '.join(CORRUPTION_SETS)}, "
                                f"got {corruption_set!r}")
        spec = CORRUPTION_SETS[corruption_set]
        self.corruption_set = corruption_set
        self.group = dataset
        self.data_dir = resolve_data_dir(data_dir)
        self.root = self.data_dir / (root or spec["root"])
        self.mode = str(mode)
        if self.mode not in MODES:
            raise TTABenchError(f"imagenetc mode must be one of {', '.join(MODES)}, got '{mode}'")
        if self.mode == "5000" and corruption_set != "imagenet-c":
            raise TTABenchError("mode 5000 is robustbench's ImageNet-C image list; use "
                                f"mode=full for {corruption_set}")
        self.corruptions = parse_names(corruptions, spec["corruptions"], spec["corruptions"])
        self.severity_folders: dict[str, tuple[str, ...]] = spec.get("severity_folders", {})
        self.severities = parse_severities(severities)
        self.n_examples = parse_optional_int(n_examples, "n_examples")
        limit = 5000 if self.mode == "5000" else 50000
        if self.n_examples is not None and self.n_examples > limit:
            raise TTABenchError(f"n_examples must be in 1..{limit} in mode {self.mode}")
        self.on_corrupt = check_on_corrupt(on_corrupt)
        self.transform = ImageTransform(224, 256, only_if_needed=True)
        default_val = self.data_dir / "ImageNet" / "val"
        if val_dir is not None and not Path(val_dir).is_dir():
            raise TTABenchError(
                f"ImageNet val folder {val_dir} not found; expected <val_dir>/<wnid>/<file>.JPEG "
                f"(ImageNet val is published at {IMAGENET_URL})"
            )
        self.val_dir = Path(val_dir) if val_dir is not None else (
            default_val if default_val.is_dir() else None
        )
        self._folders: dict[str, Path] = {}
        for corruption in self.corruptions:
            for severity in self.severities:
                folder = self.root / corruption / self._severity_folder(corruption, severity)
                if not folder.is_dir():
                    fetch = (f"; `ttabench fetch {spec['fetch']}` downloads it, verified"
                             if "fetch" in spec else "")
                    raise TTABenchError(
                        f"ImageNet-C not found: missing {folder}; expected {LAYOUT} "
                        f"(download ImageNet-C from {IMAGENET_C_URL}{fetch}; then pass --data-dir)"
                    )
                self._folders[f"{corruption}-{severity}"] = folder
        self.calibration = (corruption_set == "imagenet-c") if calibration is None \
            else bool(calibration)
        self.holdouts: list[str] = []
        for corruption in HOLDOUT if self.calibration and corruption_set == "imagenet-c" else ():
            base = self._holdout_base(corruption)
            if base is None:
                continue
            self.holdouts.append(corruption)
            for severity in self.severities:
                self._folders[f"{corruption}-{severity}"] = base / str(severity)
        self._datasets: dict[str, ImageFileDataset] = {}
        self._wnids: list[str] | None = None

    def _severity_folder(self, corruption: str, severity: int) -> str:
        """The folder name of a severity (1-5) of a corruption: the set's own name (ImageNet-C-
        bar's generator names it by the corruption's parameter) when that folder exists, else
        the index (the authors' preprocessed ImageNet-C-bar copy names them 1-5)."""
        names = self.severity_folders.get(corruption)
        if names and (self.root / corruption / names[severity - 1]).is_dir():
            return names[severity - 1]
        return str(severity)

    def _holdout_base(self, corruption: str) -> Path | None:
        """``ImageNet-C/extra/<c>`` or ``ImageNet-C/<c>`` if it has every requested severity."""
        for base in (self.root / "extra" / corruption, self.root / corruption):
            if all((base / str(s)).is_dir() for s in self.severities):
                return base
        return None

    def splits(self) -> list[SplitSpec]:
        out = corruption_splits(self.corruptions, self.holdouts, self.severities,
                                clean=self.calibration and self.val_dir is not None)
        if self.group is None:
            return out
        return [replace(s, dataset=self.group) if s.role == "eval" else s for s in out]

    def wnids(self) -> list[str]:
        """The sorted 1000 ImageNet wnids (label = position)."""
        if self._wnids is None:
            self._wnids = imagenet_wnids()
        return self._wnids

    def dataset(self, split: SplitSpec) -> Dataset:
        if split.name not in self._datasets:
            if split.name == "clean" and self.val_dir is not None:
                folder = self.val_dir
            elif split.name in self._folders:
                folder = self._folders[split.name]
            else:
                raise TTABenchError(f"imagenetc has no split '{split.name}'")
            self._datasets[split.name] = self._index(folder, f"imagenetc split {split.name}")
        return self._datasets[split.name]

    def source_val(self) -> Dataset | None:
        if self.val_dir is None:
            return None
        if "clean" not in self._datasets:
            self._datasets["clean"] = self._index(self.val_dir, "imagenetc split clean")
        return self._datasets["clean"]

    def size(self, split: SplitSpec) -> int:
        if split.name in self._datasets:
            return len(self._datasets[split.name])
        if self.mode == "5000":
            return len(robustbench_image_list()[: self.n_examples])
        folder = self.val_dir if split.name == "clean" else self._folders[split.name]
        count = sum(len(list_images(folder / w)) for w in self.wnids() if (folder / w).is_dir())
        return count if self.n_examples is None else min(count, self.n_examples)

    def _index(self, folder: Path, where: str) -> ImageFileDataset:
        """Paths and labels of one split folder (see the module docstring for both modes)."""
        wnids = self.wnids()
        check_class_folders(folder, wnids, LAYOUT)
        label_of = {w: i for i, w in enumerate(wnids)}
        if self.mode == "5000":
            lines = robustbench_image_list()[: self.n_examples]
            paths = [folder / line for line in lines]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise TTABenchError(
                    f"{len(missing)} of the {len(paths)} files of robustbench's 5000-image list "
                    f"are missing in {folder} (e.g. {missing[0]}); the ImageNet-C copy is "
                    f"incomplete (download it from {IMAGENET_C_URL})"
                )
            labels = [label_of[line.split("/")[0]] for line in lines]
        else:
            paths, labels = [], []
            for wnid in wnids:
                files = list_images(folder / wnid)
                paths += files
                labels += [label_of[wnid]] * len(files)
            if not paths:
                raise TTABenchError(f"no image files in {folder}; expected {LAYOUT}")
            if self.n_examples is not None and self.n_examples < len(paths):
                keep = np.sort(
                    np.random.default_rng(0).choice(len(paths), self.n_examples, replace=False)
                )
                paths = [paths[i] for i in keep]
                labels = [labels[i] for i in keep]
        return screened_dataset(paths, labels, self.transform, self.on_corrupt, where)

    @property
    def skipped_files(self) -> dict[str, int]:
        """Unreadable files left out, per split indexed so far (not in ``record()``: it changes
        as splits are read, and the record is part of every cell's key)."""
        return {name: ds.skipped_files for name, ds in self._datasets.items()}

    def record(self) -> dict[str, Any]:
        image_list = robustbench_helper_file(LIST_FILE).read_bytes()
        return {
            "suite": self.name,
            **({"corruption_set": self.corruption_set,
                "root": relative_name(self.root, self.data_dir),
                "dataset": self.group} if self.corruption_set != "imagenet-c" or self.group
               else {}),
            **({"severity_folders": {c: [self._severity_folder(c, s) for s in self.severities]
                                     for c in self.corruptions}} if self.severity_folders else {}),
            "mode": self.mode,
            "image_list": (
                f"robustbench helper_files/{LIST_FILE} sha256:"
                f"{hashlib.sha256(image_list).hexdigest()[:16]}"
                if self.mode == "5000"
                else "all files, ImageFolder order"
            ),
            "n_examples": self.n_examples,
            "corruption_order": list(self.corruptions),
            "holdout_corruptions": list(self.holdouts),
            "severities": list(self.severities),
            "order": [s.name for s in self.splits()],
            "val_dir": None if self.val_dir is None else relative_name(self.val_dir, self.data_dir),
            "labels": "index among the sorted 1000 ImageNet wnids",
            "preprocessing": {**self.transform.record(), "image_size": 224},
            "on_corrupt": self.on_corrupt,
        }

    def location(self) -> dict[str, Any]:
        return {"data_dir": str(self.data_dir), "root": str(self.root),
                "val_dir": None if self.val_dir is None else str(self.val_dir)}
