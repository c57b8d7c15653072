"""The CIFAR-10-C layout reader (``CorruptionArraySuite``, ``cifar10c``, ``cifar100c``) on a
small fabricated layout whose pixels encode (corruption, severity, index)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from ttabench.errors import TTABenchError
from ttabench.suites.cifar import CIFAR10C, CIFAR100C
from ttabench.suites.npy_layout import CORRUPTIONS, HOLDOUT, ArrayRows

N = 7  # images per severity block
SIZE = 8


def _pixels(code: int, severity: int, index: int) -> np.ndarray:
    """An image whose three channels hold (corruption code, severity, index)."""
    image = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = code, severity, index
    return image


def _labels() -> np.ndarray:
    """Labels differ per severity block, so a wrong block shows: label = (3*s + i) % 10."""
    return np.array([(3 * s + i) % 10 for s in range(1, 6) for i in range(N)], dtype=np.int64)


def make_layout(data_dir: Path, folder: str = "CIFAR-10-C", names=CORRUPTIONS + HOLDOUT,
                clean: bool = True) -> Path:
    root = data_dir / folder
    root.mkdir(parents=True)
    np.save(root / "labels.npy", _labels())
    for code, name in enumerate(names, start=1):
        block = np.stack([_pixels(code, s, i) for s in range(1, 6) for i in range(N)])
        np.save(root / f"{name}.npy", block)
    if clean:
        np.save(root / "clean.npy", np.stack([_pixels(200, 0, i) for i in range(5)]))
        np.save(root / "clean_labels.npy", np.arange(5, dtype=np.int64) % 10)
    return root


def test_rows_and_labels_per_split(tmp_path: Path) -> None:
    make_layout(tmp_path)
    suite = CIFAR10C(tmp_path)
    assert suite.n_per_severity == N
    expected_labels = _labels()
    for split in suite.splits():
        if split.dataset == "clean":
            continue
        code = (CORRUPTIONS + HOLDOUT).index(split.dataset) + 1
        data = suite.dataset(split)
        assert len(data) == N
        for i in range(N):
            image, label = data[i]
            assert image.dtype == torch.uint8 and image.shape == (3, SIZE, SIZE)
            assert image[:, 0, 0].tolist() == [code, split.severity, i]
            assert label == expected_labels[(split.severity - 1) * N + i]
        images, labels = data.arrays()
        assert images.shape == (N, 3, SIZE, SIZE) and (images[:, 2, 0, 0] == np.arange(N)).all()
        assert labels.tolist() == expected_labels[(split.severity - 1) * N : split.severity * N].tolist()


def test_roles_order_and_record(tmp_path: Path) -> None:
    make_layout(tmp_path)
    suite = CIFAR10C(tmp_path)
    splits = suite.splits()
    evals = [s for s in splits if s.role == "eval"]
    calib = [s for s in splits if s.role == "calibration"]
    assert [s.name for s in evals[:6]] == [
        "gaussian_noise-1", "gaussian_noise-2", "gaussian_noise-3", "gaussian_noise-4",
        "gaussian_noise-5", "shot_noise-1",
    ]
    assert len(evals) == 75 and {s.dataset for s in evals} == set(CORRUPTIONS)
    assert len(calib) == 21 and calib[-1].name == "clean" and calib[-1].severity is None
    assert {s.dataset for s in calib} == set(HOLDOUT) | {"clean"}
    record = suite.record()
    assert record["order"] == [s.name for s in splits]
    assert record["n_per_severity"] == N and record["image_size"] == [SIZE, SIZE]
    assert record["root"] == "CIFAR-10-C" and suite.location()["root"] == str(tmp_path / "CIFAR-10-C")
    clean = suite.dataset(calib[-1])
    assert len(clean) == 5 and clean[3][0][:, 0, 0].tolist() == [200, 0, 3] and clean[3][1] == 3
    # source-val falls back to clean.npy when there is no source_val.npy
    assert len(suite.source_val()) == 5


def test_holdout_off_and_missing_holdout_files(tmp_path: Path) -> None:
    make_layout(tmp_path, names=CORRUPTIONS + ("spatter",), clean=False)
    suite = CIFAR10C(tmp_path)
    calib = [s.name for s in suite.splits() if s.role == "calibration"]
    assert calib == [f"spatter-{s}" for s in range(1, 6)]
    assert suite.source_val() is None
    assert all(s.role == "eval" for s in CIFAR10C(tmp_path, holdout="false").splits())


def test_source_val_file_wins_and_is_not_shortened(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    np.save(root / "source_val.npy", np.stack([_pixels(100, 0, i) for i in range(9)]))
    np.save(root / "source_val_labels.npy", np.arange(9, dtype=np.int64))
    source_val = CIFAR10C(tmp_path, n_examples=2).source_val()
    assert len(source_val) == 9 and source_val[8][0][:, 0, 0].tolist() == [100, 0, 8]
    assert source_val[8][1] == 8


def test_string_options_and_n_examples(tmp_path: Path) -> None:
    make_layout(tmp_path)
    suite = CIFAR10C(str(tmp_path), corruptions="fog, snow", severities="2,5", n_examples="3",
                     holdout="0")
    assert [s.name for s in suite.splits()] == ["fog-2", "fog-5", "snow-2", "snow-5"]
    data = suite.dataset(suite.splits()[1])
    assert len(data) == 3
    assert [data[i][0][:, 0, 0].tolist() for i in range(3)] == [
        [CORRUPTIONS.index("fog") + 1, 5, i] for i in range(3)
    ]
    assert CIFAR10C(tmp_path, corruptions=["fog"], severities=3).record()["severities"] == [3]
    with pytest.raises(TTABenchError, match="unknown corruption"):
        CIFAR10C(tmp_path, corruptions="fogg")
    with pytest.raises(TTABenchError, match="severities"):
        CIFAR10C(tmp_path, severities="6")
    with pytest.raises(TTABenchError, match="n_examples"):
        CIFAR10C(tmp_path, n_examples="many")


def test_missing_folder_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(TTABenchError) as info:
        CIFAR10C(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "<data_dir>/CIFAR-10-C/<corruption>.npy and labels.npy" in message
    assert "--data-dir" in message and "TTABENCH_DATA_DIR" in message
    assert "https://zenodo.org/records/2535967" in message
    with pytest.raises(TTABenchError, match="zenodo.org/records/3555552"):
        CIFAR100C(tmp_path)


def test_missing_corruption_file_and_bad_shape(tmp_path: Path) -> None:
    root = make_layout(tmp_path, names=CORRUPTIONS[:3])
    with pytest.raises(TTABenchError, match="defocus_blur.npy"):
        CIFAR10C(tmp_path)
    np.save(root / "fog.npy", np.zeros((5 * N + 1, SIZE, SIZE, 3), dtype=np.uint8))
    with pytest.raises(TTABenchError, match="fog.npy must be uint8"):
        CIFAR10C(tmp_path, corruptions="fog")


def test_cifar100c_folder_and_classes(tmp_path: Path) -> None:
    make_layout(tmp_path, folder="CIFAR-100-C")
    suite = CIFAR100C(tmp_path)
    assert suite.num_classes == 100 and suite.record()["num_classes"] == 100


def test_reads_are_memory_mapped_and_pickle(tmp_path: Path) -> None:
    make_layout(tmp_path)
    suite = CIFAR10C(tmp_path, corruptions="fog", severities="4")
    data = suite.dataset(suite.splits()[0])
    data[0]
    assert isinstance(data._images, np.memmap)
    copy = pickle.loads(pickle.dumps(data))
    assert copy._images is None and isinstance(copy, ArrayRows)
    assert torch.equal(copy[2][0], data[2][0]) and copy[2][1] == data[2][1]
