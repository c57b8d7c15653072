"""Reader of the CIFAR-10-C on-disk layout, shared by ``cifar10c``, ``cifar100c`` and ``mnist-c``.

Layout of one suite folder ``<root>``::

    <root>/<corruption>.npy    uint8 (5 * n, H, W, 3), NHWC; severity s = rows [(s-1)*n, s*n)
    <root>/labels.npy          integer (5 * n,); n = len(labels) // 5
    <root>/clean.npy           optional uint8 (m, H, W, 3): uncorrupted labelled images
    <root>/clean_labels.npy    optional integer (m,)
    <root>/source_val.npy      optional uint8 (k, H, W, 3): labelled source-validation images
    <root>/source_val_labels.npy

Splits are ``<corruption>-<severity>``: the 15 corruptions (canonical order below) are scored
(role ``eval``); the four holdout corruptions (speckle_noise, gaussian_blur, spatter, saturate)
and ``clean`` become ``calibration`` splits when their files exist. ``source_val()`` is
``source_val.npy`` when present, else ``clean.npy`` (for CIFAR-10-C: put the CIFAR-10 test set
there), else None.

Option ``calibration = "meta-set"`` replaces those calibration splits by the sets of the
calibration meta-set (``ttabench.suites.meta_set``) built from ``source_val.npy`` (labelled
images the model was not trained on, and not the evaluation images): ``meta-<family>-<j>``,
dataset ``meta-<family>``, as many images as an evaluation split (before ``n_examples``),
cached under ``<cache>/meta-sets``. Its recipe is checked against the evaluation corruptions.

Arrays are opened with ``np.load(mmap_mode="r")``: a split reads only its own rows.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.paths import DATA_ENV, data_dir as resolve_data_dir

#: The usual order of the 15 evaluation corruptions (continual adaptation depends on it).
CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: The four extra corruptions of Hendrycks & Dietterich, used for calibration only.
HOLDOUT: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
CLEAN = "clean"
#: Where a suite's calibration splits come from (the ``calibration`` option).
CALIBRATIONS: tuple[str, ...] = ("holdout", "meta-set")


# --------------------------------------------------------------------------- option parsing


def parse_names(value: Any, default: tuple[str, ...], known: tuple[str, ...]) -> list[str]:
    """A list or comma string of corruption names (None -> ``default``); unknown ones are errors."""
    if value is None or value == "":
        return list(default)
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
    names = [n for n in names if n]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TTABenchError(
            f"unknown corruption(s) {', '.join(unknown)}; choose from: {', '.join(known)}"
        )
    return names


def parse_severities(value: Any) -> list[int]:
    """``None`` -> 1..5; an int, a list of ints, or a comma string such as ``"1,3,5"``."""
    if value is None or value == "":
        return list(SEVERITIES)
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, int):
        items = [value]
    else:
        items = list(value)
    try:
        severities = [int(v) for v in items]
    except ValueError:
        raise TTABenchError(f"severities must be integers 1-5, got '{value}'") from None
    if not severities or any(s not in SEVERITIES for s in severities):
        raise TTABenchError(f"severities must be integers 1-5, got '{value}'")
    return severities


def parse_optional_int(value: Any, what: str) -> int | None:
    """``None``/``"none"``/``""`` -> None, else a positive int (strings accepted)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise TTABenchError(f"{what} must be a positive integer, got '{value}'") from None
    if number <= 0:
        raise TTABenchError(f"{what} must be a positive integer, got '{value}'")
    return number


def parse_bool(value: Any, what: str) -> bool:
    """A bool, or one of the strings true/false/1/0/yes/no/on/off."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise TTABenchError(f"{what} must be true or false, got '{value}'")


# --------------------------------------------------------------------------- datasets


class ArrayRows(Dataset):
    """Rows ``[start, start + length)`` of a memory-mapped NHWC uint8 array and its labels.

    Items are ``(uint8 tensor (3, H, W), int label)``. The files are opened lazily (memory-mapped)
    so the dataset pickles cheaply into DataLoader workers.
    """

    def __init__(self, images: Path, labels: Path, start: int, length: int) -> None:
        self.images_path = Path(images)
        self.labels_path = Path(labels)
        self.start = int(start)
        self.length = int(length)
        self._images: np.ndarray | None = None
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return self.length

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        if self._images is None or self._labels is None:
            self._images = _open_npy(self.images_path)
            self._labels = _open_npy(self.labels_path)
        return self._images, self._labels

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        images, labels = self._open()
        row = self.start + index
        image = torch.from_numpy(np.ascontiguousarray(images[row].transpose(2, 0, 1)))
        return image, int(labels[row])

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole split at once: uint8 (N, 3, H, W) and int64 (N,) numpy arrays (a copy)."""
        images, labels = self._open()
        block = slice(self.start, self.start + self.length)
        return (
            np.ascontiguousarray(images[block].transpose(0, 3, 1, 2)),
            np.array(labels[block], dtype=np.int64),
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_images"] = state["_labels"] = None
        return state


def _open_npy(path: Path) -> np.ndarray:
    """A memory map of a .npy file; a truncated, corrupt or pickled file is a one-line error
    naming it (the map checks the file holds as many bytes as its header promises)."""
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise TTABenchError(
            f"{path} is not a readable .npy array ({reason}); the file is truncated or corrupt: "
            "replace it"
        ) from None


def _header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a .npy file, reading its header only."""
    array = _open_npy(path)
    return tuple(array.shape), array.dtype


def check_labels(path: Path, num_classes: int) -> None:
    """A labels file holds whole class indices in ``[0, num_classes)``, one dimension: a float
    label would be truncated and one out of range would count as wrong for every model."""
    labels = _open_npy(path)
    if labels.ndim != 1 or labels.dtype.kind not in "iuf":
        raise TTABenchError(f"{path} must hold one integer label per image, got "
                            f"{labels.dtype} {tuple(labels.shape)}")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise TTABenchError(f"{path} holds labels that are not whole numbers (e.g. "
                            f"{labels[labels != np.round(labels)][0]}); labels are class indices")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise TTABenchError(f"{path} holds labels outside 0..{num_classes - 1} (min "
                            f"{labels.min()}, max {labels.max()}); the suite has {num_classes} "
                            "classes")


# --------------------------------------------------------------------------- the suite


def corruption_splits(
    corruptions: Sequence[str], holdouts: Sequence[str], severities: Sequence[int], clean: bool
) -> list[SplitSpec]:
    """The splits of a corruption suite, in the recorded order: every evaluation corruption x
    severity (``"<corruption>-<severity>"``, role eval), then every holdout corruption x
    severity (role calibration), then ``clean`` (calibration) when present."""
    out = [SplitSpec(f"{c}-{s}", c, s, "eval") for c in corruptions for s in severities]
    out += [SplitSpec(f"{c}-{s}", c, s, "calibration") for c in holdouts for s in severities]
    if clean:
        out.append(SplitSpec(CLEAN, CLEAN, None, "calibration"))
    return out


class CorruptionArraySuite(Suite):
    """A corruption benchmark stored in the CIFAR-10-C layout (see the module docstring).

    Options (strings accepted, as the CLI passes them): ``corruptions`` (list or comma string,
    default the canonical 15), ``severities`` (1-5), ``n_examples`` (first n of every severity
    block, of the clean split and of every meta-set set), ``holdout`` (add the holdout
    corruptions and ``clean`` as calibration splits when their files exist), ``calibration``
    (``"holdout"``, the default: those splits; ``"meta-set"``: the sets of the calibration
    meta-set instead, see the module docstring).
    """

    name = "corruption-arrays"
    num_classes = 10
    #: Folder under the data directory and how to get the data (used in error messages).
    folder = "CORRUPTIONS"
    published_at = ""
    #: The ``ttabench fetch`` key that downloads the data ("" when none does).
    fetch_key = ""

    def __init__(
        self,
        data_dir: str | Path | None = None,
        corruptions: Any = None,
        severities: Any = None,
        n_examples: Any = None,
        holdout: Any = True,
        calibration: Any = "holdout",
    ) -> None:
        if calibration not in CALIBRATIONS:
            raise TTABenchError(f"{self.name}: calibration must be one of "
                                f"{', '.join(CALIBRATIONS)}, got {calibration!r}")
        self.calibration = str(calibration)
        self.root = self._root(data_dir)
        self.corruptions = parse_names(corruptions, CORRUPTIONS, CORRUPTIONS)
        self.severities = parse_severities(severities)
        self.n_examples = parse_optional_int(n_examples, "n_examples")
        self.holdout = parse_bool(holdout, "holdout")
        self._check_layout()
        labels_shape, _ = _header(self.root / "labels.npy")
        if len(labels_shape) != 1 or labels_shape[0] % 5 or labels_shape[0] == 0:
            raise TTABenchError(
                f"{self.root / 'labels.npy'} must hold 5*n labels (one block per severity), "
                f"got shape {labels_shape}"
            )
        self.n_per_severity = labels_shape[0] // 5
        self.holdout_present = (
            [c for c in HOLDOUT if (self.root / f"{c}.npy").is_file()] if self.holdout else []
        )
        self.has_clean = (self.root / "clean.npy").is_file() and (
            self.root / "clean_labels.npy"
        ).is_file()
        self.image_shape = self._check_arrays()
        for labels in ("labels", "clean_labels", "source_val_labels"):
            if (self.root / f"{labels}.npy").is_file():
                check_labels(self.root / f"{labels}.npy", self.num_classes)
        for images in ("clean", "source_val"):
            self._check_label_count(images)
        self.meta_folder: Path | None = None
        self.meta_manifest: dict[str, Any] = {}
        if self.calibration == "meta-set":
            self._build_meta_set()

    def _build_meta_set(self) -> None:
        """Build (or find in the cache) the meta-set of ``source_val.npy``."""
        from ttabench.suites.meta_set import DEFAULT_RECIPE, cached_meta_set, check_recipe

        images, labels = self.root / "source_val.npy", self.root / "source_val_labels.npy"
        if not (images.is_file() and labels.is_file()):
            raise TTABenchError(
                f"{self.name}: calibration='meta-set' needs labelled images the model was not "
                f"trained on and that are not the evaluation images, in {images} and "
                f"{labels.name}; put them there or use calibration='holdout'")
        check_recipe(DEFAULT_RECIPE, CORRUPTIONS)
        self.meta_folder, self.meta_manifest = cached_meta_set(
            np.load(images), np.load(labels), DEFAULT_RECIPE, seed=0,
            set_size=self.n_per_severity)

    # ----------------------------------------------------------------- layout checks

    def _root(self, data_dir: str | Path | None) -> Path:
        return resolve_data_dir(data_dir) / self.folder

    def _layout_error(self, missing: str) -> TTABenchError:
        where = f"; the data is published at {self.published_at}" if self.published_at else ""
        if self.fetch_key:
            where += f" (`ttabench fetch {self.fetch_key}` downloads it, verified, into this layout)"
        return TTABenchError(
            f"{self.name}: {missing} not found; expected <data_dir>/{self.folder}/<corruption>.npy "
            f"and labels.npy (here {self.root}); point at the data folder with --data-dir or "
            f"{DATA_ENV}{where}"
        )

    def _check_layout(self) -> None:
        """Raise the one-line layout error when the folder or a needed file is missing."""
        if not self.root.is_dir():
            raise self._layout_error(f"folder {self.root}")
        needed = ["labels.npy"] + [f"{c}.npy" for c in self.corruptions]
        missing = [name for name in needed if not (self.root / name).is_file()]
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise self._layout_error(shown)

    def _check_label_count(self, stem: str) -> None:
        """``<stem>_labels.npy`` holds one label per image of ``<stem>.npy`` (when both exist):
        fewer would fail inside a cell, more would pair images with other images' labels."""
        images, labels = self.root / f"{stem}.npy", self.root / f"{stem}_labels.npy"
        if images.is_file() and labels.is_file():
            n_images, n_labels = _header(images)[0][0], _header(labels)[0][0]
            if n_images != n_labels:
                raise TTABenchError(f"{labels} holds {n_labels} labels but {images} holds "
                                    f"{n_images} images; they must match one to one")

    def _check_arrays(self) -> tuple[int, int]:
        """Every used array is readable, uint8 NHWC with 3 channels and 5*n rows (any number
        for clean and source-val images); returns (H, W)."""
        size: tuple[int, int] | None = None
        files = [f"{c}.npy" for c in self.corruptions + self.holdout_present]
        files += ["clean.npy"] if self.has_clean else []
        files += ["source_val.npy"] if (self.root / "source_val.npy").is_file() else []
        for name in files:
            shape, dtype = _header(self.root / name)
            rows_ok = name in ("clean.npy", "source_val.npy") or shape[0] == 5 * self.n_per_severity
            if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or not rows_ok:
                raise TTABenchError(
                    f"{self.root / name} must be uint8 (5*{self.n_per_severity}, H, W, 3) NHWC, "
                    f"got {dtype} {shape}"
                )
            if size is None:
                size = (shape[1], shape[2])
            elif size != (shape[1], shape[2]):
                raise TTABenchError(f"{self.root / name}: image size {shape[1:3]} != {size}")
        assert size is not None
        return size

    # ----------------------------------------------------------------- Suite API

    def splits(self) -> list[SplitSpec]:
        """The 15 (or chosen) corruptions x severities, then holdout x severities and clean,
        or the meta-set's sets (``calibration="meta-set"``)."""
        if self.calibration == "meta-set":
            return corruption_splits(self.corruptions, [], self.severities, clean=False) + [
                SplitSpec(s["name"], s["dataset"], None, "calibration")
                for s in self.meta_manifest["sets"]]
        return corruption_splits(self.corruptions, self.holdout_present, self.severities,
                                 clean=self.holdout and self.has_clean)

    def _take(self, available: int) -> int:
        return available if self.n_examples is None else min(self.n_examples, available)

    def dataset(self, split: SplitSpec) -> ArrayRows:
        """Rows of the split's severity block (first ``n_examples`` of it)."""
        meta = {s["name"]: s for s in self.meta_manifest.get("sets", [])}
        if split.name in meta and self.meta_folder is not None:
            found = meta[split.name]
            return ArrayRows(self.meta_folder / found["file"], self.meta_folder / found["labels"],
                             found["start"], self._take(found["length"]))
        if split.dataset == CLEAN:
            if not self.has_clean:
                raise TTABenchError(f"{self.name}: no clean.npy in {self.root}")
            rows = _header(self.root / "clean.npy")[0][0]
            return ArrayRows(
                self.root / "clean.npy", self.root / "clean_labels.npy", 0, self._take(rows)
            )
        known = self.corruptions + self.holdout_present
        if split.dataset not in known or split.severity not in self.severities:
            raise TTABenchError(f"{self.name}: unknown split '{split.name}'")
        n = self.n_per_severity
        return ArrayRows(
            self.root / f"{split.dataset}.npy",
            self.root / "labels.npy",
            (split.severity - 1) * n,
            self._take(n),
        )

    def source_val(self) -> ArrayRows | None:
        """``source_val.npy`` if present, else ``clean.npy`` if present, else None (all rows:
        ``n_examples`` shortens the target splits only)."""
        for stem, labels in (("source_val", "source_val_labels"), ("clean", "clean_labels")):
            images_path, labels_path = self.root / f"{stem}.npy", self.root / f"{labels}.npy"
            if images_path.is_file() and labels_path.is_file():
                return ArrayRows(images_path, labels_path, 0, _header(images_path)[0][0])
        return None

    def _files(self) -> list[str]:
        """The .npy files this suite reads, in a fixed order."""
        stems = ["labels", *self.corruptions, *self.holdout_present]
        stems += ["clean", "clean_labels"] if self.has_clean else []
        stems += ["source_val", "source_val_labels"]
        return [f"{stem}.npy" for stem in stems if (self.root / f"{stem}.npy").is_file()]

    def record(self) -> dict[str, Any]:
        """The data's identity is its folder's name and each file's name and size (the
        absolute folder is in ``location()``)."""
        source_val = self.source_val()
        return {
            "suite": self.name,
            "root": self.folder,
            "file_sizes": {name: (self.root / name).stat().st_size for name in self._files()},
            "layout": "CIFAR-10-C (<corruption>.npy NHWC uint8, labels.npy, 5 severity blocks)",
            "order": [s.name for s in self.splits()],
            "corruptions": list(self.corruptions),
            "severities": list(self.severities),
            "holdout": list(self.holdout_present),
            "clean_split": self.holdout and self.has_clean,
            "n_per_severity": self.n_per_severity,
            "n_examples": self.n_examples,
            "image_size": list(self.image_shape),
            "num_classes": self.num_classes,
            "source_val": None if source_val is None else source_val.images_path.name,
            "calibration": self.calibration,
            **({"meta_set": {"key": self.meta_manifest["key"], "seed": self.meta_manifest["seed"],
                             "set_size": self.meta_manifest["set_size"],
                             "n_sets": len(self.meta_manifest["sets"]),
                             "recipe": self.meta_manifest["recipe"]}}
               if self.calibration == "meta-set" else {}),
        }

    def location(self) -> dict[str, Any]:
        return {"root": str(self.root)}
