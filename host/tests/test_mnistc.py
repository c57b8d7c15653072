"""The offline ``mnist-c`` suite: seeded corruptions, reproducible builds, the digit split, and
the ``mnist-cnn`` model's deterministic training."""

from __future__ import annotations

import functools
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch

from ttabench.models.mnist_cnn import MnistCNN, TrainConfig, train_mnist_cnn, trained_network
from ttabench.suites import corruptions as C
from ttabench.suites.mnistc import (
    ALL_CORRUPTIONS,
    MNISTC,
    PER_CLASS,
    build_lock,
    build_mnistc,
    mnist_digits,
    split_indices,
    suite_is_built,
    to_32px,
)
from ttabench.suites.npy_layout import CORRUPTIONS, HOLDOUT

SUBSET = ("impulse_noise", "glass_blur", "fog", "frost", "elastic_transform")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    images, labels = mnist_digits()
    index = split_indices(labels, 0)["target"][:24]
    return to_32px(images[index])


def test_corruption_list_is_the_19() -> None:
    assert set(C.CORRUPTION_FUNCTIONS) == set(CORRUPTIONS + HOLDOUT) == set(ALL_CORRUPTIONS)
    assert all(len(C.CONSTANTS[name]) == 5 for name in ALL_CORRUPTIONS)


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_corruption_shape_dtype_and_severity_order(name: str, digits: np.ndarray) -> None:
    diffs = []
    for severity in (1, 5):
        out = C.corrupt(name, digits, severity, np.random.default_rng(severity))
        assert out.dtype == np.uint8 and out.shape == (len(digits), 32, 32, 3)
        diffs.append(np.abs(out.astype(np.float64) - digits).mean())
    assert diffs[1] > diffs[0] > 0, (name, diffs)
    single = C.corrupt(name, digits[:1], 3, np.random.default_rng(0))
    assert single.shape == (1, 32, 32, 3) and single.dtype == np.uint8


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_corruptions_are_seeded(name: str, digits: np.ndarray) -> None:
    a = C.corrupt(name, digits[:6], 4, np.random.default_rng(7))
    b = C.corrupt(name, digits[:6], 4, np.random.default_rng(7))
    assert np.array_equal(a, b)


def test_impulse_noise_matches_a_plain_implementation(digits: np.ndarray) -> None:
    amount = C.CONSTANTS["impulse_noise"][2]
    out = C.corrupt("impulse_noise", digits, 3, np.random.default_rng(11))
    rng = np.random.default_rng(11)
    hit = rng.random(digits.shape) < amount
    salt = rng.random(digits.shape) < 0.5
    expected = digits.copy()
    expected[hit & salt] = 255
    expected[hit & ~salt] = 0
    assert np.array_equal(out, expected)
    other = C.corrupt("impulse_noise", digits, 3, np.random.default_rng(12))
    assert not np.array_equal(out, other)
    assert abs(hit.mean() - amount) < 0.02


def test_gaussian_noise_contrast_brightness_formulas(digits: np.ndarray) -> None:
    x = digits.astype(np.float64) / 255
    sigma = C.CONSTANTS["gaussian_noise"][0]
    noise = np.random.default_rng(3).normal(0.0, sigma, size=x.shape)
    expected = np.rint(np.clip(x.astype(np.float32) + noise, 0, 1) * 255)
    out = C.corrupt("gaussian_noise", digits, 1, np.random.default_rng(3))
    assert np.abs(out - expected).max() <= 1
    factor = C.CONSTANTS["contrast"][1]
    mean = x.mean(axis=(1, 2), keepdims=True)
    expected = np.rint(np.clip((x - mean) * factor + mean, 0, 1) * 255)
    assert np.abs(C.corrupt("contrast", digits, 2, np.random.default_rng(0)) - expected).max() <= 1
    # gray images: HSV value is the gray level itself, so brightness adds c and clips
    shift = C.CONSTANTS["brightness"][3]
    expected = np.rint(np.clip(x + shift, 0, 1) * 255)
    out = C.corrupt("brightness", digits, 4, np.random.default_rng(0))
    assert np.abs(out - expected).max() <= 1


def test_saturate_tints_gray_images_red(digits: np.ndarray) -> None:
    factor, add = C.CONSTANTS["saturate"][4]
    out = C.corrupt("saturate", digits, 5, np.random.default_rng(0)).astype(np.float64)
    gray = digits[..., 0].astype(np.float64)
    assert np.abs(out[..., 0] - gray).max() <= 1  # value (max channel) kept, hue 0 = red
    assert np.abs(out[..., 1] - np.rint(gray * (1 - min(1.0, add)))).max() <= 1


def test_split_is_disjoint_stratified_and_fixed() -> None:
    _, labels = mnist_digits()
    first, again, other = split_indices(labels, 0), split_indices(labels, 0), split_indices(labels, 1)
    sets = {name: set(idx.tolist()) for name, idx in first.items()}
    assert not (sets["train"] & sets["source_val"]) and not (sets["train"] & sets["target"])
    assert not (sets["source_val"] & sets["target"])
    for name, per_class in PER_CLASS.items():
        assert len(first[name]) == len(sets[name]) == 10 * per_class
        assert np.bincount(labels[first[name]], minlength=10).tolist() == [per_class] * 10
        assert np.array_equal(first[name], again[name])
        assert not np.array_equal(first[name], other[name])


def _build(root: Path, seed: int) -> dict:
    return build_mnistc(root, seed=seed, corruptions=SUBSET, n_target=16, workers=1,
                        progress=False)


def test_subset_build_is_byte_reproducible(tmp_path: Path) -> None:
    first = _build(tmp_path / "a", 0)
    second = _build(tmp_path / "b", 0)
    other = _build(tmp_path / "c", 1)
    assert first["hash"] == second["hash"] != other["hash"]
    for name in SUBSET:
        a = (tmp_path / "a" / f"{name}.npy").read_bytes()
        assert a == (tmp_path / "b" / f"{name}.npy").read_bytes()
        assert a != (tmp_path / "c" / f"{name}.npy").read_bytes()
    images = np.load(tmp_path / "a" / "fog.npy")
    labels = np.load(tmp_path / "a" / "labels.npy")
    clean = np.load(tmp_path / "a" / "clean.npy")
    clean_labels = np.load(tmp_path / "a" / "clean_labels.npy")
    assert images.shape == (5 * 16, 32, 32, 3) and images.dtype == np.uint8
    assert labels.tolist() == np.tile(clean_labels[:16], 5).tolist()
    # severity blocks are the clean target images corrupted in order: severity 1 of fog is
    # exactly what the corruption function gives with the documented generator
    index = ALL_CORRUPTIONS.index("fog")
    expected = C.corrupt("fog", clean[:16], 1, np.random.default_rng([0, index, 1]))
    assert np.array_equal(images[:16], expected)
    assert np.load(tmp_path / "a" / "train.npy").shape == (2500, 32, 32, 3)
    assert np.load(tmp_path / "a" / "source_val.npy").shape == (500, 32, 32, 3)


def test_two_processes_building_at_once_make_one_correct_cache(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")

    def builder(root: Path) -> multiprocessing.process.BaseProcess:
        build = functools.partial(build_mnistc, root, seed=0, corruptions=SUBSET[:2],
                                  n_target=16, workers=1, progress=False)
        return spawn.Process(target=build)

    shared, alone = tmp_path / "shared", tmp_path / "alone"
    with build_lock(shared):  # held here: a build into `shared` waits, writing nothing
        waiting, control = builder(shared), builder(alone)
        waiting.start()
        control.start()  # the same work, unlocked: once it is done, `waiting` would be too
        control.join(timeout=120)
        assert control.exitcode == 0
        waiting.join(timeout=1)
        assert waiting.is_alive() and not list(shared.glob("*.npy"))
        rival = builder(shared)
        rival.start()
    for child in (waiting, rival):
        child.join(timeout=120)
        assert child.exitcode == 0
    assert suite_is_built(shared, 0, SUBSET[:2], 16)
    manifest = json.loads((shared / "manifest.json").read_text())
    assert manifest == json.loads((alone / "manifest.json").read_text())
    for name in manifest["files"]:
        assert (shared / name).read_bytes() == (alone / name).read_bytes()
    assert not [p for p in shared.iterdir() if p.name.endswith(".tmp")]


def test_half_built_cache_is_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "a"
    _build(root, 0)
    assert suite_is_built(root, 0, SUBSET, 16)
    assert not suite_is_built(root, 1, SUBSET, 16)
    assert not suite_is_built(root, 0)  # a subset is not the full suite
    with open(root / "fog.npy", "r+b") as handle:  # truncated file
        handle.truncate(100)
    assert not suite_is_built(root, 0, SUBSET, 16)


def test_mnist_cnn_training_is_deterministic() -> None:
    images, labels = mnist_digits()
    x = to_32px(images[:96])
    config = TrainConfig(epochs=1, batch_size=32)
    a = train_mnist_cnn(x, labels[:96], seed=0, config=config).state_dict()
    b = train_mnist_cnn(x, labels[:96], seed=0, config=config).state_dict()
    c = train_mnist_cnn(x, labels[:96], seed=1, config=config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_mnist_cnn_caches_and_builds_only_clean_arrays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTABENCH_DATA_DIR", str(tmp_path / "data"))
    config = TrainConfig(epochs=1, n_train=64)
    net = trained_network(3, tmp_path / "cache", config)
    path = tmp_path / "cache" / "models" / "mnist-cnn-3.pt"
    assert path.is_file()
    root = tmp_path / "data" / "MNIST-C"
    assert (root / "train.npy").is_file() and not list(root.glob("fog*.npy"))
    stamp = path.stat().st_mtime_ns
    again = trained_network(3, tmp_path / "cache", config)
    assert path.stat().st_mtime_ns == stamp
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in net.state_dict().items())
    logits = MnistCNN()(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10)


@pytest.mark.slow
def test_full_build_shapes(tmp_path: Path) -> None:
    suite = MNISTC(tmp_path, n_examples="5")
    assert len([s for s in suite.splits() if s.role == "eval"]) == 75
    assert len([s for s in suite.splits() if s.role == "calibration"]) == 21
    root = tmp_path / "MNIST-C"
    for name in ALL_CORRUPTIONS:
        array = np.load(root / f"{name}.npy", mmap_mode="r")
        assert array.shape == (10_000, 32, 32, 3) and array.dtype == np.uint8
    assert np.load(root / "labels.npy").shape == (10_000,)
    assert len(suite.source_val()) == 500 and len(suite.dataset(suite.splits()[-1])) == 5
    assert suite.record()["files_hash"] == MNISTC(tmp_path).record()["files_hash"]
