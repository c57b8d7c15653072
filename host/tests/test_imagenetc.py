"""The imagenetc suite on fabricated ImageNet-C layouts (tiny flat-colour JPEGs).

Every fabricated image encodes its class label and its position in its pixel values
(R, G: label in base 32; B: position), so a test reads back what file it got.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttabench.errors import TTABenchError
from ttabench.suites.images import CorruptImageWarning, ImageTransform, robustbench_helper_file
from ttabench.suites.imagenetc import ImageNetC

N = 12  # images taken from robustbench's 5,000-image list in the 5000-mode tests


def sorted_wnids() -> list[str]:
    path = robustbench_helper_file("imagenet_class_to_id_map.json")
    return sorted(json.loads(path.read_text()))


def image_list() -> list[str]:
    return robustbench_helper_file("imagenet_test_image_ids.txt").read_text().split()


def colour(label: int, position: int) -> tuple[int, int, int]:
    return (label % 32) * 8 + 4, (label // 32) * 8 + 4, position * 8 + 4


def decode_colour(image: torch.Tensor) -> tuple[int, int]:
    """(label, position) from the mean pixel of a decoded image."""
    r, g, b = image.float().mean(dim=(1, 2)).tolist()
    return round((r - 4) / 8) + 32 * round((g - 4) / 8), round((b - 4) / 8)


def write_image(path: Path, label: int, position: int, size: tuple[int, int] = (224, 224)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour(label, position)).save(path, format="JPEG", quality=95)


def class_folders(folder: Path) -> None:
    for wnid in sorted_wnids():
        (folder / wnid).mkdir(parents=True, exist_ok=True)


def fill_listed(folder: Path, n: int = N) -> None:
    """The first ``n`` files of robustbench's list, with all 1000 class folders."""
    wnids = sorted_wnids()
    class_folders(folder)
    for position, line in enumerate(image_list()[:n]):
        write_image(folder / line, wnids.index(line.split("/")[0]), position)


@pytest.fixture()
def layout(tmp_path: Path) -> Path:
    root = tmp_path / "ImageNet-C"
    for corruption in ("fog", "snow"):
        fill_listed(root / corruption / "5")
    return tmp_path


def test_5000_mode_follows_robustbench_list(layout: Path) -> None:
    suite = ImageNetC(layout, corruptions="snow,fog", severities=5, n_examples=N)
    assert [s.name for s in suite.splits()] == ["snow-5", "fog-5"]  # order as given
    wnids = sorted_wnids()
    for split in suite.splits():
        dataset = suite.dataset(split)
        assert len(dataset) == N
        for position, line in enumerate(image_list()[:N]):
            image, label = dataset[position]
            assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 224, 224)
            assert label == wnids.index(line.split("/")[0])
            assert decode_colour(image) == (label, position)
    record = suite.record()
    assert record["mode"] == "5000" and record["corruption_order"] == ["snow", "fog"]
    assert suite.skipped_files == {"snow-5": 0, "fog-5": 0} and "skipped_files" not in record


def test_5000_mode_matches_robustbench_index(layout: Path) -> None:
    from ttabench.compat import import_robustbench

    import_robustbench()
    from robustbench.loaders import CustomImageFolder

    folder = layout / "ImageNet-C" / "fog" / "5"
    reference = CustomImageFolder(str(folder)).samples[:N]
    ours = ImageNetC(layout, corruptions="fog", severities=5, n_examples=N).dataset(
        ImageNetC(layout, corruptions="fog", severities=5).splits()[0]
    )
    assert [(Path(p), y) for p, y in reference] == [
        (Path(ours.path(i)), int(ours.labels[i])) for i in range(N)
    ]


def test_canonical_order_and_holdouts_and_clean(tmp_path: Path) -> None:
    root = tmp_path / "ImageNet-C"
    for corruption in ("fog", "gaussian_noise"):
        fill_listed(root / corruption / "3", n=2)
    fill_listed(root / "extra" / "spatter" / "3", n=2)
    fill_listed(root / "saturate" / "3", n=2)  # holdouts also accepted at the top level
    fill_listed(tmp_path / "ImageNet" / "val", n=3)
    suite = ImageNetC(tmp_path, corruptions=["gaussian_noise", "fog"], severities="3", n_examples=2)
    assert [(s.name, s.role) for s in suite.splits()] == [
        ("gaussian_noise-3", "eval"), ("fog-3", "eval"),
        ("spatter-3", "calibration"), ("saturate-3", "calibration"), ("clean", "calibration"),
    ]  # fmt: skip
    spatter = suite.dataset(suite.splits()[2])
    assert "extra" in spatter.path(0)
    source_val = suite.source_val()
    assert source_val is not None and len(source_val) == 2
    assert decode_colour(source_val[1][0]) == (source_val[1][1], 1)


def test_full_mode_every_file_and_subset(tmp_path: Path) -> None:
    folder = tmp_path / "ImageNet-C" / "fog" / "1"
    class_folders(folder)
    wnids = sorted_wnids()
    expected = []
    for label in (3, 500, 999):
        for k in range(2):
            write_image(folder / wnids[label] / f"img_{k}.JPEG", label, k)
            expected.append((label, k))
    suite = ImageNetC(tmp_path, corruptions="fog", severities=[1], mode="full")
    dataset = suite.dataset(suite.splits()[0])
    got = [decode_colour(dataset[i][0]) for i in range(len(dataset))]
    assert got == expected and [dataset[i][1] for i in range(6)] == [e[0] for e in expected]
    subset = ImageNetC(tmp_path, corruptions="fog", severities=1, mode="full", n_examples=4)
    part = subset.dataset(subset.splits()[0])
    assert len(part) == 4 and set(part.paths.tolist()) <= set(dataset.paths.tolist())


def test_resize_only_when_not_224(tmp_path: Path) -> None:
    folder = tmp_path / "ImageNet-C" / "fog" / "1"
    class_folders(folder)
    wnid = sorted_wnids()[7]
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 280, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / wnid / "big.png")
    exact = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(exact).save(folder / wnid / "exact.png")
    suite = ImageNetC(tmp_path, corruptions="fog", severities=1, mode="full")
    dataset = suite.dataset(suite.splits()[0])
    from torchvision import transforms

    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    expected = torch.from_numpy(np.array(reference(Image.fromarray(pixels)))).permute(2, 0, 1)
    assert torch.equal(dataset[0][0], expected)  # big.png sorts first
    assert torch.equal(dataset[1][0], torch.from_numpy(exact).permute(2, 0, 1))
    assert suite.record()["preprocessing"]["only_if_not_already"] is True
    assert ImageTransform(224, 256, only_if_needed=True).record()["resize"] == 256


def test_corrupt_file_skipped_and_counted_or_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "ImageNet-C" / "fog" / "2"
    class_folders(folder)
    wnid = sorted_wnids()[0]
    write_image(folder / wnid / "a.JPEG", 0, 0)
    (folder / wnid / "b.JPEG").write_bytes(b"<html>not an image</html>")
    write_image(folder / wnid / "c.JPEG", 0, 2)
    suite = ImageNetC(tmp_path, corruptions="fog", severities=2, mode="full")
    with pytest.warns(CorruptImageWarning, match="skipped 1"):
        dataset = suite.dataset(suite.splits()[0])
    assert len(dataset) == 2 and dataset.skipped_files == 1
    assert [decode_colour(dataset[i][0])[1] for i in range(2)] == [0, 2]
    assert suite.skipped_files == {"fog-2": 1} and "skipped_files" not in suite.record()
    strict = ImageNetC(tmp_path, corruptions="fog", severities=2, mode="full", on_corrupt="error")
    with pytest.raises(TTABenchError, match="b.JPEG"):
        strict.dataset(strict.splits()[0])


def test_missing_data_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(TTABenchError) as info:
        ImageNetC(tmp_path, corruptions="fog", severities=5)
    message = str(info.value)
    assert "\n" not in message and "zenodo.org/records/2235448" in message
    assert "ImageNet-C/<corruption>/<severity>/<wnid>" in message
    # partial class folders: labels would shift, so it is refused
    folder = tmp_path / "ImageNet-C" / "fog" / "5"
    for wnid in sorted_wnids()[:10]:
        (folder / wnid).mkdir(parents=True)
    suite = ImageNetC(tmp_path, corruptions="fog", severities=5, n_examples=N)
    with pytest.raises(TTABenchError, match="has 10 of the 1000"):
        suite.dataset(suite.splits()[0])
    # all class folders but the listed files absent
    class_folders(folder)
    with pytest.raises(TTABenchError, match=f"{N} of the {N} files"):
        suite.dataset(suite.splits()[0])
    with pytest.raises(TTABenchError, match="val"):
        ImageNetC(tmp_path, corruptions="fog", severities=5, val_dir=tmp_path / "nope")
    with pytest.raises(TTABenchError, match="mode"):
        ImageNetC(tmp_path, corruptions="fog", severities=5, mode="10000")


def test_streams_without_holding_images(layout: Path) -> None:
    suite = ImageNetC(layout, corruptions="fog", severities=5, n_examples=N)
    dataset = suite.dataset(suite.splits()[0])
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = [labels for _, labels in loader]
    assert torch.cat(batches).tolist() == dataset.labels.tolist()
    assert not any(isinstance(v, (torch.Tensor, list)) and len(v) == N
                   for k, v in vars(dataset).items() if k != "skipped")


def test_imagenet_c_bar_reads_both_severity_folder_spellings(tmp_path: Path) -> None:
    """The generator names a severity folder by the corruption's parameter ("1.00"); the
    authors' preprocessed copy (`ttabench fetch imagenet-c-bar`) names it 1-5."""
    root = tmp_path / "ImageNet-C-Bar" / "sparkles"
    (root / "1").mkdir(parents=True)
    (root / "2.00").mkdir(parents=True)
    suite = ImageNetC(tmp_path, corruption_set="imagenet-c-bar", mode="full",
                      corruptions="sparkles", severities="1,2")
    assert suite.record()["severity_folders"] == {"sparkles": ["1", "2.00"]}
    with pytest.raises(TTABenchError, match="imagenet-c-bar --no-verify"):
        ImageNetC(tmp_path, corruption_set="imagenet-c-bar", mode="full",
                  corruptions="sparkles", severities=3)
