"""``ttabench estimate``: a label-free accuracy estimate on a folder of unlabelled images.

The folder holds 300 tiny-suite images saved as PNG in nested subfolders plus one corrupt
file; the estimator is Weighted Flips with a small probe and a hand-written calibration. The
reported estimate must be the calibration applied to the score, and the scores must be those
of the same trajectories driven over the in-memory images; the interval that of the same
trajectories over resamples of the images (a trajectory estimator), or a slow direct bootstrap
of the confidences (a static one).
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



def reference_scores(images: torch.Tensor, seeds: list[int],
                     rows: list[np.ndarray] | None = None) -> list[float]:
    """Weighted Flips (no calibration) of the same trajectories over the in-memory images, or
    over ``rows[i]`` of them for seed ``seeds[i]``."""
    estimator = registry.get("estimators", "enigma")(probe_size=64, checkpoints=[0, 5])
    scores = []
    for i, seed in enumerate(seeds):
        picked = images if rows is None else images[torch.as_tensor(rows[i])]
        suite = FolderSuite(TensorDataset(picked, torch.full((len(picked),), -1)), 4, "memory")
        out = run_cell(CellInputs(
            suite=suite, split=suite.splits()[0], model=load_tiny_cnn(),
            adapter_cls=registry.get("adapters", "rdumb"), adapter_params={"lr": 0.5},
            estimators={"enigma": estimator}, seed=seed, batch_size=64, steps=0,
            device=torch.device("cpu"), labelled=False))
        scores.append(out.results["enigma"].value)
    return scores


def polynomial(score: float) -> float:
    return min(1.0, max(0.0, sum(c * score ** (2 - i) for i, c in enumerate(COEFFICIENTS))))


def test_json_estimate_is_the_calibrated_score_of_the_trajectory(folder, config, calibration):
    root, images = folder
    result = estimate("--estimator", "enigma", "--model", "tiny-cnn", "--data", str(root),
                      "--image-size", "16", "--resize", "16", *SMALL, "--config", str(config),
                      "--calibration", str(calibration), "--bootstrap", "4", "--boot-seed", "3",
                      "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n_images"] == N_IMAGES and report["skipped_files"] == 1
    assert report["adapter"] == "rdumb" and report["seed"] == 0
    # the score is that of the same trajectory over the images held in memory
    score = reference_scores(images, [0])[0]
    assert report["score"] == score and score > 0
    assert report["estimate"] == pytest.approx(polynomial(score), abs=1e-12)
    # resample b: row b of default_rng(3).integers(0, n, (4, n)), adapted with stream seed 1 + b
    rows = list(np.random.default_rng(3).integers(0, N_IMAGES, (4, N_IMAGES)))
    replicates = [polynomial(s) for s in reference_scores(images, [1, 2, 3, 4], rows)]
    assert report["replicates"] == pytest.approx(replicates, abs=1e-12)
    assert len(set(replicates)) > 1
    mean = sum(replicates) / 4
    sd = (sum((r - mean) ** 2 for r in replicates) / 3) ** 0.5
    half = 1.959963984540054 * sd
    assert report["interval"] == pytest.approx([max(0.0, report["estimate"] - half),
                                                min(1.0, report["estimate"] + half)], abs=1e-12)
    assert report["calibration_error_q95"] is None and "unknown" in report["covers"]


def test_text_output_reports_estimate_interval_and_skipped_file(folder, config, calibration):
    root, _ = folder
    common = ["--estimator", "enigma", "--model", "tiny-cnn", "--data", str(root),
              "--image-size", "16", "--resize", "16", *SMALL, "--config", str(config),
              "--calibration", str(calibration), "--bootstrap", "2"]
    text = estimate(*common)
    as_json = estimate(*common, "--json")
    assert text.exit_code == 0 and as_json.exit_code == 0, text.output + as_json.output
    report = json.loads(as_json.stdout)
    first, second = text.stdout.strip().splitlines()[-2:]
    match = re.fullmatch(r"enigma: estimated bn accuracy ([\d.]+)% \(95% interval "
                         r"([\d.]+)-([\d.]+)%\) on 300 images of (.+) \(1 unreadable "
                         r"file\(s\) skipped\)", first)
    assert match, text.stdout
    shown = [float(match.group(i)) for i in (1, 2, 3)]
    expected = [report["estimate"], *report["interval"]]
    assert shown == pytest.approx([100 * v for v in expected], abs=0.005)
    assert match.group(4) == str(root)
    assert second.startswith("  interval: normal bootstrap over the 300 images (2 resamples")


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
    """``ac`` (average max-softmax confidence) is already an accuracy: recomputed by hand; its
    interval against a slow direct bootstrap of the per-image confidences."""
    root, images = folder
    result = estimate("--estimator", "ac", "--model", "tiny-cnn", "--data", str(root),
                      "--image-size", "16", "--resize", "16", "--config", str(config),
                      "--threads", "1", "--n-boot", "200", "--boot-seed", "5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    model = load_tiny_cnn().module.eval()
    with torch.no_grad():
        logits = model(images.float() / 255)
    confidence = logits.softmax(1).max(1).values.double().numpy()
    assert report["adapter"] == "source"
    assert report["estimate"] == pytest.approx(confidence.mean(), abs=1e-6)
    assert np.isclose(report["score"], report["estimate"])
    # the slow direct bootstrap: resample b is row b of default_rng(5).integers(0, n, (200, n))
    draws = np.random.default_rng(5).integers(0, N_IMAGES, (200, N_IMAGES))
    means = sorted(sum(confidence[i] for i in row) / N_IMAGES for row in draws)

    def percentile(q: float) -> float:  # linear interpolation between order statistics
        at = q / 100 * (len(means) - 1)
        below = int(at)
        return means[below] + (at - below) * (means[below + 1] - means[below])

    assert report["interval"] == pytest.approx([percentile(2.5), percentile(97.5)], abs=1e-6)
    assert report["interval"][0] < report["estimate"] < report["interval"][1]
    assert report["calibration_error_q95"] is None


def test_one_stream_seed_and_all_needs_a_model_calibration(folder, config):
    root, _ = folder
    args = ["--estimator", "ac", "--model", "tiny-cnn", "--data", str(root), "--config",
            str(config)]
    line = one_line_error(estimate(*args, "--seed", "0", "--seed", "1"))
    assert "one --seed" in line
    line = one_line_error(estimate(*args, "--all"))
    assert "--all needs --calibration FILE made by `ttabench calibrate`" in line
