"""A cell's key is independent of where the data is mounted: it hashes the data's identity
(names relative to the data folder, sizes, an index digest), and the absolute paths are recorded
beside it (the cell's ``location``). The shards of one job array whose nodes mount the data at
different paths therefore share one partition, and moving the data reruns nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ttabench.cli import main
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.records import read_cell
from ttabench.runner.cells import in_shard
from ttabench.suites.cifar import CIFAR10C
from ttabench.suites.npy_layout import CORRUPTIONS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def shapes(root: Path) -> None:
    """Three splits of four sorted classes, three 16 px images each."""
    for s, split in enumerate(("a", "b", "c")):
        for c, name in enumerate(["ant", "bee", "cat", "dog"]):
            for k in range(3):
                path = root / split / name / f"{k}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                shade = 20 * c + 5 * k + s
                Image.new("RGB", (16, 16), (shade, 255 - shade, 40 * s)).save(path)


OPTIONS = ["--set", "suite.imagefolder.root=shapes", "--set", "suite.imagefolder.splits=a,b,c",
           "--set", "suite.imagefolder.class_map=sorted", "--set", "suite.imagefolder.image_size=16",
           "--set", "suite.imagefolder.resize=16"]


def run(tmp_path: Path, data: Path, *args: str):
    (tmp_path / "none.toml").write_text("")
    return CliRunner().invoke(main, ["run", "-s", "imagefolder", "-m", "tiny-cnn", "-e", "ac",
                                     "--seed", "0", "--seed", "1", "--n-boot", "10",
                                     "--config", str(tmp_path / "none.toml"), "--data-dir",
                                     str(data), *OPTIONS, "-o", str(tmp_path / "out"), *args])


def test_shards_under_two_data_paths_form_one_partition(tmp_path: Path) -> None:
    shapes(tmp_path / "node1" / "shapes")
    shutil.copytree(tmp_path / "node1", tmp_path / "node2")
    for i, node in ((1, "node1"), (2, "node2")):
        result = run(tmp_path, tmp_path / node, "--shard", f"{i}/2")
        assert result.exit_code == 0, result.output
    cells = [read_cell(p) for p in (tmp_path / "out" / "cells").glob("*.json")]
    assert len(cells) == 6 and all(c.status == "ok" for c in cells)  # each cell once
    for cell in cells:  # the path is recorded beside the key: the node that ran the cell
        node = "node2" if in_shard(cell.key, (2, 2)) else "node1"
        assert cell.location["suite"]["root"] == str(tmp_path / node / "shapes")
    shutil.move(tmp_path / "node2", tmp_path / "moved")
    again = run(tmp_path, tmp_path / "moved")
    assert again.exit_code == 0, again.output
    assert "6 cells planned, 0 to run" in again.output


def test_changed_data_changes_the_key(tmp_path: Path) -> None:
    shapes(tmp_path / "data" / "shapes")
    spec = dict(suite="imagefolder", model="tiny-cnn", adapters=["source"], estimators=["ac"],
                device="cpu", data_dir=str(tmp_path / "data"),
                suite_options={"root": "shapes", "splits": "a", "class_map": "sorted",
                               "image_size": 16, "resize": 16})
    before = Benchmark(RunSpec(**spec)).plan()[0].key
    extra = tmp_path / "data" / "shapes" / "a" / "ant" / "new.png"
    Image.new("RGB", (16, 16)).save(extra)
    assert Benchmark(RunSpec(**spec)).plan()[0].key != before


def test_npy_layout_keys_hold_file_sizes_not_the_folder(tmp_path: Path) -> None:
    records = {}
    for node in ("x", "y"):
        folder = tmp_path / node / "CIFAR-10-C"
        folder.mkdir(parents=True)
        np.save(folder / "labels.npy", np.arange(40) % 10)
        np.save(folder / f"{CORRUPTIONS[0]}.npy", np.zeros((40, 16, 16, 3), dtype=np.uint8))
        suite = CIFAR10C(tmp_path / node, corruptions=CORRUPTIONS[0])
        records[node] = suite.record()
        assert suite.location() == {"root": str(folder)}
        assert str(tmp_path) not in str(records[node])
        assert records[node]["file_sizes"]["labels.npy"] == (folder / "labels.npy").stat().st_size
    assert records["x"] == records["y"]
    np.save(tmp_path / "y" / "CIFAR-10-C" / "labels.npy", (np.arange(40) % 10).astype(np.int8))
    assert CIFAR10C(tmp_path / "y", corruptions=CORRUPTIONS[0]).record() != records["x"]
