"""Reading a user's labelled images (``ttabench.suites.labelled_folder``): class folders or a
labels file, each class read as one of the model's, and the refusals, each one line before any
image is decoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ttabench.errors import TTABenchError
from ttabench.suites.images import ImageTransform
from ttabench.suites.labelled_folder import (
    content_digest,
    decode_listing,
    needed_images,
    read_listing,
)

pytestmark = pytest.mark.filterwarnings("ignore::ttabench.suites.images.CorruptImageWarning")
CIFAR = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def save(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


def class_folders(root: Path, names: list[str], per_class: int) -> Path:
    for k, name in enumerate(names):
        for i in range(per_class):
            save(root / name / ("deep" if i % 2 else "") / f"{i:03d}.png", 10 * k + i)
    return root


def test_class_folders_by_output_index_and_decoded_in_sorted_order(tmp_path):
    root = class_folders(tmp_path / "digits", ["0", "1", "2"], 40)
    (root / "2" / "broken.png").write_bytes(b"not an image")
    listing = read_listing(root, num_classes=10)
    assert listing.rule == "index" and listing.classes == {"0": 0, "1": 1, "2": 2}
    assert len(listing.paths) == 120 and listing.skipped == (str(root / "2" / "broken.png"),)
    assert list(listing.labels) == [0] * 40 + [1] * 40 + [2] * 40
    images, labels = decode_listing(listing, ImageTransform(8, None))
    assert images.shape == (120, 8, 8, 3) and images.dtype == np.uint8
    # each image is the constant its class and index say, in sorted path order per class
    relative = [p.relative_to(root / str(label)).as_posix()
                for p, label in zip(listing.paths, labels)]
    for path, label, image in zip(relative, labels, images):
        i = int(Path(path).stem)
        assert (image == 10 * label + i).all()
    assert content_digest(images, labels) != content_digest(images, labels[::-1].copy())


def test_class_names_of_the_model_and_a_labels_file(tmp_path):
    root = class_folders(tmp_path / "cifar", ["cat", "frog"], 55)
    listing = read_listing(root, num_classes=10, class_names=CIFAR)
    assert listing.rule == "names" and listing.classes == {"cat": 3, "frog": 6}
    flat = tmp_path / "flat"
    lines = ["path,label"]
    for i in range(110):
        save(flat / "images" / f"{i:03d}.png", i)
        lines.append(f"images/{i:03d}.png,{'truck' if i % 3 else 'ship'}")
    save(flat / "images" / "unlisted.png", 0)
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    listing = read_listing(flat, 10, CIFAR, tmp_path / "labels.csv")
    assert len(listing.paths) == 110 and listing.labels[:3] == (8, 9, 9)
    assert listing.record()["labels_file"] == "labels.csv"


@pytest.mark.parametrize("names, needle", [
    (["0", "1", "12"], "class '12' does not match the model's 10 classes"),
    (["0", "1", "01"], "class '01' does not match"),
    (["cat", "dog", "wolf"], "class 'wolf' does not match the model's 10 classes: name each "
                             "class by the output index 0..9 or one of its class names"),
])
def test_classes_that_do_not_match_the_model_are_refused(tmp_path, names, needle):
    root = class_folders(tmp_path / "bad", names, 40)
    with pytest.raises(TTABenchError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        read_listing(root, num_classes=10, class_names=CIFAR)


def test_too_few_images_say_how_many_are_needed(tmp_path):
    assert needed_images(4) == 100 and needed_images(10) == 100 and needed_images(1000) == 10000
    root = class_folders(tmp_path / "few", ["0", "1"], 45)
    with pytest.raises(TTABenchError, match=r"has 90 readable labelled images; a calibration "
                       r"needs at least 100 \(max\(100, 10 per class x 4 classes\)\)"):
        read_listing(root, num_classes=4)
    one = class_folders(tmp_path / "one", ["3"], 120)
    with pytest.raises(TTABenchError, match="at least two of the model's classes"):
        read_listing(one, num_classes=4)


def test_bad_layouts_and_labels_files_are_one_line(tmp_path):
    root = class_folders(tmp_path / "mixed", ["0", "1"], 60)
    save(root / "loose.png", 1)
    with pytest.raises(TTABenchError, match="holds images outside class folders"):
        read_listing(root, 4)
    with pytest.raises(TTABenchError, match="does not exist"):
        read_listing(tmp_path / "nowhere", 4)
    labels = tmp_path / "labels.csv"
    for text, needle in [("0/000.png,0,extra\n", "is not 'path,label'"),
                         ("../outside.png,0\n", "is not a path inside"),
                         ("0/missing.png,0\n", "is not an image file"),
                         ("0/000.png,0\n0/000.png,1\n", "is listed twice")]:
        labels.write_text(text)
        with pytest.raises(TTABenchError, match=needle):
            read_listing(root, 4, labels_file=labels)
    with pytest.raises(TTABenchError, match="labels file not found"):
        read_listing(root, 4, labels_file=tmp_path / "none.csv")
