"""The imagefolder suite, UnlabelledFolder and check_num_classes on fabricated folders.

Fabricated images are flat colours that encode (label, index) in their pixels; the tests
decode what each item holds and compare with labels computed by hand.
"""

from __future__ import annotations

import gc
import json
import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from ttabench.api import LoadedModel
from ttabench.errors import TTABenchError
from ttabench.suites.imagefolder import ImageFolderSuite
from ttabench.suites.images import (
    CorruptImageWarning,
    UnlabelledFolder,
    check_num_classes,
    robustbench_helper_file,
)
from ttabench.suites.tiny import TinySuite


def wnids() -> list[str]:
    return sorted(json.loads(robustbench_helper_file("imagenet_class_to_id_map.json").read_text()))


def write(path: Path, a: int, b: int, size: int = 40, fmt: str | None = None) -> None:
    """A flat image with R = 4 + 8a, G = 4 + 8b (a, b < 32)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (4 + 8 * a, 4 + 8 * b, 128)).save(path, format=fmt)


def read(image: torch.Tensor) -> tuple[int, int]:
    r, g, _ = image.float().mean(dim=(1, 2)).tolist()
    return round((r - 4) / 8), round((g - 4) / 8)


def test_imagenet_class_subset(tmp_path: Path) -> None:
    ids = wnids()
    chosen = [ids[900], ids[5], ids[321]]  # model indices 900, 5, 321
    for k, wnid in enumerate(chosen):
        write(tmp_path / "imagenet-r" / wnid / f"x{k}.jpg", k, 0)
    suite = ImageFolderSuite(tmp_path, root="imagenet-r", image_size=32, resize=36)
    assert suite.num_classes == 1000 and suite.class_subset == [5, 321, 900]
    dataset = suite.dataset(suite.splits()[0])
    # folders sorted by wnid: ids[5] < ids[321] < ids[900]; label = position in the subset
    items = sorted((read(dataset[i][0])[0], dataset[i][1]) for i in range(3))
    assert items == [(0, 2), (1, 0), (2, 1)]  # written k -> subset position of its wnid
    assert tuple(dataset[0][0].shape) == (3, 32, 32)
    record = suite.record()
    assert record["class_subset"] == [5, 321, 900] and record["preprocessing"]["resize"] == 36
    assert suite.splits()[0].name == "imagenet-r" and suite.splits()[0].role == "eval"


def test_full_imagenet_classes_use_wnid_index(tmp_path: Path) -> None:
    ids = wnids()
    for wnid in ids:
        (tmp_path / "v2" / wnid).mkdir(parents=True)
    write(tmp_path / "v2" / ids[999] / "a.JPEG", 1, 1, fmt="JPEG")
    suite = ImageFolderSuite(root=str(tmp_path / "v2"), image_size=32)
    assert suite.class_subset is None
    dataset = suite.dataset(suite.splits()[0])
    assert len(dataset) == 1 and dataset[0][1] == 999


def test_sorted_class_map_recursive_formats_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "domains"
    formats = {"png": "PNG", "JPEG": "JPEG", "bmp": "BMP", "webp": "WEBP"}
    for split in ("real", "sketch"):
        for c, cls in enumerate(["zebra", "ant", "moose"]):
            for k, (ext, fmt) in enumerate(formats.items()):
                write(root / split / cls / "deep" / f"{k}.{ext}", c, k, fmt=fmt)
        (root / split / "ant" / "notes.txt").write_text("not an image")
    suite = ImageFolderSuite(
        tmp_path, root="domains", splits="real,sketch", class_map="sorted", image_size=32,
        resize=None, role="calibration",
    )  # fmt: skip
    assert suite.num_classes == 3 and suite.class_subset is None
    assert [(s.name, s.role) for s in suite.splits()] == [("real", "calibration"),
                                                          ("sketch", "calibration")]
    sorted_label = {0: 2, 1: 0, 2: 1}  # zebra, ant, moose -> ant=0, moose=1, zebra=2
    for split in suite.splits():
        dataset = suite.dataset(split)
        assert len(dataset) == 12
        for i in range(len(dataset)):
            image, label = dataset[i]
            c, _ = read(image)
            assert label == sorted_label[c]


def test_source_val_keeps_subset_classes(tmp_path: Path) -> None:
    ids = wnids()
    write(tmp_path / "r" / ids[10] / "a.png", 0, 0)
    write(tmp_path / "r" / ids[20] / "a.png", 1, 0)
    for k in (10, 20, 30):
        write(tmp_path / "val" / ids[k] / "v.png", k // 10, 1)
    suite = ImageFolderSuite(tmp_path, root="r", source_val="val", image_size=32)
    val = suite.source_val()
    assert val is not None and len(val) == 2  # class 30 is outside the subset
    assert sorted(val[i][1] for i in range(2)) == [0, 1]


def test_corrupt_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a" / "ok.png", 0, 0)
    (tmp_path / "d" / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "d" / "b" / "trunc.png").parent.mkdir(parents=True)
    (tmp_path / "d" / "b" / "trunc.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    write(tmp_path / "d" / "b" / "ok.png", 1, 0)
    suite = ImageFolderSuite(tmp_path, root="d", class_map="sorted", image_size=32)
    with pytest.warns(CorruptImageWarning, match="skipped 2"):
        dataset = suite.dataset(suite.splits()[0])
    assert len(dataset) == 2 and dataset.skipped_files == 2
    assert [dataset[i][1] for i in range(2)] == [0, 1]
    assert suite.skipped_files == {"d": 2} and "skipped_files" not in suite.record()
    strict = ImageFolderSuite(tmp_path, root="d", class_map="sorted", on_corrupt="error")
    with pytest.raises(TTABenchError, match="empty.png"):
        strict.dataset(strict.splits()[0])
    with pytest.raises(TTABenchError, match="on_corrupt"):
        ImageFolderSuite(tmp_path, root="d", class_map="sorted", on_corrupt="ignore")


def test_option_errors(tmp_path: Path) -> None:
    with pytest.raises(TTABenchError, match="not found"):
        ImageFolderSuite(tmp_path, root="absent")
    write(tmp_path / "d" / "cats" / "a.png", 0, 0)
    with pytest.raises(TTABenchError, match="not an ImageNet wnid"):
        ImageFolderSuite(tmp_path, root="d")
    with pytest.raises(TTABenchError, match="class_map"):
        ImageFolderSuite(tmp_path, root="d", class_map="alphabetical")
    with pytest.raises(TTABenchError, match="split folder"):
        ImageFolderSuite(tmp_path, root="d", splits="x", class_map="sorted")


def test_check_num_classes() -> None:
    four = LoadedModel(torch.nn.Identity(), 4, "four", "0")
    check_num_classes(TinySuite(), four)  # 4 and 4: accepted
    ten = LoadedModel(torch.nn.Identity(), 10, "ten", "0")
    with pytest.raises(TTABenchError, match="model ten has 10 classes but suite tiny has 4"):
        check_num_classes(TinySuite(), ten)

    class Subset:
        name, num_classes, class_subset = "r", 10, [1, 12]

    with pytest.raises(TTABenchError, match="up to 12"):
        check_num_classes(Subset(), ten)


def test_unlabelled_folder(tmp_path: Path) -> None:
    write(tmp_path / "u" / "b.png", 1, 0)
    write(tmp_path / "u" / "sub" / "a.png", 2, 0)
    write(tmp_path / "u" / "a.png", 0, 0)
    (tmp_path / "u" / "bad.jpg").write_bytes(b"nope")
    with pytest.warns(CorruptImageWarning):
        folder = UnlabelledFolder(tmp_path / "u", image_size=32, resize=None)
    assert folder.skipped_files == 1 and len(folder) == 3
    assert [(read(folder[i][0])[0], folder[i][1]) for i in range(3)] == [(0, -1), (1, -1), (2, -1)]
    with pytest.raises(TTABenchError, match="does not exist"):
        UnlabelledFolder(tmp_path / "none")


def test_streaming_holds_only_paths(tmp_path: Path) -> None:
    """2,000 files: the dataset keeps paths only, and iterating keeps at most ~a batch alive."""
    root = tmp_path / "many"
    for i in range(2000):
        write(root / f"c{i % 4}" / f"{i:04d}.png", i % 4, 0, size=16)
    suite = ImageFolderSuite(tmp_path, root="many", class_map="sorted", image_size=16, resize=None)
    dataset = suite.dataset(suite.splits()[0])
    assert len(dataset) == 2000
    assert len(pickle.dumps(dataset)) < 2000 * 200  # paths and labels, not pixels
    batch = 50

    def live_images() -> int:
        return sum(
            1 for o in gc.get_objects()
            if isinstance(o, torch.Tensor) and o.dtype == torch.uint8 and o.dim() >= 3
        )  # fmt: skip

    baseline = live_images()
    peak, seen = 0, 0
    for step, (images, labels) in enumerate(torch.utils.data.DataLoader(dataset, batch_size=batch)):
        seen += len(labels)
        assert torch.equal(labels, torch.tensor([read(im)[0] for im in images]))
        if step % 8 == 0:
            peak = max(peak, live_images() - baseline)
    assert seen == 2000 and peak <= 2
