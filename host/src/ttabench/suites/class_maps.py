"""Class maps: how the class folders of an image dataset become the labels the host scores.

A ``ClassMap`` gives each class folder name its label, the model's class count, the logit
subset (or None) and the label sets (or None); see ``ttabench.api`` for how the host scores
labels. The kinds (option ``class_map`` of the ``imagefolder`` suite):

- ``imagenet``: folders are ImageNet wnids; a wnid's model index is its position among the
  sorted 1000. With all 1000 present the labels are those indices; with fewer (ImageNet-R and
  -A have 200) the logits are restricted to the sorted model indices present (the union over
  all splits) and a label is a position in that subset.
- ``imagenet-1k``: wnid folders, always all 1000 logits, whatever folders are present (datasets
  of the full label space whose images miss some classes: ImageNet-Patch's 5,000 images).
- ``index``: folders are named by the integer model index itself, ``0`` ... ``999``
  (ImageNet-V2); label = ``int(name)``.
- ``sorted``: torchvision's ImageFolder rule, label = position of the name among the sorted
  folder names. Integer-named folders are refused (sorting strings puts '10' before '2', so
  folder '2' would get label 4 of 0..10), unless ``integer_names="sorted"`` insists.
- ``mapped``: a many-to-one map from model classes to the dataset's classes, from a JSON file
  (``class_map_file``): either ``{"<model index>": <dataset label or -1>}`` (the backgrounds
  challenge's ``in_to_in9.json``) or a list of ``num_classes`` such labels (ImageNet-D's mapping
  vector). A dataset label is the position of its folder among the sorted folder names; a
  prediction is right iff the model's top-1 class maps to the image's label, so a top-1 class
  mapped to -1 is wrong. All 1000 logits are kept.
- ``objectnet``: ObjectNet's own mapping files (``mappings/`` of the release): only the folders
  of the 113 classes with ImageNet counterparts are kept; a prediction is right iff the
  1000-way top-1 class is one of the ImageNet classes mapped to the image's ObjectNet class.
- ``none``: the dataset has none of the model's classes (NINCO's out-of-distribution classes):
  every label is -1, so accuracy is 0 by definition; all logits are kept.
- ``per-image``: each image lists its correct model classes in a JSON file (``labels_file``:
  ``{"<path relative to the root>": [model indices]}``, ImageNet-Hard's multi-label images); a
  prediction is right iff it is in the image's list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttabench.errors import TTABenchError
from ttabench.suites.images import imagenet_wnids

CLASS_MAPS: tuple[str, ...] = (
    "imagenet", "imagenet-1k", "index", "sorted", "mapped", "objectnet", "none", "per-image",
)
OBJECTNET_FILES: tuple[str, ...] = (
    "folder_to_objectnet_label.json", "objectnet_to_imagenet_1k.json",
    "pytorch_to_imagenet_2012_id.json", "imagenet_to_label_2012_v2",
)


@dataclass(frozen=True)
class ClassMap:
    """Labels of class folders (folders absent from ``label_of`` are left out), the model's
    class count, the logit subset and the label sets (see ``ttabench.api``)."""

    kind: str
    label_of: dict[str, int]
    num_classes: int
    class_subset: list[int] | None = None
    label_sets: list[tuple[int, ...]] | None = None


def read_json(path: Path, what: str) -> Any:
    """A JSON file's content; a missing or broken file is a one-line error naming ``what``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TTABenchError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TTABenchError(f"{what} {path} is not valid JSON: {err}") from None


def _imagenet_classes(num_classes: int | None) -> tuple[dict[str, int], int]:
    total = 1000 if num_classes is None else int(num_classes)
    if total != 1000:
        raise TTABenchError(f"an ImageNet class map needs num_classes=1000, got {total}")
    return {w: i for i, w in enumerate(imagenet_wnids())}, total


def _wnid_map(kind: str, folders: list[str], root: Path, num_classes: int | None) -> ClassMap:
    index, total = _imagenet_classes(num_classes)
    unknown = [f for f in folders if f not in index]
    if unknown:
        raise TTABenchError(
            f"class folder '{unknown[0]}' in {root} is not an ImageNet wnid "
            f"({len(unknown)} such folders); choose another class_map"
        )
    if kind == "imagenet-1k" or len(folders) == 1000:
        return ClassMap(kind, {f: index[f] for f in folders}, total)
    subset = sorted(index[f] for f in folders)
    position = {model_index: i for i, model_index in enumerate(subset)}
    return ClassMap(kind, {f: position[index[f]] for f in folders}, total, subset)


def _index_map(folders: list[str], root: Path, num_classes: int | None) -> ClassMap:
    total = 1000 if num_classes is None else int(num_classes)
    bad = [f for f in folders if not (f.isdigit() and int(f) < total and str(int(f)) == f)]
    if bad:
        raise TTABenchError(
            f"class_map=index needs folders named 0..{total - 1} (the model index itself); "
            f"{root} has '{bad[0]}' ({len(bad)} such folders)"
        )
    return ClassMap("index", {f: int(f) for f in folders}, total)


def _sorted_map(folders: list[str], root: Path, num_classes: int | None,
                integer_names: str) -> ClassMap:
    total = len(folders) if num_classes is None else int(num_classes)
    if len(folders) > total:
        raise TTABenchError(f"{root} has {len(folders)} class folders but num_classes={total}")
    numeric = [f for f in folders if f.isdigit()]
    if numeric and integer_names != "sorted":
        shown = ", ".join(f"'{f}' -> {i}" for i, f in enumerate(folders) if f.isdigit())
        raise TTABenchError(
            f"{root} has integer-named class folders, which class_map=sorted labels by their "
            f"position in string order ({shown[:80]}...); use class_map=index when the name is "
            "the label (ImageNet-V2), or integer_names=sorted to insist"
        )
    return ClassMap("sorted", {f: i for i, f in enumerate(folders)}, total)


def label_sets_of(prediction_map: list[int], n_labels: int) -> list[tuple[int, ...]]:
    """``label_sets[y]`` = the model classes whose prediction counts as label ``y``."""
    return [tuple(i for i, y in enumerate(prediction_map) if y == label)
            for label in range(n_labels)]


def _mapped(folders: list[str], root: Path, num_classes: int | None,
            map_file: Path | None) -> ClassMap:
    if map_file is None:
        raise TTABenchError("class_map=mapped needs class_map_file=<JSON map of model classes>")
    total = 1000 if num_classes is None else int(num_classes)
    data = read_json(map_file, "class map file")
    if isinstance(data, dict):
        try:
            entries = {int(k): int(v) for k, v in data.items()}
        except (TypeError, ValueError):
            raise TTABenchError(f"class map file {map_file}: keys and values must be "
                                "integers") from None
        prediction_map = [entries.get(i, -1) for i in range(total)]
    elif isinstance(data, list) and len(data) == total:
        prediction_map = [int(v) for v in data]
    else:
        raise TTABenchError(f"class map file {map_file} must be a {{model index: label}} object "
                            f"or a list of {total} labels")
    out_of_range = [y for y in prediction_map if not -1 <= y < len(folders)]
    if out_of_range:
        raise TTABenchError(f"class map file {map_file} maps to label {out_of_range[0]} but "
                            f"{root} has {len(folders)} class folders (labels 0..{len(folders) - 1})")
    return ClassMap("mapped", {f: i for i, f in enumerate(folders)}, total, None,
                    label_sets_of(prediction_map, len(folders)))


def objectnet_classes(mappings: Path) -> dict[str, list[int]]:
    """ObjectNet folder -> the model indices of its ImageNet classes (the 113 overlapping
    classes), from the release's ``mappings/`` files: folder -> ObjectNet label -> ImageNet
    label strings (``"; "``-separated) -> line of ``imagenet_to_label_2012_v2`` -> model index
    (``pytorch_to_imagenet_2012_id.json`` maps model index -> line)."""
    missing = [name for name in OBJECTNET_FILES if not (mappings / name).is_file()]
    if missing:
        raise TTABenchError(f"ObjectNet mapping file {mappings / missing[0]} not found; "
                            "expected the mappings/ folder of objectnet-1.0")
    folder_label = read_json(mappings / OBJECTNET_FILES[0], "ObjectNet mapping")
    label_names = read_json(mappings / OBJECTNET_FILES[1], "ObjectNet mapping")
    index_line = read_json(mappings / OBJECTNET_FILES[2], "ObjectNet mapping")
    lines = [line.strip() for line in (mappings / OBJECTNET_FILES[3]).read_text().splitlines()]
    index_of_name = {lines[int(line)]: int(index) for index, line in index_line.items()}
    out: dict[str, list[int]] = {}
    for folder, label in folder_label.items():
        if label in label_names:
            names = [name.strip() for name in label_names[label].split(";")]
            unknown = [name for name in names if name not in index_of_name]
            if unknown:
                raise TTABenchError(f"ObjectNet mapping names ImageNet class {unknown[0]!r}, "
                                    f"which is not in {OBJECTNET_FILES[3]}")
            out[folder] = sorted(index_of_name[name] for name in names)
    return out


def _objectnet(folders: list[str], root: Path, num_classes: int | None,
               mappings: Path) -> ClassMap:
    _, total = _imagenet_classes(num_classes)
    classes = objectnet_classes(mappings)
    kept = [f for f in folders if f in classes]
    if not kept:
        raise TTABenchError(f"none of the class folders of {root} has an ImageNet class in "
                            f"the ObjectNet mappings of {mappings}")
    return ClassMap("objectnet", {f: i for i, f in enumerate(kept)}, total, None,
                    [tuple(classes[f]) for f in kept])


def build_class_map(kind: str, folders: list[str], root: Path, *, num_classes: int | None,
                    class_map_file: Path | None = None,
                    integer_names: str = "refuse") -> ClassMap:
    """The ``ClassMap`` of sorted class ``folders`` (the union over a suite's splits)."""
    if kind in ("imagenet", "imagenet-1k"):
        return _wnid_map(kind, folders, root, num_classes)
    if kind == "index":
        return _index_map(folders, root, num_classes)
    if kind == "sorted":
        return _sorted_map(folders, root, num_classes, integer_names)
    if kind == "mapped":
        return _mapped(folders, root, num_classes, class_map_file)
    if kind == "objectnet":
        return _objectnet(folders, root, num_classes, class_map_file or root.parent / "mappings")
    if kind == "none":
        return ClassMap("none", {f: -1 for f in folders}, 1000 if num_classes is None
                        else int(num_classes))
    raise TTABenchError(f"class_map must be one of {', '.join(CLASS_MAPS)}, got '{kind}'")


def per_image_labels(labels_file: Path, num_classes: int) -> tuple[dict[str, int],
                                                                   list[tuple[int, ...]]]:
    """Relative path -> label, and the label sets, from a ``per-image`` labels file."""
    data = read_json(labels_file, "labels file")
    if not isinstance(data, dict) or not data:
        raise TTABenchError(f"labels file {labels_file} must map image paths to lists of "
                            "model indices")
    sets: dict[tuple[int, ...], int] = {}
    label_of: dict[str, int] = {}
    for path, classes in sorted(data.items()):
        members = tuple(sorted({int(c) for c in (classes if isinstance(classes, list)
                                                   else [classes])}))
        if not members or not all(0 <= c < num_classes for c in members):
            raise TTABenchError(f"labels file {labels_file}: {path} needs model indices in "
                                f"0..{num_classes - 1}, got {classes!r}")
        label_of[path] = sets.setdefault(members, len(sets))
    return label_of, list(sets)


def imagenet_val_labels(class_subset: list[int] | None) -> dict[str, int]:
    """wnid -> label of the labelled ImageNet val folder: the model index, or the position in
    ``class_subset`` (wnids outside the subset are absent)."""
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    if class_subset is None:
        return index
    position = {model_index: i for i, model_index in enumerate(class_subset)}
    return {w: position[i] for w, i in index.items() if i in position}
