"""No image is decoded on the main thread where a suite streams from disk: the cell's passes
and stream (a continual one too), the labelled source-val reference (read once per process) and EATA's Fisher
images all go through the loader's worker processes; ``ttabench estimate`` decodes its folder
once for all its cells. Reads are counted, not timed: every read in any process (a counter
in shared memory, which the forked loader workers inherit) and the reads of the main process.
"""

from __future__ import annotations

import multiprocessing
import os
import re

import pytest
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import Dataset

from ttabench import registry
from ttabench.cli import main
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.spec import StreamSpec
from ttabench.suites import images
from ttabench.suites.tiny import TinySuite

MAIN = os.getpid()


class Counter:
    """Reads in every process (shared memory) and in the main process."""

    def __init__(self) -> None:
        self.every = multiprocessing.get_context("fork").Value("i", 0)
        self.main = 0

    def count(self) -> None:
        with self.every.get_lock():
            self.every.value += 1
        if os.getpid() == MAIN:
            self.main += 1


SPLITS, SOURCE_VAL = Counter(), Counter()


class Counted(Dataset):
    def __init__(self, inner: Dataset, counter: Counter) -> None:
        self.inner, self.counter = inner, counter

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.counter.count()
        return self.inner[index]


class DiskTiny(TinySuite):
    """The tiny suite, read as a folder suite is: through loader workers."""

    name = "disk-tiny"
    streams_from_disk = True

    def dataset(self, split):
        return Counted(super().dataset(split), SPLITS)

    def source_val(self):
        return Counted(super().source_val(), SOURCE_VAL)


@pytest.fixture(autouse=True)
def disk_suite():
    registry.add_plugin("suites", f"{__name__}:DiskTiny")
    for counter in (SPLITS, SOURCE_VAL):
        counter.every.value, counter.main = 0, 0
    yield


def test_cells_reference_and_fisher_images_are_decoded_by_workers_only():
    spec = RunSpec(suite="disk-tiny", model="tiny-cnn", adapters=["eata"],
                   estimators=["doc", "enigma"], seeds=[0, 1], splits=["noise-1"],
                   estimator_params={"enigma": {"probe_size": 64, "checkpoints": [0, 3],
                                                "estimate_at": 3}},
                   suite_options={"n_examples": 192}, device="cpu", batch_size=32, threads=1)
    bench = Benchmark(spec)
    assert bench.loader.workers >= 1
    cells = [bench.execute(plan) for plan in bench.plan()]
    assert all(c.status == "ok" for c in cells) and len(cells) == 2
    assert SPLITS.main == 0 and SOURCE_VAL.main == 0
    assert SPLITS.every.value == sum(c.data["decodes"] for c in cells) > 0
    # the reference once per process (128 images), EATA's Fisher images once per cell
    fisher = [c.adaptation["source_data"]["samples"] for c in cells]
    assert fisher == [128, 128]
    assert SOURCE_VAL.every.value == 128 + sum(fisher)


def test_a_continual_stream_is_decoded_by_workers_only():
    spec = RunSpec(suite="disk-tiny", model="tiny-cnn", adapters=["source"], estimators=["ac"],
                   splits=["noise-1", "noise-2"], suite_options={"n_examples": 96},
                   stream=StreamSpec(kind="continual", steps_per_split=2), device="cpu",
                   batch_size=32, threads=1)
    bench = Benchmark(spec)
    cells = [bench.execute(plan) for plan in bench.plan()]
    assert [c.status for c in cells] == ["ok"] and cells[0].adaptation["steps"] == 4
    assert SPLITS.main == 0 and SPLITS.every.value == cells[0].data["decodes"] > 0


def test_estimate_decodes_its_folder_once_for_all_cells(tmp_path, monkeypatch, config):
    """The estimate and the three resamples of its interval (a trajectory estimator adapts on
    each) read the folder decoded once, by the loader's workers."""
    root = tmp_path / "folder"
    root.mkdir()
    for i in range(96):
        Image.new("RGB", (16, 16), (i, 255 - i, (7 * i) % 256)).save(root / f"{i:03d}.png")
    decodes = Counter()
    real = images.decode

    def counted(*args, **kw):
        decodes.count()
        return real(*args, **kw)

    monkeypatch.setattr(images, "decode", counted)
    result = CliRunner().invoke(main, [
        "estimate", "--config", str(config), "-e", "aetta", "-a", "tent", "-m", "tiny-cnn",
        "--data", str(root), "--image-size", "16", "--resize", "16", "--bootstrap", "3",
        "--threads", "1", "--batch-size", "32", "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert re.search(r"normal bootstrap over the 96 images \(3 resamples", result.output)
    assert decodes.every.value == 96 and decodes.main == 0
