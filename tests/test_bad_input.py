"""Bad input is one ``error:`` line and exit status 2, before any work when it can be known
then, naming the option, file or key and what is expected; never a raw Python message and
never a silent wrong result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ttabench import registry
from cli_checks import no_cells, one_line_error
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.records import read_cell
from ttabench.suites.cifar import CIFAR10C
from ttabench.suites.npy_layout import CORRUPTIONS

TINY = ["-s", "tiny", "-m", "tiny-cnn", "--set", "suite.tiny.n_examples=64", "--n-boot", "10"]


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("suites", "ttabench_test_plugins:BadLabelsTiny")
    yield



def run(config: Path, out: Path, *args: str):
    return CliRunner().invoke(main, ["run", *args, "--config", str(config), "-o", str(out)])




@pytest.mark.parametrize("args, expected", [
    (["--severities", "7"], "--severities 7: suite 'tiny' has severities 1, 2, 3"),
    (["--severities", "0"], "'--severities': 0 is not in the range x>=1"),
    (["--steps", "-5"], "'--steps': -5 is not in the range x>=0"),
    (["-e", "recording-trajectory", "-a", "noisy", "--set",
      "estimator.recording-trajectory.checkpoints=[0, 20]", "--steps", "10"],
     "--steps 10 is fewer than the last checkpoint (20) of recording-trajectory"),
    (["--batch-size", "0"], "'--batch-size': 0 is not in the range x>=1"),
    (["--n-boot", "0"], "'--n-boot': 0 is not in the range x>=1"),
    (["--retries", "-1"], "'--retries': -1 is not in the range x>=0"),
    (["--jobs", "-1"], "'-j': -1 is not in the range x>=0"),
    (["--threads", "2000"], "'--threads': 2000 is not in the range 0<=x<=1024"),
    (["--seed", str(2**64)], "'--seed': 18446744073709551616 is not in the range 0<=x<="),
    (["--n-examples", "0"], "'--n-examples': 0 is not in the range x>=1"),
    (["--device", "warp-drive"], "--device 'warp-drive' is not a device"),
    (["--set", "suite.tiny.n_examples=-5"], "suite tiny: n_examples must be an integer >= 1"),
    (["-a", "tent", "--set", "adapter.tent.lr=-1"], "lr must be a positive finite number"),
    (["-a", "noisy", "--set", "adapter.noisy.scale=[1]"], "[adapter.noisy] scale: expected float"),
])
def test_bad_values_are_refused_before_any_work(tmp_path, config, args, expected):
    out = tmp_path / "out"
    line = one_line_error(run(config, out, *TINY, "-e", "ac", *args))
    assert expected in line
    assert no_cells(out)


def test_cuda_on_a_machine_without_it(tmp_path, config):
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = f"cuda:{count}" if count else "cuda"
    out = tmp_path / "out"
    line = one_line_error(run(config, out, *TINY, "-e", "ac", "--device", device))
    assert f"--device {device}" in line and no_cells(out)


def test_unwritable_output_folder(tmp_path, config):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    line = one_line_error(run(config, blocker / "out", *TINY, "-e", "ac"))
    assert f"output folder {blocker / 'out'} is not writable" in line and "--output" in line


def test_steps_run_exactly_as_many_updates_as_asked(tmp_path, config):
    out = tmp_path / "out"
    result = run(config, out, *TINY, "-e", "recording-trajectory", "-a", "noisy",
                 "--set", "estimator.recording-trajectory.checkpoints=[0, 3]",
                 "--set", "estimator.recording-trajectory.probe_size=32",
                 "--steps", "7", "--splits", "noise-1", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    (cell,) = [read_cell(p) for p in (out / "cells").glob("*.json")]
    assert cell.adaptation["steps"] == 7
    assert cell.estimators["recording-trajectory"].result.extras["steps_run"] == 7


def test_bad_adapter_parameters_fail_once_before_any_cell():
    with pytest.raises(TTABenchError, match="momentum must be in"):
        Benchmark(RunSpec(suite="tiny", model="tiny-cnn", adapters=["rdumb"], estimators=[],
                          adapter_params={"rdumb": {"momentum": 1.5}}, device="cpu"))


# ----------------------------------------------------------------------------- labels


def layout(root: Path, labels: np.ndarray, n: int = 8) -> Path:
    """A CIFAR-10-C layout of one corruption with the given labels (5 * n of them)."""
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", labels)
    np.save(folder / f"{CORRUPTIONS[0]}.npy", np.zeros((5 * n, 8, 8, 3), dtype=np.uint8))
    return folder


def test_labels_outside_the_class_range_are_refused(tmp_path):
    labels = np.arange(40) % 11  # 10 is no CIFAR-10 class
    folder = layout(tmp_path, labels)
    with pytest.raises(TTABenchError, match="labels outside 0..9 .*max 10"):
        CIFAR10C(tmp_path, corruptions=CORRUPTIONS[0])
    assert str(folder / "labels.npy") in str(pytest.raises(
        TTABenchError, CIFAR10C, tmp_path, corruptions=CORRUPTIONS[0]).value)


def test_float_labels_are_not_truncated(tmp_path):
    labels = (np.arange(40) % 10).astype(np.float64)
    labels[3] = 2.5
    layout(tmp_path, labels)
    with pytest.raises(TTABenchError, match="not whole numbers .*2.5"):
        CIFAR10C(tmp_path, corruptions=CORRUPTIONS[0])
    whole = tmp_path / "whole"
    layout(whole, (np.arange(40) % 10).astype(np.float32))
    assert CIFAR10C(whole, corruptions=CORRUPTIONS[0]).n_per_severity == 8


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_corrupt_npy_names_the_file(tmp_path, config, damage):
    folder = layout(tmp_path / "data", np.arange(40) % 10)
    target = folder / f"{CORRUPTIONS[0]}.npy"
    content = target.read_bytes()
    target.write_bytes(content[: len(content) // 2] if damage == "truncated" else b"\x00" * 300)
    line = one_line_error(run(config, tmp_path / "out", "-s", "cifar10c", "-e", "ac",
                              "--data-dir", str(tmp_path / "data"),
                              "--set", f"suite.cifar10c.corruptions={CORRUPTIONS[0]}"))
    assert str(target) in line and "truncated or corrupt" in line


@pytest.mark.parametrize("kind, expected", [
    ("range", "label 4 is outside the label range 0..3"),
    ("float", "label 1.5 is not a whole number"),
])
def test_a_suite_with_bad_labels_fails_its_cells_instead_of_scoring_zero(tmp_path, config, kind,
                                                                         expected):
    out = tmp_path / "out"
    result = run(config, out, "-s", "bad-labels-tiny", "-m", "tiny-cnn", "-e", "ac",
                 "--set", f"suite.bad-labels-tiny.kind={kind}", "--n-boot", "10")
    assert result.exit_code == 2
    cells = [read_cell(p) for p in (out / "cells").glob("*.json")]
    assert cells and all(c.status == "failed" and expected in c.error for c in cells)
    assert not (out / "leaderboard.csv").exists()


# ----------------------------------------------------------------------------- config file


def test_wrong_types_in_plugins_toml(tmp_path):
    path = tmp_path / "plugins.toml"
    path.write_text('[run]\nsuite = "tiny"\nmodel = "tiny-cnn"\nseeds = ["a"]\n')
    line = one_line_error(CliRunner().invoke(main, ["run", "-e", "ac", "--config", str(path),
                                                    "-o", str(tmp_path / "out")]))
    assert str(path) in line and "[run] seeds" in line
    path.write_text('run = 3\n')
    line = one_line_error(CliRunner().invoke(main, ["run", "-e", "ac", "--config", str(path),
                                                    "-o", str(tmp_path / "out")]))
    assert "run: must be a table" in line


def test_run_json_keeps_its_timings_when_a_rerun_runs_nothing(tmp_path, config):
    out = tmp_path / "out"
    first = run(config, out, *TINY, "-e", "ac")
    assert first.exit_code == 0, first.output
    before = (out / "run.json").read_text()
    assert json.loads(before)["phases_seconds"]["cells"] > 0
    second = run(config, out, *TINY, "-e", "ac")
    assert second.exit_code == 0 and "0 to run" in second.output
    assert (out / "run.json").read_text() == before
    # a rerun that does run cells adds an invocation and keeps the first
    (out / "cells" / sorted(p.name for p in (out / "cells").glob("*.json"))[0]).unlink()
    third = run(config, out, *TINY, "-e", "ac")
    assert third.exit_code == 0 and "1 to run" in third.output
    record = json.loads((out / "run.json").read_text())
    assert [i["ran"] for i in record["invocations"]] == [{"ok": 6, "failed": 0},
                                                         {"ok": 1, "failed": 0}]
    assert record["ran"] == {"ok": 1, "failed": 0}
