"""A cell's key holds only facts fixed before any data is read, and every fact that decides
its numbers: folder suites run in parallel processes (their skipped-file count, known only
once a split is read, lives in the cell body), and the CPU thread count is in the key.

The folder suites are fabricated: flat-colour images with one corrupt file per split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from ttabench.cli import main
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.records import read_cell
from ttabench.suites.images import robustbench_helper_file

PLUGINS = ["models=ttabench_test_plugins:thousand_class_model"]

pytestmark = pytest.mark.filterwarnings("ignore::ttabench.suites.images.CorruptImageWarning")


@pytest.fixture(scope="module", autouse=True)
def worker_environment(spawned_workers_env):
    """Spawned workers import the test plugins by module name and run one thread each."""
    yield


def image(path: Path, shade: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (shade, 255 - shade, (7 * shade) % 256)).save(path)


def run_cli(tmp_path: Path, *args: str):
    (tmp_path / "none.toml").write_text("")
    plugin_args = [a for plugin in PLUGINS for a in ("--plugin", plugin)]
    return CliRunner().invoke(main, [*plugin_args, "run", *args, "--config",
                                     str(tmp_path / "none.toml"), "--n-boot", "10",
                                     "--jobs", "2", "--threads", "1", "--seed", "0",
                                     "--seed", "1", "--seed", "2"])


def check_cells(out: Path, expected: int) -> list[dict]:
    cells = [read_cell(p) for p in sorted((out / "cells").glob("*.json"))]
    assert len(cells) == expected
    assert all(c.status == "ok" for c in cells), [c.error for c in cells]
    for cell in cells:
        assert "skipped_files" not in json.dumps(cell.protocol)
        assert cell.data["skipped_files"] == 1
    return cells


@pytest.mark.slow
def test_imagefolder_with_two_jobs_runs_every_cell(tmp_path: Path) -> None:
    root = tmp_path / "data" / "shapes"
    for split in ("a", "b"):
        for c, name in enumerate(["ant", "bee", "cat", "dog"]):
            for k in range(20):
                image(root / split / name / f"{k}.png", 10 * c + k)
        (root / split / "ant" / "broken.png").write_bytes(b"not a png")
    result = run_cli(tmp_path, "-s", "imagefolder", "-m", "tiny-cnn", "-e", "ac",
                     "--data-dir", str(tmp_path / "data"), "--set", "suite.imagefolder.root=shapes",
                     "--set", "suite.imagefolder.splits=a,b",
                     "--set", "suite.imagefolder.class_map=sorted",
                     "--set", "suite.imagefolder.image_size=16",
                     "--set", "suite.imagefolder.resize=16", "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert "6 cells planned, 6 to run" in result.output
    check_cells(tmp_path / "out", 6)


@pytest.mark.slow
def test_imagenetc_with_two_jobs_runs_every_cell(tmp_path: Path) -> None:
    wnids = sorted(json.loads(robustbench_helper_file("imagenet_class_to_id_map.json").read_text()))
    listed = robustbench_helper_file("imagenet_test_image_ids.txt").read_text().split()[:17]
    for severity in (1, 2):
        folder = tmp_path / "ImageNet-C" / "fog" / str(severity)
        for wnid in wnids:
            (folder / wnid).mkdir(parents=True)
        for position, line in enumerate(listed[:-1]):
            image(folder / line, 10 * position + severity, size=224)
        (folder / listed[-1]).write_bytes(b"not a jpeg")
    result = run_cli(tmp_path, "-s", "imagenetc", "-m", "thousand-class", "-e", "ac",
                     "--data-dir", str(tmp_path), "--set", "suite.imagenetc.corruptions=fog",
                     "--set", "suite.imagenetc.severities=[1, 2]",
                     "--set", "suite.imagenetc.n_examples=17", "--batch-size", "8",
                     "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    check_cells(tmp_path / "out", 6)


def test_reading_a_split_does_not_change_the_keys(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    for c, name in enumerate(["ant", "bee", "cat", "dog"]):
        for k in range(3):
            image(root / name / f"{k}.png", 10 * c + k)
    (root / "ant" / "broken.png").write_bytes(b"not a png")
    bench = Benchmark(RunSpec(suite="imagefolder", model="tiny-cnn", adapters=["source"],
                              estimators=["ac"], device="cpu",
                              suite_options={"root": str(root), "class_map": "sorted",
                                             "image_size": 16, "resize": 16}))
    before = [p.key for p in bench.plan()]
    bench.suite.dataset(bench.suite.splits()[0])
    assert bench.suite.skipped_files == {"shapes": 1}
    assert [p.key for p in bench.plan()] == before


def test_cpu_thread_count_is_part_of_the_key() -> None:
    import torch

    saved = torch.get_num_threads()
    try:
        keys = {}
        for threads in (1, 2):
            bench = Benchmark(RunSpec(suite="tiny", model="tiny-cnn", adapters=["source"],
                                      estimators=["ac"], device="cpu", threads=threads))
            plan = bench.plan()[0]
            assert plan.protocol["threads"] == threads == torch.get_num_threads()
            keys[threads] = plan.key
        assert keys[1] != keys[2]
    finally:
        torch.set_num_threads(saved)
