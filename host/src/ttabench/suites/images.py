"""Reading image files for the folder-based suites: indexing, decoding, preprocessing.

Design (shared by ``imagenetc``, ``imagefolder`` and ``UnlabelledFolder``):

- **Indexing is eager, decoding is lazy.** A dataset stores only its file paths (one numpy
  byte-string array, so forked DataLoader workers do not copy it on access) and its integer
  labels; every ``__getitem__`` opens, decodes and preprocesses one file. Streaming a
  50,000-image split therefore holds only the batches in flight.
- **Corrupt files are screened at index time.** ``screen_files`` opens every file with PIL and
  calls ``verify()`` (reads the header and, for PNG, checks chunk CRCs; it does not decode the
  pixels, so it costs a fraction of a millisecond per file). With ``on_corrupt="skip"`` (the
  default) an unreadable file is left out of the index, a warning names it, and the count is
  exposed as ``ImageFileDataset.skipped_files`` and in each cell (``data.skipped_files``); with
  ``on_corrupt="error"`` the first unreadable file raises a TTABenchError before any work
  starts. A file that passes the screen but still fails to decode when read (damage past the
  header of a JPEG) raises a TTABenchError naming it: skipping it then would shift the indices
  of a split that is already being streamed, so the user removes it and re-runs.
- **Preprocessing** (``ImageTransform``): resize the shorter side to ``resize`` (bilinear,
  antialiased; torchvision's ``Resize(resize)``), then center-crop ``image_size``, i.e. the
  standard ImageNet evaluation ``Resize(256) + CenterCrop(224)``; with ``only_if_needed``
  images already of size ``image_size`` x ``image_size`` are passed through untouched (the
  ImageNet-C files are 224 px already). Output: uint8 tensor (3, image_size, image_size).
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ttabench.errors import TTABenchError

if TYPE_CHECKING:
    from ttabench.api import LoadedModel, Suite

#: File name endings that count as images (compared case-insensitively: ``.JPEG`` matches).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
OnCorrupt = Literal["skip", "error"]
ON_CORRUPT_CHOICES: tuple[OnCorrupt, ...] = ("skip", "error")


class CorruptImageWarning(UserWarning):
    """An image file was unreadable and left out of a split."""


def is_image_file(path: str | Path) -> bool:
    """True when the name ends with one of ``IMAGE_EXTENSIONS`` (any letter case)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: Path) -> list[Path]:
    """Every image file below ``root`` (recursive), sorted by relative path string.

    Only regular files count (a FIFO, device or socket named ``*.png`` is left out without
    being opened, so it cannot hang the index; a broken link too). Links to folders are
    followed, but a folder already listed (same device and inode) is not entered again: a link
    loop lists each file once. A folder that cannot be read is a TTABenchError naming it (a
    silently missing folder would shift the split).
    """
    found: list[Path] = []
    entered: set[tuple[int, int]] = set()
    pending = [Path(root)]
    while pending:
        directory = pending.pop()
        try:
            info = directory.stat()
            if (info.st_dev, info.st_ino) in entered:
                continue
            entered.add((info.st_dev, info.st_ino))
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as exc:
            raise TTABenchError(f"cannot list image folder {directory}: "
                                f"{exc.strerror or exc}") from None
        folders = []
        for entry in entries:
            if entry.is_dir():
                folders.append(Path(entry.path))
            elif is_image_file(entry.name) and entry.is_file():  # is_file: regular, link followed
                found.append(Path(entry.path))
        pending.extend(reversed(folders))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def class_folder_files(folder: Path, label_of: dict[str, int]) -> tuple[list[Path], list[int]]:
    """The images of the class folders of ``folder`` that ``label_of`` names (in sorted folder
    order, each folder's files sorted) and their labels; other folders are left out."""
    paths: list[Path] = []
    labels: list[int] = []
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    for name in names:
        if name in label_of:
            files = list_images(folder / name)
            paths += files
            labels += [label_of[name]] * len(files)
    return paths, labels


def check_on_corrupt(on_corrupt: str) -> OnCorrupt:
    """Validate the ``on_corrupt`` option: the choice it names."""
    for choice in ON_CORRUPT_CHOICES:
        if on_corrupt == choice:
            return choice
    raise TTABenchError(
        f"on_corrupt must be one of {', '.join(ON_CORRUPT_CHOICES)}, got '{on_corrupt}'"
    )


#: What PIL raises for a file it cannot read: damage, an unknown format, or more pixels than
#: its decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, twice over).
UNREADABLE = (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError)


def unreadable_reason(path: str | Path) -> str | None:
    """Why PIL cannot read the file (open + verify), or None when it looks fine."""
    try:
        with Image.open(path) as image:
            image.verify()
    except UNREADABLE as exc:
        return " ".join(str(exc).split()) or type(exc).__name__
    return None


def screen_files(
    paths: Sequence[Path], on_corrupt: OnCorrupt, where: str
) -> tuple[list[int], list[str]]:
    """Indices of the readable files in ``paths`` and the list of skipped file paths.

    ``where`` names the split in warnings and errors. With ``on_corrupt="error"`` the first
    unreadable file raises a TTABenchError.
    """
    kept: list[int] = []
    skipped: list[str] = []
    for i, path in enumerate(paths):
        reason = unreadable_reason(path)
        if reason is None:
            kept.append(i)
            continue
        if on_corrupt == "error":
            raise TTABenchError(
                f"unreadable image file {path} in {where} ({reason}); remove or replace it, "
                "or pass on_corrupt=skip to leave such files out"
            )
        skipped.append(str(path))
    if skipped:
        shown = ", ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")
        warnings.warn(
            f"{where}: skipped {len(skipped)} unreadable image file(s): {shown}",
            CorruptImageWarning,
            stacklevel=2,
        )
    return kept, skipped


@dataclass(frozen=True)
class ImageTransform:
    """Resize the shorter side to ``resize`` then center-crop ``image_size`` (see module doc).

    ``resize=None`` center-crops only (padding with zeros if the image is smaller).
    ``only_if_needed=True`` passes ``image_size`` x ``image_size`` images through untouched.
    ``border`` pixels are cut off each side first (ObjectNet's frame).
    """

    image_size: int = 224
    resize: int | None = 256
    only_if_needed: bool = False
    border: int = 0

    def __call__(self, image: Image.Image) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = to_rgb(image)
        if self.border:
            b = self.border
            image = image.crop((b, b, image.width - b, image.height - b))
        if not (self.only_if_needed and image.size == (self.image_size, self.image_size)):
            if self.resize:
                image = TF.resize(image, self.resize)
            image = TF.center_crop(image, [self.image_size, self.image_size])
        array = np.asarray(image, dtype=np.uint8)
        return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()

    def record(self) -> dict[str, Any]:
        """The preprocessing facts a cell records."""
        return {
            **({"border_crop": self.border} if self.border else {}),
            "resize": self.resize,
            "center_crop": self.image_size,
            "interpolation": "bilinear (antialiased)",
            "only_if_not_already": self.only_if_needed,
            "output": "uint8 RGB (3, H, W)",
        }


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB. A 16-bit gray image (PIL modes ``I;16*``, a 16-bit PNG) is scaled
    to 8 bits, ``round(v / 257)`` (65535 -> 255), as is a 32-bit one (mode ``I``) whose values
    fit 16 bits; PIL's own ``convert`` would clip every value above 255 to white."""
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        if image.mode == "I" and (values.min(initial=0) < 0 or values.max(initial=0) > 65535):
            raise ValueError(f"32-bit integer image with values outside 0..65535 "
                             f"({values.min()}..{values.max()})")
        scaled = np.round(values / 257.0).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    return image.convert("RGB")


def decode(path: str | BinaryIO, transform: ImageTransform, name: str | None = None) -> torch.Tensor:
    """Open, decode and preprocess one file (a path, or an open binary file called ``name``);
    a decoding failure is a TTABenchError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return transform(image)
    except UNREADABLE as exc:
        raise TTABenchError(
            f"image file {name or path} passed the index-time check but failed to decode "
            f"({' '.join(str(exc).split())}); remove or replace it and run again"
        ) from exc


class ImageFileDataset(Dataset[tuple[torch.Tensor, int]]):
    """Items ``(uint8 tensor (3, H, W), int label)`` decoded from files on every access.

    Holds only the paths (numpy byte strings) and labels, never decoded images.
    ``skipped_files`` counts the files left out at index time (``skipped`` lists them).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Sequence[int] | np.ndarray,
        transform: ImageTransform,
        skipped: Iterable[str] = (),
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = np.array([os.fsencode(str(p)) for p in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.skipped = list(skipped)

    @property
    def skipped_files(self) -> int:
        """How many unreadable files were left out of this dataset at index time."""
        return len(self.skipped)

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, index: int) -> str:
        """The file path of item ``index``."""
        return os.fsdecode(self.paths[index])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return decode(self.path(index), self.transform), int(self.labels[index])


def screened_dataset(
    paths: Sequence[Path],
    labels: Sequence[int],
    transform: ImageTransform,
    on_corrupt: OnCorrupt,
    where: str,
) -> ImageFileDataset:
    """Screen ``paths`` (see ``screen_files``) and build the dataset of the readable ones."""
    kept, skipped = screen_files(paths, on_corrupt, where)
    return ImageFileDataset(
        [paths[i] for i in kept], [labels[i] for i in kept], transform, skipped
    )


class UnlabelledFolder(ImageFileDataset):
    """Every image below ``root`` (recursive, sorted), items ``(uint8 image, -1)``.

    For ``ttabench estimate`` on data without labels. Unreadable files are skipped and counted
    (``skipped_files``), or rejected with ``on_corrupt="error"``.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        resize: int | None = 256,
        on_corrupt: str = "skip",
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise TTABenchError(f"image folder {root} does not exist or is not a folder")
        paths = list_images(root)
        if not paths:
            raise TTABenchError(
                f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found below {root}"
            )
        kept, skipped = screen_files(paths, check_on_corrupt(on_corrupt), str(root))
        super().__init__(
            [paths[i] for i in kept], [-1] * len(kept), ImageTransform(image_size, resize), skipped
        )
        self.root = root


def check_num_classes(suite: Suite, model: LoadedModel) -> None:
    """Refuse a model whose output count does not fit the suite, before any work starts.

    ``suite.num_classes`` is the number of model outputs the suite's labels refer to; for a
    class-subset suite (``suite.class_subset``, e.g. ImageNet-R's 200 of the 1000 ImageNet
    classes) every subset index must also be a valid logit index of the model.
    """
    model_classes = int(model.num_classes)
    model_id, suite_name = model.model_id, suite.name
    if model_classes != int(suite.num_classes):
        raise TTABenchError(
            f"model {model_id} has {model_classes} classes but suite {suite_name} has "
            f"{suite.num_classes}; use a model trained on the suite's label set"
        )
    subset = suite.class_subset
    if subset is not None and (min(subset) < 0 or max(subset) >= model_classes):
        raise TTABenchError(
            f"suite {suite_name} restricts logits to class indices up to {max(subset)} but "
            f"model {model_id} has only {model_classes} classes"
        )


# --------------------------------------------------------------------------- ImageNet classes


def robustbench_helper_file(name: str) -> Path:
    """Path of a file in robustbench's ``helper_files`` folder, found without importing it."""
    spec = importlib.util.find_spec("robustbench")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "helper_files" / name
        if path.is_file():
            return path
    raise TTABenchError(
        f"robustbench's helper file {name} was not found; install robustbench==1.1.1"
    )


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in sorted order (model class index = position).

    Read from robustbench's ``imagenet_class_to_id_map.json``; its ids are checked to be the
    positions in sorted order.
    """
    mapping = json.loads(robustbench_helper_file("imagenet_class_to_id_map.json").read_text())
    wnids = sorted(mapping)
    if len(wnids) != 1000 or any(mapping[w] != i for i, w in enumerate(wnids)):
        raise TTABenchError("robustbench's imagenet_class_to_id_map.json is not the sorted 1000")
    return wnids
