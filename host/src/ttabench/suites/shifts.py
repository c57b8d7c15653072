"""``imagenet-shift``: the 23 ImageNet distribution shifts of the Weighted Flips paper's Table 1.

One typed record per Table-1 row (``SHIFTS``): which reader (``imagenetc``, ``imagefolder`` or
``ccc``) with which options reads it from ``data_dir``, its label space, its split structure,
the row it is averaged under (every split's ``dataset``), where it is published and the
conventions chosen where the paper and the dataset leave a choice open. The suite
``imagenet-shift`` takes ``shift=<key>`` and any reader option as an override, e.g.::

    ttabench run -s imagenet-shift --set suite.imagenet-shift.shift=imagenet-v2 --data-dir /data

Every record passes the labelled ImageNet val folder (``ImageNet/val`` under ``data_dir``) as
source validation, so DoC and ATC run on every dataset. Cells record the table entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.suites.ccc import CCC
from ttabench.suites.imagefolder import ImageFolderSuite
from ttabench.suites.imagenetc import ImageNetC

VAL = "ImageNet/val"
READERS: dict[str, type[Suite]] = {"imagenetc": ImageNetC, "imagefolder": ImageFolderSuite,
                                   "ccc": CCC}
IMAGENET_D_DOMAINS: tuple[str, ...] = ("real", "painting", "clipart", "sketch", "infograph",
                                       "quickdraw")
BG_VARIANTS: tuple[str, ...] = ("original", "only_bg_b", "only_bg_t", "no_fg", "only_fg",
                                "mixed_same", "mixed_rand", "mixed_next")
PATCH_TARGETS: tuple[str, ...] = ("487", "513", "546", "585", "804", "806", "878", "923", "954",
                                  "968")


@dataclass(frozen=True)
class Shift:
    """One Table-1 row: ``reader`` with ``options`` reads it; ``row`` groups its ``splits``."""

    key: str
    row: str
    splits: int
    reader: str
    options: dict[str, Any]
    published: str
    convention: str
    extra: dict[str, Any] = field(default_factory=dict)


def _corruptions(key: str, row: str, n_splits: int, published: str, convention: str,
                 **options: Any) -> Shift:
    return Shift(key, row, n_splits, "imagenetc",
                 {"corruption_set": key, "mode": "full", "dataset": row, **options},
                 published, convention)


def _folders(key: str, row: str, n_splits: int, root: str, class_map: str, published: str,
             convention: str, **options: Any) -> Shift:
    return Shift(key, row, n_splits, "imagefolder",
                 {"root": root, "name": key, "dataset": row, "class_map": class_map,
                  "source_val": VAL, **options}, published, convention)


_D = "https://ai.bu.edu/M3SDA/ (DomainNet / VisDA-2019); class map: bethgelab/robustness"
SHIFTS: dict[str, Shift] = {s.key: s for s in [
    _corruptions("imagenet-c", "ImageNet-C", 75, "https://zenodo.org/records/2235448",
                 "all 50,000 images of every split (mode full), as the reference reads them; "
                 "holdout corruptions and clean val are the calibration splits of f"),
    _corruptions("imagenet-c-bar", "ImageNet-C-bar", 50,
                 "https://github.com/facebookresearch/augmentation-corruption",
                 "generated from ImageNet val with make_imagenet_c_bar.py (severity folders "
                 "named by the csv parameters, '%.2f'); 10 corruptions x 5 severities"),
    _corruptions("imagenet-3dcc", "ImageNet-3DCC", 60, "https://3dcommoncorruptions.epfl.ch",
                 "12 corruptions x 5 severities, ImageNet val"),
    Shift("ccc", "CCC", 27, "ccc", {"dataset": "CCC", "max_images": 25_000},
          "https://github.com/oripress/CCC",
          "the 27 streams (3 baselines x 3 speeds x 3 seeds), first 25,000 images of each in "
          "stream order, then shuffled like any split"),
    _folders("stylized-imagenet", "Stylized-ImageNet", 1, "Stylized-ImageNet/val",
             "imagenet-1k", "https://github.com/rgeirhos/Stylized-ImageNet",
             "the 50,000 ImageNet val images stylized with the repository's AdaIN script "
             "(Painter by Numbers styles); the paper does not name its copy"),
    _folders("imagenet-v2", "ImageNet-V2", 3, "ImageNetV2", "index",
             "https://github.com/modestyachts/ImageNetV2",
             "three splits of one dataset (matched-frequency, threshold-0.7, top-images); "
             "folders 0..999 are the label itself (class_map index)",
             splits=["imagenetv2-matched-frequency-format-val",
                     "imagenetv2-threshold0.7-format-val", "imagenetv2-top-images-format-val"]),
    _folders("imagenet-sketch", "ImageNet-Sketch", 1, "ImageNet-Sketch/sketch", "imagenet",
             "https://github.com/HaohanWang/ImageNet-Sketch", "all 50,889 sketches, 1000 classes"),
    _folders("imagenet-r", "ImageNet-R", 1, "imagenet-r", "imagenet",
             "https://github.com/hendrycks/imagenet-r",
             "200 classes: logits restricted to them (the dataset's own evaluation)"),
    *[_folders(f"imagenet-d-{d}", f"ImageNet-D {d.capitalize()}", 1, "ImageNet-D", "mapped",
               _D, "Rusak et al.'s ImageNet-D (DomainNet images in ImageNet classes), each "
               "domain its own dataset; the class folders and the ImageNet-to-class mapping "
               "vector (JSON list of 1000 labels, -1 unmapped) that the reference code "
               "map_files.py writes; 1000-way top-1 mapped, unmapped = wrong",
               splits=[d], class_map_file=f"ImageNet-D/{d}.json") for d in IMAGENET_D_DOMAINS],
    _folders("imagenet-cartoon-drawing", "ImageNet-Cartoon & Drawing", 2, ".", "imagenet-1k",
             "https://github.com/oberman-lab/imagenetshift",
             "ImageNet val cartoonized and drawn (Salvador & Oberman, 2022), one dataset of 2 "
             "splits", splits=["imagenet-cartoon", "imagenet-drawing"]),
    _folders("bg-challenge", "BG Challenge", 8, "bg_challenge", "mapped",
             "https://github.com/MadryLab/backgrounds_challenge",
             "the 8 ImageNet-9 test variants (<variant>/val); the repository's in_to_in9.json "
             "maps the 1000-way top-1 class to the 9 classes, unmapped = wrong",
             splits=list(BG_VARIANTS), split_subdir="val",
             class_map_file="bg_challenge/in_to_in9.json"),
    _folders("imagenet-a", "ImageNet-A", 1, "imagenet-a", "imagenet",
             "https://github.com/hendrycks/natural-adv-examples",
             "200 classes: logits restricted to them (the dataset's own evaluation)"),
    _corruptions("imagenet-c-patch", "ImageNet-C Patch", 75,
                 "https://zenodo.org/records/7378906",
                 "Gu et al.'s patch-wise ImageNet-C corruptions (the Shift Happens release), "
                 "15 corruptions x 5 severities"),
    _folders("imagenet-hard", "ImageNet-Hard", 1, "ImageNet-Hard", "per-image",
             "https://huggingface.co/datasets/taesiri/imagenet-hard",
             "10,980 images exported from the Hugging Face dataset with labels.json (image -> "
             "its label list); right iff the top-1 class is in the image's list (the dataset's "
             "own metric)", labels_file="ImageNet-Hard/labels.json"),
    _folders("patch-imagenet", "Patch-ImageNet", 10, "Imagenet-Patch", "imagenet-1k",
             "https://zenodo.org/records/6568778",
             "ImageNet-Patch (Pintor et al.) as the Shift Happens release lays it out: 10 "
             "target-class patches on 5,000 val images; label = the true class, all 1000 logits",
             splits=list(PATCH_TARGETS)),
    _folders("imagenet-obfuscations", "ImageNet Obfuscations", 3, "ImageNet-Obfuscations",
             "imagenet-1k", "https://github.com/deepmind/image_obfuscation_benchmark",
             "the 3 hold-out obfuscations of the validation split, exported from the TFDS "
             "release to <obfuscation>/<wnid>/ folders",
             splits=["ColorPatternOverlay", "LowContrastTriangles", "PerspectiveComposition"]),
    _folders("objectnet", "ObjectNet", 1, "objectnet-1.0/images", "objectnet",
             "https://objectnet.dev",
             "the 113 classes with ImageNet counterparts only (the release's mappings/); "
             "1000-way top-1, right iff one of the class's ImageNet classes; 2-pixel border "
             "crop (the red frame)", border=2, class_map_file="objectnet-1.0/mappings"),
    _folders("ninco", "NINCO", 1, "NINCO/NINCO_OOD_classes", "none",
             "https://github.com/j-cb/NINCO",
             "64 classes none of which is an ImageNet class: every prediction is wrong, so the "
             "true accuracy is 0 and an estimator's error is its estimate"),
]}


class ShiftSuite(Suite):
    """One Table-1 dataset (``shift=<key of SHIFTS>``), read by its record's reader; other
    options override the record's reader options."""

    name = "imagenet-shift"
    location_options = tuple(dict.fromkeys(o for r in READERS.values() for o in r.location_options))

    def __init__(self, data_dir: str | Path | None = None, shift: str | None = None,
                 **overrides: Any) -> None:
        if shift not in SHIFTS:
            raise TTABenchError(f"suite imagenet-shift needs shift=<one of {', '.join(SHIFTS)}>, "
                                f"got {shift!r}")
        self.shift = SHIFTS[shift]
        options = {**self.shift.options, **overrides}
        try:
            self.inner = READERS[self.shift.reader](data_dir, **options)
        except TypeError as err:
            raise TTABenchError(f"imagenet-shift {shift}: bad options {overrides}: {err}") from None
        self.num_classes = self.inner.num_classes
        self.class_subset = self.inner.class_subset
        self.label_sets = self.inner.label_sets
        self.streams_from_disk = self.inner.streams_from_disk

    def splits(self) -> list[SplitSpec]:
        return self.inner.splits()

    def dataset(self, split: SplitSpec) -> Dataset:
        return self.inner.dataset(split)

    def size(self, split: SplitSpec) -> int:
        return self.inner.size(split)

    def source_val(self) -> Dataset | None:
        return self.inner.source_val()

    def record(self) -> dict[str, Any]:
        return {"suite": self.name, "shift": asdict(self.shift), "reader": self.inner.record()}

    def location(self) -> dict[str, Any]:
        return self.inner.location()
