"""The calibration meta-set: hundreds of labelled synthetic shifted sets from labelled images
the model was not trained on.

As in AutoEval (Deng & Zheng, "Are labels always necessary for classifier accuracy
evaluation?", CVPR 2021) and the meta-set regressions of the Nuclear-norm and MDE papers, a
score-to-accuracy map is fitted on many labelled sample sets, each a synthetic shift of clean
labelled images, instead of on a handful of real calibration splits. Here:

- the source images are labelled images the model never saw in training (``mnist-c``'s
  ``source_val.npy``; a user's labelled folder for ``ttabench calibrate``); a set draws
  ``set_size`` of them (seeded; with replacement only when there are fewer than that);
- a **recipe** is a list of **families**; a family is a composition of one or two transforms
  (applied in order), each a holdout corruption of Hendrycks & Dietterich
  (``speckle_noise``, ``gaussian_blur``, ``spatter``, ``saturate``, at severity
  ``1 + round(4 level)``) or a shift of ``ttabench.suites.shift_transforms``, and a number of
  sets; ``clean`` (no transform) is a family too. No transform may be an evaluation corruption
  family of the suite (``check_recipe``; the default recipe uses none of the 15);
- the sets of a family spread its strength: set j of n has ``level = j / (n - 1)`` for the
  first transform; the second transform of a composition takes the same grid in a seeded
  random order, so strengths are crossed;
- one family = one dataset of the calibration cells (``meta-<family>``), so every choice made
  on the meta-set leaves whole families out (``ttabench.scoring.lodo``).

Every random draw of set j of family k comes from ``np.random.default_rng([seed, k, j])``, so a
meta-set is a fixed function of (source images, labels, recipe, seed, set size).
``cached_meta_set`` writes it once under ``<cache>/meta-sets/<key>/`` (one ``.npy`` per family,
sets stacked; ``manifest.json`` last, with each file's SHA-256), keyed by the SHA-256 of all
those inputs, under a file lock; an incomplete folder is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttabench.errors import TTABenchError
from ttabench.paths import cache_dir
from ttabench.store import write_json_atomic
from ttabench.suites.corruptions import corrupt
from ttabench.suites.mnistc import build_lock, save_npy_atomic
from ttabench.suites.npy_layout import HOLDOUT
from ttabench.suites.shift_transforms import SHIFTS

#: Bump when the generation code changes in a way the recipe does not show.
VERSION = 1
PREFIX = "meta-"
CLEAN = "clean"


@dataclass(frozen=True)
class Family:
    """A named composition of transforms (``()``: clean) and how many sets it gets."""

    name: str
    transforms: tuple[str, ...]
    sets: int


@dataclass(frozen=True)
class Recipe:
    """The families of a meta-set, in order (the order seeds the draws)."""

    families: tuple[Family, ...]

    def record(self) -> dict[str, Any]:
        """A JSON-ready description (also what the cache key hashes)."""
        return {"families": [{"name": f.name, "transforms": list(f.transforms), "sets": f.sets}
                             for f in self.families], "version": VERSION}

    @property
    def n_sets(self) -> int:
        return sum(f.sets for f in self.families)


#: Sets per shifted family: six strengths (levels 0, 0.2, ..., 1). Sized so that a full run
#: stays affordable on a 2-core machine (benchmarks/results/meta_set_cost.md): every set is a
#: calibration cell with its own adaptation trajectory.
SETS_PER_FAMILY = 6


def _single(name: str, sets: int = SETS_PER_FAMILY) -> Family:
    return Family(name, (name,), sets)


def _pair(first: str, second: str, sets: int = SETS_PER_FAMILY) -> Family:
    return Family(f"{first}+{second}", (first, second), sets)


#: 23 families, 134 sets: the clean images (2 sets), the 4 holdout corruptions, 12 shifts and
#: 6 compositions of a shift with a holdout corruption or another shift (6 sets each).
DEFAULT_RECIPE = Recipe((
    Family(CLEAN, (), 2),
    *(_single(name) for name in HOLDOUT),
    *(_single(name) for name in SHIFTS),
    _pair("rotate", "speckle_noise"), _pair("scale", "gaussian_blur"),
    _pair("thin", "spatter"), _pair("occlude", "saturate"),
    _pair("shear", "scribble"), _pair("translate", "overlay"),
))

KNOWN: tuple[str, ...] = (*HOLDOUT, *SHIFTS)


def check_recipe(recipe: Recipe, eval_families: Sequence[str]) -> None:
    """Refuse (TTABenchError) a recipe that uses an evaluation family or an unknown transform,
    repeats a family name, or has a family without sets."""
    names = [f.name for f in recipe.families]
    if len(set(names)) != len(names) or not names:
        raise TTABenchError("a meta-set recipe needs families with distinct names")
    for family in recipe.families:
        leaked = sorted(set(family.transforms) & set(eval_families))
        if leaked:
            raise TTABenchError(f"meta-set family {family.name!r} uses the evaluation "
                                f"corruption(s) {', '.join(leaked)}; calibration must never see "
                                "an evaluation family")
        unknown = [t for t in family.transforms if t not in KNOWN]
        if unknown:
            raise TTABenchError(f"meta-set family {family.name!r}: unknown transform "
                                f"{unknown[0]!r}; known: {', '.join(KNOWN)}")
        if family.sets < 1:
            raise TTABenchError(f"meta-set family {family.name!r} needs at least one set")


@dataclass(frozen=True)
class SetSpec:
    """One set of the meta-set: its split name, family (dataset), index and levels."""

    name: str
    family: str
    index: int
    levels: tuple[float, ...]

    @property
    def dataset(self) -> str:
        return PREFIX + self.family


def plan_sets(recipe: Recipe, seed: int) -> list[SetSpec]:
    """Every set's levels (module docstring), families in recipe order."""
    out = []
    for k, family in enumerate(recipe.families):
        n = family.sets
        grid = np.linspace(0.0, 1.0, n) if n > 1 else np.array([0.5])
        orders = [np.arange(n)] + [np.random.default_rng([seed, k, 1_000_000 + c]).permutation(n)
                                   for c in range(1, len(family.transforms))]
        for j in range(n):
            levels = tuple(float(grid[order[j]]) for order in orders[:len(family.transforms)])
            out.append(SetSpec(f"{PREFIX}{family.name}-{j}", family.name, j, levels))
    return out


def _transform(name: str, images: np.ndarray, level: float,
               rng: np.random.Generator) -> np.ndarray:
    if name in HOLDOUT:
        return corrupt(name, images, 1 + int(round(4 * level)), rng)
    return SHIFTS[name](images, level, rng)


def make_set(images: np.ndarray, labels: np.ndarray, recipe: Recipe, spec: SetSpec, seed: int,
             set_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The images (uint8 NHWC) and labels of one set of ``plan_sets``."""
    k = [f.name for f in recipe.families].index(spec.family)
    rng = np.random.default_rng([seed, k, spec.index])
    n = len(images)
    take = rng.permutation(n)[:set_size] if set_size <= n else rng.integers(0, n, set_size)
    out = np.ascontiguousarray(images[take])
    for name, level in zip(recipe.families[k].transforms, spec.levels):
        out = _transform(name, out, level, rng)
    return out, np.asarray(labels)[take].astype(np.int64)


def _check_images(images: np.ndarray, labels: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise TTABenchError(f"meta-set source images must be uint8 (N, H, W, 3), got "
                            f"{images.dtype} {tuple(images.shape)}")
    if len(labels) != len(images) or len(images) == 0:
        raise TTABenchError(f"meta-set: {len(images)} source images but {len(labels)} labels")


@dataclass(frozen=True)
class LabelledSet:
    """One built set: its spec, images (uint8 NHWC) and labels."""

    spec: SetSpec
    images: np.ndarray
    labels: np.ndarray


def build_meta_set(images: np.ndarray, labels: np.ndarray, recipe: Recipe = DEFAULT_RECIPE,
                   seed: int = 0, set_size: int | None = None) -> list[LabelledSet]:
    """Every set of the meta-set, in memory: labelled uint8 images (N, H, W, 3) + labels +
    recipe + seed -> labelled sets named by family (``set_size`` default: ``len(images)``)."""
    images, labels = np.asarray(images), np.asarray(labels)
    _check_images(images, labels)
    size = len(images) if set_size is None else int(set_size)
    return [LabelledSet(spec, *make_set(images, labels, recipe, spec, seed, size))
            for spec in plan_sets(recipe, seed)]


def meta_set_key(images: np.ndarray, labels: np.ndarray, recipe: Recipe, seed: int,
                 set_size: int) -> str:
    """SHA-256 (16 hex digits) of everything a meta-set is a function of."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    digest.update(json.dumps({"recipe": recipe.record(), "seed": seed, "set_size": set_size,
                              "shape": list(images.shape)}, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _intact(folder: Path, manifest: dict[str, Any] | None, key: str) -> bool:
    if not manifest or manifest.get("key") != key:
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == meta["bytes"]
               for name, meta in manifest.get("files", {}).items())


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def cached_meta_set(images: np.ndarray, labels: np.ndarray, recipe: Recipe = DEFAULT_RECIPE,
                    seed: int = 0, set_size: int | None = None, root: Path | None = None,
                    progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """The meta-set's folder and manifest, building it first unless an intact build exists.

    ``manifest["sets"]``: per set its ``name``, ``dataset``, ``family``, ``levels``, ``file``,
    ``labels`` (file names in the folder), ``start`` and ``length`` (rows of the family's
    arrays). ``root`` defaults to ``<cache>/meta-sets``."""
    from tqdm import tqdm

    images, labels = np.asarray(images), np.asarray(labels)
    _check_images(images, labels)
    size = len(images) if set_size is None else int(set_size)
    key = meta_set_key(images, labels, recipe, seed, size)
    folder = Path(root or cache_dir() / "meta-sets") / key
    found = _read_manifest(folder)
    if found is not None and _intact(folder, found, key):
        return folder, found
    with build_lock(folder):
        found = _read_manifest(folder)
        if found is not None and _intact(folder, found, key):
            return folder, found
        (folder / "manifest.json").unlink(missing_ok=True)
        specs = plan_sets(recipe, seed)
        files: dict[str, dict[str, Any]] = {}
        sets = []
        bar = tqdm(total=len(specs), desc="building the calibration meta-set", unit="set",
                   disable=not progress)
        for family in recipe.families:
            mine = [s for s in specs if s.family == family.name]
            built = []
            for spec in mine:
                built.append(make_set(images, labels, recipe, spec, seed, size))
                bar.update()
            stem = family.name.replace("+", "_and_")
            for name, array in ((f"{stem}.npy", np.concatenate([b[0] for b in built])),
                                (f"{stem}_labels.npy", np.concatenate([b[1] for b in built]))):
                sha, nbytes = save_npy_atomic(folder / name, array)
                files[name] = {"sha256": sha, "bytes": nbytes}
            for j, spec in enumerate(mine):
                sets.append({"name": spec.name, "dataset": spec.dataset, "family": spec.family,
                             "levels": list(spec.levels), "file": f"{stem}.npy",
                             "labels": f"{stem}_labels.npy", "start": j * size, "length": size})
        bar.close()
        manifest = {"key": key, "seed": seed, "set_size": size, "n_source": len(images),
                    "recipe": recipe.record(), "sets": sets, "files": files}
        write_json_atomic(folder / "manifest.json", manifest)
    return folder, manifest


__all__ = ["CLEAN", "DEFAULT_RECIPE", "KNOWN", "PREFIX", "Family", "LabelledSet", "Recipe",
           "SetSpec", "build_meta_set", "cached_meta_set", "check_recipe", "make_set",
           "meta_set_key", "plan_sets"]
