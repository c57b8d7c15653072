"""The calibration meta-set: its recipe never holds an evaluation family, its sets against a
direct re-statement of the recipe, the cache, and the suite option ``calibration``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ttabench.errors import TTABenchError
from ttabench.suites.cifar import CIFAR10C
from ttabench.suites.corruptions import CORRUPTION_FUNCTIONS, corrupt
from ttabench.suites.meta_set import (
    DEFAULT_RECIPE,
    Family,
    Recipe,
    build_meta_set,
    cached_meta_set,
    check_recipe,
    plan_sets,
)
from ttabench.suites.npy_layout import CORRUPTIONS, HOLDOUT
from ttabench.suites.shift_transforms import SHIFTS

SMALL = Recipe((Family("clean", (), 1), Family("rotate", ("rotate",), 3),
                Family("thin+spatter", ("thin", "spatter"), 2)))


def source(n: int = 12, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first pixel holds their index (a set's rows can be traced), labels i % 10."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)
    images[:, 0, 0, :] = np.arange(n)[:, None]
    return images, np.arange(n, dtype=np.int64) % 10


def test_the_recipe_never_holds_an_evaluation_family():
    used = {t for family in DEFAULT_RECIPE.families for t in family.transforms}
    assert not used & set(CORRUPTIONS)
    assert not set(SHIFTS) & set(CORRUPTIONS) and not set(SHIFTS) & set(CORRUPTION_FUNCTIONS)
    assert used <= set(HOLDOUT) | set(SHIFTS)
    check_recipe(DEFAULT_RECIPE, CORRUPTIONS)
    assert DEFAULT_RECIPE.n_sets == 134 and len(DEFAULT_RECIPE.families) == 23
    leaky = Recipe((Family("fog+rotate", ("fog", "rotate"), 2),))
    with pytest.raises(TTABenchError, match="uses the evaluation corruption"):
        check_recipe(leaky, CORRUPTIONS)
    with pytest.raises(TTABenchError, match="unknown transform 'sharpen'"):
        check_recipe(Recipe((Family("sharpen", ("sharpen",), 2),)), CORRUPTIONS)


def test_every_set_matches_the_recipe_restated():
    images, labels = source()
    built = build_meta_set(images, labels, SMALL, seed=5, set_size=10)
    assert [s.spec.name for s in built] == [
        "meta-clean-0", "meta-rotate-0", "meta-rotate-1", "meta-rotate-2",
        "meta-thin+spatter-0", "meta-thin+spatter-1"]
    assert {s.spec.dataset for s in built} == {"meta-clean", "meta-rotate", "meta-thin+spatter"}
    # the recipe by hand: rng [seed, family, set]; 10 of 12 images without replacement; the
    # first transform's levels on the grid 0, 1/2, 1, a composition's second in seeded order
    for k, family in enumerate(SMALL.families):
        grid = np.linspace(0, 1, family.sets) if family.sets > 1 else [0.5]
        for j in range(family.sets):
            rng = np.random.default_rng([5, k, j])
            take = rng.permutation(12)[:10]
            out = images[take]
            ours = next(s for s in built if s.spec.name == f"meta-{family.name}-{j}")
            for c, name in enumerate(family.transforms):
                order = (np.arange(family.sets) if c == 0 else
                         np.random.default_rng([5, k, 1_000_000 + c]).permutation(family.sets))
                level = float(grid[order[j]])
                assert ours.spec.levels[c] == pytest.approx(level)
                out = (corrupt(name, out, 1 + round(4 * level), rng) if name in HOLDOUT
                       else SHIFTS[name](out, level, rng))
            assert np.array_equal(ours.images, out) and np.array_equal(ours.labels, labels[take])
    # more images than the source: drawn with replacement, labels follow their images
    clean = build_meta_set(images, labels, SMALL, seed=5, set_size=30)[0]
    assert len(clean.images) == 30 and (clean.labels == clean.images[:, 0, 0, 0] % 10).all()


def test_the_same_seed_gives_the_same_bytes_and_another_seed_other_sets():
    images, labels = source()
    a = build_meta_set(images, labels, SMALL, seed=1)
    b = build_meta_set(images, labels, SMALL, seed=1)
    c = build_meta_set(images, labels, SMALL, seed=2)
    assert all(np.array_equal(x.images, y.images) for x, y in zip(a, b))
    assert not all(np.array_equal(x.images, y.images) for x, y in zip(a, c))
    assert [s.levels for s in plan_sets(SMALL, 1)] == [s.spec.levels for s in a]


def test_the_cache_is_built_once_and_a_damaged_file_is_rebuilt(tmp_path: Path):
    images, labels = source()
    folder, manifest = cached_meta_set(images, labels, SMALL, seed=0, set_size=8, root=tmp_path,
                                       progress=False)
    assert len(manifest["sets"]) == 6 and manifest["set_size"] == 8
    built = build_meta_set(images, labels, SMALL, seed=0, set_size=8)
    for entry, expected in zip(manifest["sets"], built):
        rows = np.load(folder / entry["file"])[entry["start"]:entry["start"] + entry["length"]]
        assert np.array_equal(rows, expected.images)
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert cached_meta_set(images, labels, SMALL, seed=0, set_size=8, root=tmp_path,
                           progress=False)[1] == manifest
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    (folder / "rotate.npy").write_bytes(b"truncated")
    cached_meta_set(images, labels, SMALL, seed=0, set_size=8, root=tmp_path, progress=False)
    assert np.array_equal(np.load(folder / "rotate.npy")[:8], built[1].images)


def _layout(data_dir: Path, source_val: bool = True) -> Path:
    """A CIFAR-10-C-style folder: every corruption of 4 images per severity, and a source val."""
    root = data_dir / "CIFAR-10-C"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(root / "labels.npy", np.arange(20, dtype=np.int64) % 10)
    for name in CORRUPTIONS + HOLDOUT:
        np.save(root / f"{name}.npy", rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8))
    np.save(root / "clean.npy", rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8))
    np.save(root / "clean_labels.npy", np.arange(4, dtype=np.int64))
    if source_val:
        np.save(root / "source_val.npy", rng.integers(0, 255, (6, 8, 8, 3), dtype=np.uint8))
        np.save(root / "source_val_labels.npy", np.arange(6, dtype=np.int64))
    return root


def test_the_suite_option_replaces_the_calibration_splits(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TTABENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = _layout(tmp_path)
    holdout = CIFAR10C(tmp_path)
    suite = CIFAR10C(tmp_path, calibration="meta-set", n_examples=3)
    calib = [s for s in suite.splits() if s.role == "calibration"]
    assert [s for s in suite.splits() if s.role == "eval"] == \
        [s for s in holdout.splits() if s.role == "eval"]
    assert len(calib) == DEFAULT_RECIPE.n_sets
    assert all(s.dataset.startswith("meta-") and s.severity is None for s in calib)
    assert not {s.dataset for s in calib} & set(CORRUPTIONS + HOLDOUT + ("clean",))
    built = build_meta_set(np.load(root / "source_val.npy"), np.load(root / "source_val_labels.npy"),
                           DEFAULT_RECIPE, seed=0, set_size=4)  # a split's size: 20 / 5
    for split, expected in zip(calib[:12], built[:12]):
        images, labels = suite.dataset(split).arrays()  # n_examples: the first 3 of each set
        assert np.array_equal(images, expected.images[:3].transpose(0, 3, 1, 2))
        assert np.array_equal(labels, expected.labels[:3])
    record = suite.record()
    assert record["calibration"] == "meta-set" and record["meta_set"]["n_sets"] == 134
    assert holdout.record()["calibration"] == "holdout" and "meta_set" not in holdout.record()


def test_the_suite_option_refuses_what_it_cannot_do(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TTABENCH_CACHE_DIR", str(tmp_path / "cache"))
    _layout(tmp_path, source_val=False)
    with pytest.raises(TTABenchError, match="needs labelled images the model was not trained on"):
        CIFAR10C(tmp_path, calibration="meta-set")
    with pytest.raises(TTABenchError, match="calibration must be one of holdout, meta-set"):
        CIFAR10C(tmp_path, calibration="metaset")
