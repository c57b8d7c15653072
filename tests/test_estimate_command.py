"""``ttabench estimate``: a label-free accuracy estimate on a folder of unlabelled images.

The folder holds 300 tiny-suite images saved as PNG in nested subfolders plus one corrupt
file; the estimator is Weighted Flips with a small probe and a hand-written calibration. The
reported estimate must be the calibration applied to the score, and the scores must be those
of the same trajectories driven over the in-memory images.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch.utils.data import TensorDataset

from cli_checks import one_line_error
from ttabench import registry
from ttabench.calibration import SCHEMA
from ttabench.cli import main
from ttabench.models.tiny import load_tiny_cnn
from ttabench.runner.command import FolderSuite
from ttabench.runner.execute import CellInputs, run_cell
from ttabench.suites.tiny import make_images

pytestmark = pytest.mark.filterwarnings("ignore::ttabench.suites.images.CorruptImageWarning")

N_IMAGES = 300
COEFFICIENTS = [-0.001, -0.01, 0.9]  # accuracy = 0.9 - 0.01 s - 0.001 s^2 (fraction)
SMALL = ["--set", "estimator.enigma.probe_size=64", "--set", "estimator.enigma.checkpoints=[0, 5]",
         "--set", "adapter.rdumb.lr=0.5", "--threads", "1"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, torch.Tensor]:
    """300 noisy tiny images as PNGs below nested subfolders, one corrupt file, and the images
    in the order the folder lists them (sorted relative paths)."""
    root = tmp_path_factory.mktemp("unlabelled")
    images, _ = make_images(N_IMAGES, seed=7, noise=155.0)
    files = {}
    for i, image in enumerate(images):
        relative = f"part{i % 3}/" + ("deep/" if i % 2 else "") + f"img{i:03d}.png"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / relative)
        files[relative] = i
    (root / "part1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    order = [files[name] for name in sorted(files)]
    return root, images[order]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """An empty config: the built-in defaults, not the repository's plugins.toml."""
    path = tmp_path_factory.mktemp("config") / "none.toml"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def calibration(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calibration") / "wf-small.json"
    path.write_text(json.dumps({
        "schema": SCHEMA, "id": "wf-small-test", "estimator": "enigma",
        "input": "weighted_flips", "degree": 2, "coefficients": COEFFICIENTS,
        "output": "fraction", "target": "bn",
        "fitted_for": {"steps": 5, "probe_size": 64, "num_classes": 4},
        "provenance": "hand-written for this test"}))
    return path


@pytest.fixture(autouse=True)
def keep_thread_count():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def estimate(*args: str):
    return CliRunner().invoke(main, ["estimate", *args])



def reference_scores(images: torch.Tensor, seeds: list[int]) -> list[float]:
    """Weighted Flips (no calibration) of the same trajectories over the in-memory images."""
    dataset = TensorDataset(images, torch.full((len(images),), -1))
    suite = FolderSuite(dataset, 4, "in memory")
    estimator = registry.get("estimators", "enigma")(probe_size=64, checkpoints=[0, 5])
    scores = []
    for seed in seeds:
        out = run_cell(CellInputs(
            suite=suite, split=suite.splits()[0], model=load_tiny_cnn(),
            adapter_cls=registry.get("adapters", "rdumb"), adapter_params={"lr": 0.5},
            estimators={"enigma": estimator}, seed=seed, batch_size=64, steps=0,
            device=torch.device("cpu"), labelled=False))
        scores.append(out.results["enigma"].value)
    return scores


def test_json_estimate_is_the_calibrated_score_of_the_trajectory(folder, config, calibration):
    root, images = folder
    result = estimate("--estimator", "enigma", "--model", "tiny-cnn", "--data", str(root),
                      "--image-size", "16", "--resize", "16", *SMALL, "--config", str(config),
                      "--calibration", str(calibration), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_images"] == N_IMAGES and report["skipped_files"] == 1
    assert report["adapter"] == "rdumb" and report["seeds"] == [0, 1, 2, 3, 4]
    # the scores are those of the same trajectories over the images held in memory
    scores = reference_scores(images, report["seeds"])
    assert report["score"] == scores[0]
    assert min(scores) > 0 and len(set(scores)) > 1  # the probe flips, differently per seed
    # each estimate is the calibration polynomial of its score, as a fraction in [0, 1]
    by_hand = [min(1.0, max(0.0, sum(c * s ** (2 - i) for i, c in enumerate(COEFFICIENTS))))
               for s in scores]
    assert report["estimates"] == pytest.approx(by_hand, abs=1e-12)
    assert report["estimate"] == report["estimates"][0]
    # with 5 seeds the 95% interval is their range: it holds every estimate, the reported one too
    low, high = report["interval"]
    assert low == min(report["estimates"]) and high == max(report["estimates"])
    assert low < high


def test_text_output_reports_estimate_interval_and_skipped_file(folder, config, calibration):
    root, _ = folder
    common = ["--estimator", "enigma", "--model", "tiny-cnn", "--data", str(root),
              "--image-size", "16", "--resize", "16", *SMALL, "--config", str(config),
              "--calibration", str(calibration), "--bootstrap", "3"]
    text = estimate(*common)
    as_json = estimate(*common, "--json")
    assert text.exit_code == 0 and as_json.exit_code == 0, text.output + as_json.output
    report = json.loads(as_json.stdout)
    match = re.fullmatch(r"enigma: estimated bn accuracy ([\d.]+)% \(95% interval over 3 stream "
                         r"seeds: ([\d.]+)-([\d.]+)%\) on 300 images of (.+) \(1 unreadable "
                         r"file\(s\) skipped\)", text.stdout.strip())
    assert match, text.stdout
    shown = [float(match.group(i)) for i in (1, 2, 3)]
    expected = [report["estimate"], *report["interval"]]
    assert shown == pytest.approx([100 * v for v in expected], abs=0.005)
    assert match.group(4) == str(root)


def test_score_estimator_without_calibration_is_one_line_error(folder, config):
    root, _ = folder
    line = one_line_error(estimate("--estimator", "enigma", "--model", "tiny-cnn", "--data",
                                   str(root), "--image-size", "16", "--resize", "16", *SMALL,
                                   "--config", str(config), "--json"))
    assert "no calibration" in line and "--calibration" in line


def test_calibration_fitted_for_other_steps_is_refused(folder, config, calibration):
    root, _ = folder
    line = one_line_error(estimate("--estimator", "enigma", "--model", "tiny-cnn", "--data",
                                   str(root), "--image-size", "16", "--resize", "16", *SMALL,
                                   "--set", "estimator.enigma.checkpoints=[0, 6]",
                                   "--config", str(config), "--calibration", str(calibration)))
    assert "fitted for steps=5" in line


def test_missing_and_empty_folders_are_one_line_errors(tmp_path, config):
    args = ["--estimator", "ac", "--model", "tiny-cnn", "--config", str(config), "--json"]
    line = one_line_error(estimate(*args, "--data", str(tmp_path / "nowhere")))
    assert "does not exist" in line and "nowhere" in line
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("no images here")
    line = one_line_error(estimate(*args, "--data", str(empty)))
    assert "no image files" in line and str(empty) in line


def test_estimator_needing_source_validation_data_is_refused(folder, config):
    root, _ = folder
    line = one_line_error(estimate("--estimator", "doc", "--model", "tiny-cnn", "--data", str(root),
                                   "--image-size", "16", "--resize", "16", "--config", str(config)))
    assert "doc needs labelled source-validation data" in line


def test_direct_estimator_needs_no_calibration(folder, config):
    """``ac`` (average max-softmax confidence) is already an accuracy: recomputed by hand."""
    root, images = folder
    result = estimate("--estimator", "ac", "--model", "tiny-cnn", "--data", str(root),
                      "--image-size", "16", "--resize", "16", "--config", str(config),
                      "--threads", "1", "--bootstrap", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = load_tiny_cnn().module.eval()
    with torch.no_grad():
        logits = model(images.float() / 255)
    confidence = float(logits.softmax(1).max(1).values.double().mean())
    assert report["adapter"] == "source"
    assert report["estimate"] == pytest.approx(confidence, abs=1e-6)
    assert report["interval"] == [report["estimate"]] * 2  # no adaptation: no seed dependence
    assert np.isclose(report["score"], report["estimate"])
