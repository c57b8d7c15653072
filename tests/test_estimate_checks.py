"""``ttabench estimate`` takes the input size from the model and checks everything it can
before adapting on a single image: the calibration, the adapter, the folder's size."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ttabench import registry
from ttabench.calibration import SCHEMA
from cli_checks import one_line_error
from ttabench.cli import main
from ttabench.runner import execute

pytestmark = pytest.mark.filterwarnings("ignore::ttabench.suites.images.CorruptImageWarning")



def folder_of(tmp_path: Path, n: int, size: int, seed: int = 0) -> tuple[Path, np.ndarray]:
    root = tmp_path / f"images{size}"
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    for i, image in enumerate(pixels):
        (root / f"{i:03d}.png").parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / f"{i:03d}.png")
    return root, pixels


def calibration_file(tmp_path: Path, **fitted_for) -> Path:
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({
        "schema": SCHEMA, "id": "test-map", "estimator": "enigma", "input": "weighted_flips",
        "degree": 1, "coefficients": [-0.01, 0.9], "output": "fraction", "target": "bn",
        "fitted_for": fitted_for, "provenance": "hand-written for this test"}))
    return path


def estimate(config: Path, *args: str):
    return CliRunner().invoke(main, ["estimate", "--config", str(config), "--threads", "1", *args])


@pytest.fixture()
def no_adaptation(monkeypatch):
    """Any cell run fails the test: the command must refuse before it."""
    def refuse(*_, **__):
        raise AssertionError("a cell ran before the input was checked")

    monkeypatch.setattr(execute, "run_cell", refuse)



def test_input_size_comes_from_the_models_preprocessing():
    from ttabench.runner.command import input_geometry

    assert input_geometry({"input_size": 32}, None, None) == (32, 32)
    assert input_geometry({"input_size": [224, 224], "resize": [256]}, None, None) == (224, 256)
    assert input_geometry({"input_size": [224, 224], "crop_pct": 0.95}, None, None) == (224, 235)
    assert input_geometry({}, None, None) == (224, 256)
    assert input_geometry({"input_size": 32}, 28, 30) == (28, 30)


def test_cifar10_resnet18_on_32px_images_works_by_default(tmp_path, config):
    root, pixels = folder_of(tmp_path, 20, 32)
    result = estimate(config, "-e", "ac", "-m", "cifar10-resnet18", "--data", str(root),
                      "--bootstrap", "1", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["preprocessing"] == {"image_size": 32, "resize": 32}
    model = registry.load_model("cifar10-resnet18", cache_dir=tmp_path).module.eval()
    with torch.no_grad():
        images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        confidence = float(model(images).softmax(1).max(1).values.double().mean())
    assert report["estimate"] == pytest.approx(confidence, abs=1e-6)


def test_an_input_size_the_model_cannot_take_is_one_line(tmp_path, config):
    root, _ = folder_of(tmp_path, 20, 32)
    line = one_line_error(estimate(config, "-e", "ac", "-m", "cifar10-resnet18", "--data",
                                   str(root), "--image-size", "64", "--bootstrap", "1"))
    assert "failed on images of shape (3, 64, 64)" in line and "input size" in line


def test_score_estimator_without_calibration_is_refused_before_adapting(tmp_path, config,
                                                                        no_adaptation):
    root, _ = folder_of(tmp_path, 80, 16)
    line = one_line_error(estimate(config, "-e", "enigma", "-m", "tiny-cnn", "--data", str(root),
                                   "--set", "estimator.enigma.probe_size=64",
                                   "--set", "estimator.enigma.checkpoints=[0, 5]"))
    assert "no calibration" in line and "--calibration" in line


def test_calibration_for_another_model_is_refused_before_adapting(tmp_path, config, no_adaptation):
    root, _ = folder_of(tmp_path, 80, 16)
    cal = calibration_file(tmp_path, steps=5, probe_size=64, num_classes=10)
    line = one_line_error(estimate(config, "-e", "enigma", "-m", "tiny-cnn", "--data", str(root),
                                   "--set", "estimator.enigma.probe_size=64",
                                   "--set", "estimator.enigma.checkpoints=[0, 5]",
                                   "--calibration", str(cal)))
    assert "fitted for num_classes=10" in line and "num_classes=4" in line


def test_folder_smaller_than_the_probe_names_the_option_to_pass(tmp_path, config, no_adaptation):
    root, _ = folder_of(tmp_path, 20, 16)
    cal = calibration_file(tmp_path, num_classes=4)
    line = one_line_error(estimate(config, "-e", "enigma", "-m", "tiny-cnn", "--data", str(root),
                                   "--calibration", str(cal), "--batch-size", "8"))
    assert "20 images, fewer than the probe size 1000 of enigma" in line
    assert "--set estimator.enigma.probe_size=20" in line
    assert "--set estimator.enigma.small_probe=rescale" in line
    line = one_line_error(estimate(config, "-e", "enigma", "-m", "tiny-cnn", "--data", str(root),
                                   "--calibration", str(cal), "--set",
                                   "estimator.enigma.probe_size=16"))
    assert "fewer than one stream batch of 64; pass --batch-size 20 or less" in line


def test_eata_on_a_bare_folder_is_refused_before_adapting(tmp_path, config, no_adaptation):
    root, _ = folder_of(tmp_path, 80, 16)
    cal = calibration_file(tmp_path, num_classes=4)
    line = one_line_error(estimate(config, "-e", "enigma", "-a", "eata", "-m", "tiny-cnn",
                                   "--data", str(root), "--calibration", str(cal)))
    assert "adapter eata needs labelled clean source data" in line
