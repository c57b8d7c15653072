"""The table of bad inputs (issue 24): each row is one case, given as a user would give it,
and the one ``error:`` line (exit status 2) it must give, before any work where it can be known
then. A row's setup writes the files it needs into ``tmp_path`` and returns the arguments.

Cell files edited by hand are not errors: a damaged cell counts as unfinished (a rerun
recomputes it) and the leaderboard says it ignored it; ``test_an_edited_cell_*`` check that
for every edit of the issue.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from cli_checks import no_cells, one_line_error
from ttabench import registry
from ttabench.cli import main
from ttabench.models.tiny import TinyCNN
from ttabench.runner.cells import is_finished
from ttabench.scoring.leaderboard import load_cells
from ttabench.suites.npy_layout import CORRUPTIONS

TINY = ["-s", "tiny", "-m", "tiny-cnn", "--set", "suite.tiny.n_examples=64", "--n-boot", "10"]
CONTINUAL = ["continual", "-s", "tiny", "-m", "tiny-cnn", "--severities", "1"]
GUARD_SETTINGS = {"schema": "ttabench_enigma.guard/1", "id": "mine", "model": None,
                  "guard": {"threshold": 0.2, "patience": 2, "check_every": 5,
                            "probe_batches": 2, "min_steps": 10},
                  "online": {"coefficients": [0.0, 1.0, 0.0, 0.0]}, "fitted_on": {}}
CALIBRATION = {"schema": "ttabench.calibration/1", "id": "mine", "estimator": "enigma",
               "input": "weighted_flips", "coefficients": [0.0, -0.01, 0.9]}


class NoNorm(nn.Module):
    """A model with no normalization layer (takes [0, 1] images)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


def write_json(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


def scripted(path: Path, net: nn.Module) -> str:
    torch.jit.save(torch.jit.script(net.eval()), str(path))
    return str(path)


def checkpoint(path: Path, **content: object) -> str:
    torch.save({"state_dict": {}, **content}, path)
    return str(path)


def guard_file(tmp: Path, **online: object) -> list[str]:
    settings = {**GUARD_SETTINGS, "online": {**GUARD_SETTINGS["online"], **online}}
    path = write_json(tmp / "guard.json", settings)
    return [*CONTINUAL, "-o", str(tmp / "out"), "-a", "guard:tent",
            "--set", f"adapter.guard:tent.settings={path}"]


def run(*args: str) -> list[str]:
    """``ttabench run`` on tiny; a row naming its own model replaces tiny-cnn (``--model`` is
    repeatable: two would make a run of two models)."""
    return ["run", *(TINY[:2] + TINY[4:] if "-m" in args else TINY), *args]


def npy_layout_short_clean_labels(tmp: Path) -> list[str]:
    folder = tmp / "data" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.arange(40) % 10)
    np.save(folder / f"{CORRUPTIONS[0]}.npy", np.zeros((40, 8, 8, 3), dtype=np.uint8))
    np.save(folder / "clean.npy", np.zeros((10, 8, 8, 3), dtype=np.uint8))
    np.save(folder / "clean_labels.npy", np.arange(5) % 10)
    return ["run", "-s", "cifar10c", "-m", "tiny-cnn", "-e", "ac", "--data-dir",
            str(tmp / "data"), "--set", f"suite.cifar10c.corruptions={CORRUPTIONS[0]}"]


Row = tuple[str, Callable[[Path], list[str]], str]
ROWS: list[Row] = [
    # code from checkpoints
    ("torchscript without the opt-in",
     lambda t: run("-e", "ac", "-m", scripted(t / "s.pt", TinyCNN(num_classes=4))),
     "is a TorchScript program"),
    # guard settings and values
    ("guard threshold 1e999", lambda t: [*CONTINUAL, "-o", str(t / "o"), "-a", "guard:tent",
                                         "--set", "adapter.guard:tent.threshold=1e999"],
     "threshold: input should be a finite number (got inf)"),
    ("guard threshold abc", lambda t: [*CONTINUAL, "-o", str(t / "o"), "-a", "guard:tent",
                                       "--set", "adapter.guard:tent.threshold=abc"],
     "[adapter.guard:tent] threshold: expected float | None, got 'abc'"),
    ("guard value nested deeply", lambda t: [*CONTINUAL, "-o", str(t / "o"), "-a", "guard:tent",
                                             "--set", "adapter.guard:tent.threshold="
                                             + "[" * 5000 + "]" * 5000],
     "nested too deeply"),
    ("guard settings coefficient NaN", lambda t: guard_file(t, coefficients=[0.0, float("nan"),
                                                                            0.0, 0.0]),
     "online.coefficients.1: input should be a finite number"),
    ("guard settings coefficients as strings", lambda t: guard_file(t, coefficients="1234"),
     "online.coefficients: input should be a valid list (got '1234')"),
    ("guard settings with 3 coefficients", lambda t: guard_file(t, coefficients=[0.0, 1.0, 0.0]),
     "online.coefficients: list should have at least 4 items"),
    # continual
    ("enigma-online window contradicts --window",
     lambda t: [*CONTINUAL, "-o", str(t / "o"), "-a", "tent", "-e", "enigma-online",
                "--window", "20", "--set", "estimator.enigma-online.window=10"],
     "window = 10 contradicts the stream's window (20, --window)"),
    ("continual huge seed", lambda t: [*CONTINUAL, "-o", str(t / "o"), "-a", "tent",
                                       "--seed", str(10**20)],
     "'--seed': 100000000000000000000 is not in the range"),
    ("continual output not writable",
     lambda t: [*CONTINUAL, "-o", str(write_json(t / "f", 1) / "sub"), "-a", "tent"],
     "is not writable"),
    # run: checked before any work
    ("ray address malformed", lambda t: run("-e", "ac", "--executor", "ray", "--ray-address",
                                            "no-port-here"),
     "--ray-address 'no-port-here' is not HOST:PORT"),
    ("ray address unreachable", lambda t: run("-e", "ac", "--executor", "ray", "--ray-address",
                                              "127.0.0.1:1"),
     "--ray-address 127.0.0.1:1: cannot connect"),
    ("ray address without the ray executor", lambda t: run("-e", "ac", "--ray-address", "auto"),
     "--ray-address needs --executor ray"),
    ("batch larger than every split", lambda t: run("-e", "ac", "-a", "tent", "--steps", "5",
                                                    "--batch-size", "1000"),
     "no split is large enough; first: split 'clean' has 64 images, fewer than one stream "
     "batch of 1000"),
    ("probe larger than every split", lambda t: run("-e", "enigma", "--set",
                                                    "estimator.enigma.probe_size=1000"),
     "no split is large enough; first: split 'clean' has 64 images, fewer than the probe"),
    ("run with no estimator", lambda t: run("-a", "tent", "--no-baselines"), "nothing to run"),
    ("tent with an unknown optimizer", lambda t: run("-e", "ac", "-a", "tent", "--set",
                                                     "adapter.tent.optimizer=AdamW"),
     "[adapter.tent] optimizer: expected 'SGD' | 'Adam', got 'AdamW'"),
    ("--set value nested deeply", lambda t: run("-e", "ac", "--set", "run.steps="
                                                + "[" * 5000 + "]" * 5000),
     "nested too deeply"),
    ("output is a file", lambda t: run("-e", "ac", "-o", str(write_json(t / "f", 1) / "out")),
     "is not writable"),
    ("damaged run.json", lambda t: (write_json(t / "out" / "run.json", {
        "ran": {}, "phases_seconds": {}, "invocations": [{
            "started": "x", "command": [], "ran": {"ok": "6"}, "phases_seconds": {}}]}),
        run("-e", "ac"))[1],
     "run.json (fix or delete it): invocations.0.ran.ok: input should be a valid integer"),
    # model files
    ("text file as -m", lambda t: run("-e", "ac", "-m", str(write_json(t / "m.pt", "hi"))),
     "is not a weight file"),
    ("checkpoint with an unknown torchvision arch",
     lambda t: run("-e", "ac", "-m", checkpoint(t / "c.pt", arch="torchvision:nonet")),
     "torchvision has no model 'nonet'"),
    ("checkpoint mean as a string",
     lambda t: run("-e", "ac", "-m", checkpoint(t / "c.pt", arch="torchvision:resnet18",
                                                  mean="1234")),
     "mean: input should be a valid list (got '1234')"),
    ("checkpoint huge class count",
     lambda t: run("-e", "ac", "-m", checkpoint(t / "c.pt", arch="torchvision:resnet18",
                                                  num_classes=10**12)),
     "num_classes: input should be less than or equal to 100000"),
    ("checkpoint negative class count",
     lambda t: run("-e", "ac", "-m", checkpoint(t / "c.pt", arch="torchvision:resnet18",
                                                  num_classes=-3)),
     "num_classes: input should be greater than or equal to 1"),
    ("torchscript model of another class count",
     lambda t: run("-e", "ac", "--trust-torchscript",
                   "-m", scripted(t / "s.pt", TinyCNN(num_classes=7))),
     "has 7 classes but suite tiny has 4"),
    ("no normalization layer under tent",
     lambda t: run("-e", "ac", "-a", "tent", "--trust-torchscript",
                   "-m", scripted(t / "s.pt", NoNorm())),
     "the model has no normalization layer (of kinds batch, layer, group), so there is nothing "
     "to adapt"),
    # calibrations
    ("calibration coefficients as strings",
     lambda t: run("-e", "enigma", "--set", "estimator.enigma.calibration=" + str(write_json(
         t / "cal.json", {**CALIBRATION, "coefficients": ["0", "-0.01", "0.9"]}))),
     "coefficients.0: input should be a valid number (got '0')"),
    ("calibration as a JSON list",
     lambda t: run("-e", "enigma", "--set", "estimator.enigma.calibration="
                   + str(write_json(t / "cal.json", [0.0, 1.0]))),
     "is not a ttabench calibration (schema 'list'"),
    # data
    ("cifar10c clean_labels shorter than clean", npy_layout_short_clean_labels,
     "holds 5 labels but"),
    # estimate
    ("estimate --data-dir", lambda t: ["estimate", "-e", "ac", "-m", "tiny-cnn", "--data",
                                       str(t), "--data-dir", str(t)],
     "--data-dir (a suite's data folder) has no meaning here"),
    ("estimate with two stream seeds", lambda t: ["estimate", "-e", "ac", "-m", "tiny-cnn",
                                                  "--data", str(t), "--seed", "5", "--seed",
                                                  "9"],
     "estimate takes one --seed (the stream seed of the estimate)"),
    # cells
    ("leaderboard of damaged cells only", lambda t: ["leaderboard", str(t), "--output",
                                                     str(t / "lb")] if write_json(
        t / "cells" / f"{'0' * 16}.json", {"schema": "ttabench.cell/2", "key": "0" * 16,
                                           "status": "failed", "surprise": 1}) else [],
     "every cell file is damaged (1), first: cell file"),
    # outputs of the scoring commands
    ("leaderboard output not writable",
     lambda t: ["leaderboard", str(t), "--output", str(write_json(t / "f", 1) / "sub")],
     "is not writable"),
    ("fit output not writable",
     lambda t: ["fit", str(t), "--estimator", "ac", "--output", str(write_json(t / "f", 1) / "c.json")],
     "is not writable"),
]


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    yield


@pytest.mark.parametrize("setup, expected", [(s, e) for _, s, e in ROWS],
                         ids=[name for name, _, _ in ROWS])
def test_bad_input_gives_one_error_line(tmp_path, config, setup, expected):
    args = setup(tmp_path)
    if args[0] == "run":
        args += ["--config", str(config)] + ([] if "-o" in args else ["-o", str(tmp_path / "out")])
    line = one_line_error(CliRunner().invoke(main, args))
    assert expected in line, line
    assert no_cells(tmp_path / "out")


# ----------------------------------------------------------------------------- edited cells


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished tiny run (6 cells) to copy and edit."""
    out = tmp_path_factory.mktemp("run")
    (out / "none.toml").write_text("")
    result = CliRunner().invoke(main, ["run", *TINY, "-e", "ac", "--config",
                                       str(out / "none.toml"), "-o", str(out / "run")])
    assert result.exit_code == 0, result.output
    return out / "run"


def _set(path: list[str], value: object) -> Callable[[dict], None]:
    def edit(cell: dict) -> None:
        *parents, leaf = path
        for key in parents:
            cell = cell[key]
        cell[leaf] = value
    return edit


def _drop(key: str) -> Callable[[dict], None]:
    return lambda cell: cell.pop(key)


EDITS: dict[str, tuple[Callable[[dict], None], str]] = {
    "target above 1": (_set(["targets", "source"], 1.4), "targets.source: input should be "
                       "less than or equal to 1"),
    "target below 0": (_set(["targets", "source"], -0.2), "targets.source: input should be "
                       "greater than or equal to 0"),
    "target NaN": (_set(["targets", "source"], float("nan")), "targets.source: input should "
                   "be a finite number"),
    "target as a string": (_set(["targets", "source"], "0.5"), "targets.source: input should "
                           "be a valid number"),
    "no targets": (_drop("targets"), "a finished cell must hold 'targets'"),
    "no estimators": (_drop("estimators"), "a finished cell must hold 'estimators'"),
    "no split": (_drop("split"), "a finished cell must hold 'split'"),
    "an extra field": (_set(["surprise"], 1), "surprise: extra inputs are not permitted"),
    "a wrongly typed field": (_set(["seed"], "0"), "seed: input should be a valid integer"),
    "estimate outside [0, 1]": (_set(["estimators", "ac", "views", "source", "estimate"], 3.0),
                                "estimators.ac.views.source.estimate: input should be less"),
}


@pytest.mark.parametrize("edit, reason", EDITS.values(), ids=list(EDITS))
def test_an_edited_cell_is_unfinished_and_ignored(tmp_path, finished_run, edit, reason):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    path = sorted((out / "cells").glob("*.json"))[0]
    cell = json.loads(path.read_text())
    edit(cell)
    path.write_text(json.dumps(cell))
    assert not is_finished(out, path.stem)  # a rerun recomputes it
    ignored: list[str] = []
    assert len(load_cells([out], ignored)) == 5
    assert len(ignored) == 1 and ignored[0].startswith(f"cell file {path}: ")
    assert reason in ignored[0]


def test_the_leaderboard_says_it_ignored_a_damaged_cell(tmp_path, finished_run):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    path = sorted((out / "cells").glob("*.json"))[0]
    path.write_text(path.read_text().replace('"status": "ok"', '"status": "ok", "surprise": 1'))
    result = CliRunner().invoke(main, ["leaderboard", str(out), "--n-boot", "10"])
    assert result.exit_code == 0, result.output
    assert ("ignored 1 damaged cell file(s) (a rerun of their run recomputes them); first: "
            f"cell file {path}: surprise: extra inputs are not permitted") in result.output


def test_a_cell_under_another_keys_file_name_is_rerun(tmp_path, finished_run, config):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    first, second = sorted((out / "cells").glob("*.json"))[:2]
    second.write_text(first.read_text())  # the second split's file now holds the first cell
    assert not is_finished(out, second.stem)
    result = CliRunner().invoke(main, ["run", *TINY, "-e", "ac", "--config", str(config),
                                       "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "6 cells planned, 1 to run" in result.output
    assert json.loads(second.read_text())["key"] == second.stem


def test_a_leaderboard_of_two_settings_is_refused(tmp_path, finished_run, config):
    other = tmp_path / "other"
    result = CliRunner().invoke(main, ["run", *TINY, "-e", "ac", "--batch-size", "32",
                                       "--config", str(config), "-o", str(other)])
    assert result.exit_code == 0, result.output
    line = one_line_error(CliRunner().invoke(main, ["leaderboard", str(finished_run), str(other),
                                                    "--output", str(tmp_path / "lb")]))
    assert "come from two settings (their protocols differ in 'batch_size')" in line


def test_estimate_uses_the_seed_given(tmp_path, config):
    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(40):
        Image.fromarray(np.full((16, 16, 3), 6 * k, dtype=np.uint8)).save(folder / f"{k}.png")
    result = CliRunner().invoke(main, ["estimate", "-e", "ac", "-m", "tiny-cnn", "--data",
                                       str(tmp_path / "images"), "--seed", "5", "--json",
                                       "--batch-size", "8", "-a", "tent", "--steps", "2",
                                       "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output[result.output.index("{"):])["seed"] == 5
