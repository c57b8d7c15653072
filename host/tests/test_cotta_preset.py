"""The ``cotta-cifar10c`` preset: CoTTA's continual CIFAR-10-C protocol, checked against the
authors' settings re-stated here from qinenergy/cotta (``cifar/cfgs/cifar10/cotta.yaml``,
``cifar/cifar10c.py`` ``evaluate``/``setup_optimizer``, ``cifar/cotta.py``), by a dry run that
refuses nothing and names what is missing in one line, and by a run of the whole stream on a
fabricated CIFAR-10-C (8 px images, 400 per severity) with a 10-class tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli_checks import one_line_error
from ttabench import preset as presets
from ttabench import registry
from ttabench.adapters.cotta import CoTTA
from ttabench.cli import main
from ttabench.models.tiny import TinyCNN
from ttabench.runner.streams import cell_stream
from ttabench.spec import StreamSpec
from ttabench.suites.cifar import CIFAR10C

#: cfgs/cifar10/cotta.yaml CORRUPTION.TYPE, in its order.
AUTHORS_ORDER = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                 "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                 "elastic_transform", "pixelate", "jpeg_compression"]
#: cfgs/cifar10/cotta.yaml OPTIM and TEST; N = 32 augmentations in cotta.py forward_and_adapt.
AUTHORS = {"batch_size": 200, "severity": 5, "optimizer": "Adam", "lr": 1e-3, "beta": 0.9,
           "wd": 0.0, "mt": 0.999, "rst": 0.01, "ap": 0.92, "augmentations": 32}
PER_SEVERITY = 400  # two batches of 200 per corruption


def fabricated_cifar10c(root: Path, per_severity: int = PER_SEVERITY) -> Path:
    folder = root / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.arange(5 * per_severity) % 10)
    for k, name in enumerate(AUTHORS_ORDER):
        images = np.random.default_rng(k).integers(0, 256, (5 * per_severity, 8, 8, 3))
        np.save(folder / f"{name}.npy", images.astype(np.uint8))
    return root


def invoke(tmp_path: Path, *args: str):
    config = tmp_path / "empty.toml"
    config.write_text("")
    return CliRunner().invoke(main, ["run", "--config", str(config), "--preset",
                                     "cotta-cifar10c", *args])


def test_the_preset_is_listed_with_its_source_and_expected_numbers():
    listing = CliRunner().invoke(main, ["presets"])
    assert listing.exit_code == 0 and "cotta-cifar10c" in listing.output
    shown = CliRunner().invoke(main, ["presets", "cotta-cifar10c"]).output
    assert "qinenergy/cotta cifar/cifar10c.py" in shown and "cotta 16.2" in shown


def test_dry_run_refuses_nothing_and_names_what_is_missing_in_one_line(tmp_path):
    no_data = invoke(tmp_path, "--data-dir", str(tmp_path / "none"), "--dry-run")
    assert "run.stream.split_order = 'suite'" in no_data.stdout
    assert "DEVIATES" not in no_data.stdout
    assert "`ttabench fetch cifar10c`" in one_line_error(no_data)
    data = fabricated_cifar10c(tmp_path / "data")
    no_weights = invoke(tmp_path, "--data-dir", str(data), "--dry-run")
    line = one_line_error(no_weights)
    assert "no local weights for robustbench:cifar10/Standard" in line
    assert "`ttabench fetch-model robustbench:cifar10/Standard" in line
    assert "protocol fact(s)" not in no_weights.output  # no deviation refused


def test_a_deviation_of_the_stream_is_refused_naming_it(tmp_path):
    line = one_line_error(invoke(tmp_path, "--data-dir", str(tmp_path), "--dry-run",
                                 "--split-order", "seeded"))
    assert ("run.stream.split_order (preset 'suite', this run 'seeded')" in line
            and "--allow-deviation" in line)
    line = one_line_error(invoke(tmp_path, "--data-dir", str(tmp_path), "--dry-run",
                                 "--stats-window", "400"))
    assert "run.stream.stats_window (preset 0, this run 400)" in line


@pytest.mark.slow
def test_the_preset_runs_the_authors_protocol(tmp_path):
    """Every fact of the authors' protocol, read back from the cell the run writes. Two
    deviations keep it small: a 10-class tiny CNN for the WRN-28-10, and 2 augmented teacher
    passes for 32 (the 32 are checked on the adapter the preset's parameters build)."""
    registry.add_plugin("models", "ttabench_test_plugins:ten_class_model", name="ten-class")
    data = fabricated_cifar10c(tmp_path / "data", per_severity=AUTHORS["batch_size"])
    out = tmp_path / "out"
    result = invoke(tmp_path, "--data-dir", str(data), "-m", "ten-class", "--allow-deviation",
                    "--set", "adapter.cotta.n_augmentations=2", "--threads", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    (cell,) = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert cell["status"] == "ok", cell["error"]
    protocol = cell["protocol"]
    assert protocol["preset"]["deviations"] == [
        {"fact": "run.model", "preset": "robustbench:cifar10/Standard", "run": "ten-class"},
        {"fact": "adapter.cotta.n_augmentations", "preset": 32, "run": 2}]
    assert protocol["batch_size"] == AUTHORS["batch_size"]
    stream = protocol["stream"]
    assert stream["kind"] == "continual" and stream["split_order"] == "suite"
    assert stream["order"] == [f"{name}-{AUTHORS['severity']}" for name in AUTHORS_ORDER]
    assert stream["shuffle"] is False
    params = cell["adaptation"]["adapter_params"]
    assert params["optimizer"] == {"method": AUTHORS["optimizer"], "lr": AUTHORS["lr"],
                                   "beta": AUTHORS["beta"], "weight_decay": AUTHORS["wd"]}
    assert (params["mt"], params["rst"], params["ap"]) == (AUTHORS["mt"], AUTHORS["rst"],
                                                            AUTHORS["ap"])
    assert params["family"] == "cifar10" and params["augmented_passes"] == "every step"
    assert params["loss"] == "cross-entropy to the teacher"
    # no reset along the stream; every corruption read once, in one batch of 200
    windows = cell["windows"]
    assert windows["segment_per_step"] == list(range(15))
    assert windows["images_per_step"] == [AUTHORS["batch_size"]] * 15
    assert windows["reset_steps"] == []
    built = CoTTA(TinyCNN(num_classes=10), **presets.load("cotta-cifar10c").layer["adapter"]["cotta"])
    assert built.params()["n_augmentations"] == AUTHORS["augmentations"]
    assert built.params()["optimizer"] == params["optimizer"]


def test_the_preset_stream_reads_each_corruption_in_file_order(tmp_path):
    """load_cifar10c(..., shuffle=False): corruption k's rows (severity 5) in file order, one
    pass, one corruption after another."""
    spec = presets.load("cotta-cifar10c")
    stream = StreamSpec.from_table(spec.layer["run"]["stream"])
    assert (stream.kind, stream.split_order, stream.shuffle) == ("continual", "suite", False)
    suite = CIFAR10C(fabricated_cifar10c(tmp_path))
    order = {s.name: s for s in suite.splits()}
    splits = [order[f"{name}-5"] for name in AUTHORS_ORDER]
    built = cell_stream(stream, suite, splits, seed=3, batch_size=AUTHORS["batch_size"])
    expected = [torch.arange(k * PER_SEVERITY + b * 200, k * PER_SEVERITY + (b + 1) * 200)
                for k in range(15) for b in range(2)]
    assert [s.tolist() for s in built.steps] == [e.tolist() for e in expected]
    images, _ = built.dataset[built.steps[2][0]]  # the second corruption's first severity-5 row
    raw = np.load(tmp_path / "CIFAR-10-C" / f"{AUTHORS_ORDER[1]}.npy", mmap_mode="r")
    assert torch.equal(torch.as_tensor(images), torch.from_numpy(
        np.ascontiguousarray(raw[4 * PER_SEVERITY].transpose(2, 0, 1))))
