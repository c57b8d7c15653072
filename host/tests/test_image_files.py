"""What counts as an image file of a folder, and how odd files are read: a link loop lists each
file once, a FIFO named ``*.png`` is left out without being opened, a 16-bit PNG is scaled to 8
bits (not clipped to white), and an image past PIL's decompression-bomb limit is skipped and
counted instead of aborting the index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ttabench.suites.images import (
    CorruptImageWarning,
    ImageTransform,
    UnlabelledFolder,
    decode,
    list_images,
)


def flat(path: Path, value: int, size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (value, value, value)).save(path)
    return path


def test_a_link_loop_lists_each_file_once(tmp_path: Path) -> None:
    files = [flat(tmp_path / "a" / f"{k}.png", 10 * k) for k in range(3)]
    files.append(flat(tmp_path / "b" / "c" / "3.png", 40))
    (tmp_path / "a" / "up").symlink_to(tmp_path)  # a/up/a/up/... loops back to the root
    (tmp_path / "b" / "c" / "loop").symlink_to(tmp_path / "b")
    assert list_images(tmp_path) == files


def test_a_link_to_a_folder_outside_is_followed(tmp_path: Path) -> None:
    outside = flat(tmp_path / "elsewhere" / "x.png", 1)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "linked").symlink_to(outside.parent)
    assert list_images(tmp_path / "root") == [tmp_path / "root" / "linked" / "x.png"]


def test_a_fifo_or_broken_link_named_png_is_left_out(tmp_path: Path) -> None:
    kept = flat(tmp_path / "ok.png", 5)
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "absent.png")
    assert list_images(tmp_path) == [kept]
    assert len(UnlabelledFolder(tmp_path, image_size=8, resize=None)) == 1  # does not hang


def test_a_16_bit_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)  # 0 .. 65520
    Image.fromarray(values).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I;16")
    got = decode(str(tmp_path / "deep.png"), ImageTransform(image_size=8, resize=None))
    expected = np.round(values / 257.0).astype(np.uint8)
    assert got.shape == (3, 8, 8)
    for channel in got.numpy():
        assert np.array_equal(channel, expected)


def test_a_decompression_bomb_is_skipped_and_counted(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    flat(tmp_path / "small.png", 3, size=8)
    flat(tmp_path / "huge.png", 3, size=64)  # 4096 pixels > 2 x the limit below
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.warns(CorruptImageWarning, match="huge.png"):
        folder = UnlabelledFolder(tmp_path, image_size=8, resize=None)
    assert len(folder) == 1 and folder.skipped_files == 1
    assert folder.skipped == [str(tmp_path / "huge.png")]
