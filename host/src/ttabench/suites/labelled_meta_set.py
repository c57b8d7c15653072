"""Suite ``labelled-meta-set``: the calibration meta-set built from a folder of your labelled
images, the suite ``ttabench calibrate`` runs.

Its splits are the sets of the calibration meta-set (``ttabench.suites.meta_set``: labelled
synthetic shifts of the images, one dataset per family, all ``calibration``-role) and its
source-validation split is the labelled images themselves, clean. The images are read by
``ttabench.suites.labelled_folder`` (class folders or a labels file, checked against the
model's classes) and preprocessed as the model's inputs (resize the shorter side, center crop).

Options: ``root`` (the folder) and ``labels`` (a CSV labels file; both location options, not in
any key), ``num_classes`` and ``class_names`` (the model's), ``image_size`` and ``resize``,
``set_size`` (images per set; default: as many as the labelled images), ``meta_seed`` (the
meta-set's seed), ``families`` (names of the recipe's families, ``clean``, a transform, or two
joined by ``+``; default: the default recipe's) and ``sets_per_family`` (default: the default
recipe's counts). The meta-set is built (or found in the cache, by the content of the decoded
images) when the splits are first asked for; the source-validation split alone builds nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from ttabench.api import SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.suites.images import ImageTransform
from ttabench.suites.labelled_folder import (
    ArrayImages,
    content_digest,
    decode_listing,
    read_listing,
)
from ttabench.suites.npy_layout import ArrayRows


def _positive(name: str, value: Any, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TTABenchError(f"suite labelled-meta-set: {name} must be a positive integer, got "
                            f"{value!r}")
    return value


def meta_recipe(families: Any = None, sets_per_family: Any = None) -> Any:
    """The meta-set's recipe: ``families`` by name (``clean``, ``rotate``,
    ``rotate+speckle_noise``), each with ``sets_per_family`` sets; either left None takes the
    default recipe's. Checked against the evaluation corruptions (``check_recipe``)."""
    from ttabench.suites.meta_set import CLEAN, DEFAULT_RECIPE, Family, Recipe, check_recipe
    from ttabench.suites.npy_layout import CORRUPTIONS

    default = {f.name: f for f in DEFAULT_RECIPE.families}
    sets = _positive("sets_per_family", sets_per_family)
    if families is None:
        chosen = list(DEFAULT_RECIPE.families)
    else:
        names = [families] if isinstance(families, str) else families
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise TTABenchError("suite labelled-meta-set: families must be a list of family "
                                f"names, got {families!r}")
        chosen = [default.get(n) or Family(n, () if n == CLEAN else tuple(n.split("+")),
                                           sets or 1) for n in names]
    recipe = Recipe(tuple(Family(f.name, f.transforms, sets or f.sets) for f in chosen))
    check_recipe(recipe, CORRUPTIONS)
    return recipe


class LabelledMetaSet(Suite):
    """The calibration meta-set of a folder of labelled images (module docstring)."""

    name = "labelled-meta-set"
    location_options: ClassVar[tuple[str, ...]] = ("root", "labels")

    def __init__(self, data_dir: Any = None, root: Any = None, labels: Any = None,
                 num_classes: Any = None, class_names: Any = None, image_size: Any = None,
                 resize: Any = None, set_size: Any = None, meta_seed: Any = 0,
                 families: Any = None, sets_per_family: Any = None) -> None:
        if root is None:
            raise TTABenchError("suite labelled-meta-set needs the option root=<folder of "
                                "labelled images> (see `ttabench calibrate`)")
        self.num_classes = int(_positive("num_classes", num_classes, allow_none=False) or 0)
        size = _positive("image_size", image_size, allow_none=False)
        self.transform = ImageTransform(int(size or 0), _positive("resize", resize))
        self.set_size = _positive("set_size", set_size)
        if isinstance(meta_seed, bool) or not isinstance(meta_seed, int) or meta_seed < 0:
            raise TTABenchError(f"suite labelled-meta-set: meta_seed must be an integer >= 0, "
                                f"got {meta_seed!r}")
        self.meta_seed = meta_seed
        self.recipe = meta_recipe(families, sets_per_family)
        names = None if class_names is None else [str(n) for n in class_names]
        self.listing = read_listing(Path(root), self.num_classes, names, labels)
        self.images, self.labels = decode_listing(self.listing, self.transform)
        self.digest = content_digest(self.images, self.labels)
        self._meta: tuple[Path, dict[str, Any]] | None = None

    def meta_set(self) -> tuple[Path, dict[str, Any]]:
        """The meta-set's folder and manifest, built on first use (or found in the cache)."""
        if self._meta is None:
            from ttabench.suites.meta_set import cached_meta_set

            self._meta = cached_meta_set(self.images, self.labels, self.recipe,
                                         seed=self.meta_seed,
                                         set_size=self.set_size or len(self.labels))
        return self._meta

    def splits(self) -> list[SplitSpec]:
        """Every set of the meta-set, in the recipe's order, all calibration splits."""
        return [SplitSpec(s["name"], s["dataset"], None, "calibration")
                for s in self.meta_set()[1]["sets"]]

    def dataset(self, split: SplitSpec) -> Dataset[Any]:
        folder, manifest = self.meta_set()
        found = {s["name"]: s for s in manifest["sets"]}.get(split.name)
        if found is None:
            raise TTABenchError(f"suite labelled-meta-set has no split {split.name!r}")
        return ArrayRows(folder / found["file"], folder / found["labels"], found["start"],
                         found["length"])

    def source_val(self) -> Dataset[Any]:
        """The labelled images themselves, clean."""
        return ArrayImages(self.images, self.labels)

    def record(self) -> dict[str, Any]:
        manifest = self.meta_set()[1]
        return {"suite": self.name, "labelled": {**self.listing.record(), "sha256": self.digest},
                "num_classes": self.num_classes, "preprocessing": self.transform.record(),
                "meta_set": {"key": manifest["key"], "seed": manifest["seed"],
                             "set_size": manifest["set_size"], "n_sets": len(manifest["sets"]),
                             "recipe": manifest["recipe"]}}

    def location(self) -> dict[str, Any]:
        return {"root": str(self.listing.root.resolve()),
                "labels": None if self.listing.labels_file is None
                else str(self.listing.labels_file.resolve())}


__all__ = ["LabelledMetaSet", "meta_recipe"]
