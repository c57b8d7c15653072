"""Drift analysis along a trajectory, the exclusion experiment and ``ttabench analyze``, on tiny."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.models.tiny import load_tiny_cnn
from ttabench.suites.tiny import TinySuite
from ttabench_enigma.adapters import RDumb, Tent
from ttabench_enigma.analysis.cli import analyze
from ttabench_enigma.analysis.metrics import silhouette
from ttabench_enigma.analysis.trajectory import (
    COLUMNS,
    analyze_trajectory,
    exclusion_experiment,
    probe_indices,
    reference_class_means,
    stack_dataset,
)

PROBE, STEPS, EVERY = 150, 6, 2


@pytest.fixture(scope="module")
def setup():
    loaded = load_tiny_cnn()
    suite = TinySuite()
    images, labels = stack_dataset(suite.dataset(suite.splits()[-1]))  # noise-3
    clean_images, clean_labels = stack_dataset(suite.source_val())
    reference = reference_class_means(loaded, clean_images, clean_labels)
    probe = probe_indices(len(images), PROBE, seed=0)
    return loaded, images, labels, images[probe], labels[probe], reference


def batch_stat_forward(module: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain logits and embeddings of a copy of the tiny CNN, BatchNorm on batch statistics,
    in chunks of 100."""
    net = copy.deepcopy(module).train()  # train-mode BN normalizes with the batch statistics
    logits, features = [], []
    with torch.no_grad():
        for start in range(0, len(images), 100):
            x = images[start : start + 100].float() / 255.0
            z = net.net.features((x - net.mean) / net.std)
            features.append(z)
            logits.append(net.net.fc(z))
    return torch.cat(logits), torch.cat(features)


def test_trajectory_columns_step_zero_and_last_step(setup):
    loaded, images, _, probe_images, probe_labels, reference = setup
    source = copy.deepcopy(loaded.module)
    logits0, features0 = batch_stat_forward(source, probe_images)
    adapter = Tent(copy.deepcopy(loaded.module), lr=0.05)
    embeddings: dict[int, np.ndarray] = {}
    frame = analyze_trajectory(
        loaded, adapter, images, probe_images, probe_labels, reference, STEPS, EVERY,
        progress=False, embeddings_out=embeddings,
    )
    assert list(frame.columns) == list(COLUMNS)
    assert frame["step"].tolist() == [0, 2, 4, 6]
    assert sorted(embeddings) == [0, 2, 4, 6]
    start = frame.iloc[0]
    assert start["flips_weighted"] == 0 and start["flips_unweighted"] == 0
    pred0 = logits0.argmax(dim=1)
    assert start["accuracy"] == pytest.approx(float((pred0 == probe_labels).double().mean()))
    np.testing.assert_allclose(embeddings[0], features0.numpy(), rtol=1e-5, atol=1e-5)
    assert start["silhouette"] == pytest.approx(silhouette(features0.numpy(), 4, seed=0), abs=1e-4)
    # the last row describes the adapter's final weights
    final = adapter.predict(probe_images[:100].float() / 255.0).argmax(dim=1)
    final = torch.cat([final, adapter.predict(probe_images[100:].float() / 255.0).argmax(dim=1)])
    end = frame.iloc[-1]
    assert end["accuracy"] == pytest.approx(float((final == probe_labels).double().mean()))
    assert end["flips_unweighted"] == int((final != pred0).sum())
    assert end["flips_unweighted"] > 0  # lr 0.05 moves the tiny model within six steps
    assert frame[["silhouette", "shift_distance", "prototype_distance"]].notna().all().all()


def test_trajectory_without_reference_means_has_nan_shift(setup):
    loaded, images, _, probe_images, probe_labels, _ = setup
    adapter = RDumb(copy.deepcopy(loaded.module), num_classes=4, reset_every=STEPS + 1)
    frame = analyze_trajectory(
        loaded, adapter, images, probe_images, probe_labels, None, 2, 1, progress=False
    )
    assert frame["shift_distance"].isna().all()
    assert frame["silhouette"].notna().all()


def test_exclusion_experiment_counts_and_baseline(setup):
    loaded, images, labels, _, _, _ = setup
    result = exclusion_experiment(
        loaded, lambda m: Tent(m, lr=0.01), images, labels, steps=3, top_k=1, seed=0,
        progress=False,
    )
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    half = order[: len(images) // 2]
    with torch.no_grad():
        source = copy.deepcopy(loaded.module).eval()
        correct = source(images[half].float() / 255.0).argmax(dim=1) == labels[half]
    assert result["removed"] == int(correct.sum())
    assert result["kept"] + result["removed"] == result["adapt_images"] == len(half)
    held = order[len(images) // 2 :]
    logits, _ = batch_stat_forward(loaded.module, images[held])
    before = float((logits.argmax(dim=1) == labels[held]).double().mean())
    assert result["accuracy_before"] == pytest.approx(before)
    assert result["gain_filtered"] == pytest.approx(
        result["accuracy_after_filtered"] - result["accuracy_before"]
    )
    with pytest.raises(TTABenchError):
        exclusion_experiment(loaded, lambda m: Tent(m), images, labels, steps=1, top_k=4)


def test_cli_writes_csv_and_pngs(tmp_path):
    out = tmp_path / "single"
    args = [
        "--model", "tiny-cnn", "--suite", "tiny", "--split", "noise-3", "--adapter", "tent",
        "--steps", "4", "--every", "2", "--probe-size", "120", "--output", str(out),
        "--lr", "0.05", "--quiet", "--exclude-correct", "1",
    ]
    result = CliRunner().invoke(analyze, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "analysis.csv")
    assert frame["step"].tolist() == [0, 2, 4]
    assert list(frame.columns) == list(COLUMNS)
    for name in ("curves.png", "embeddings.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["phases"]["accuracy_start"] == pytest.approx(frame["accuracy"].iloc[0])
    assert json.loads((out / "exclusion.json").read_text())["top_k"] == 1
    assert "peak accuracy at step" in result.output


def test_cli_sweep_over_a_glob(tmp_path, setup, monkeypatch):
    loaded = setup[0]

    def cached(spec, cache_dir, num_classes=None):  # the trained tiny-cnn, not retrained
        assert spec == "tiny-cnn"
        return copy.deepcopy(loaded)

    monkeypatch.setattr(registry, "load_model", cached)
    out = tmp_path / "sweep"
    args = [
        "--model", "tiny-cnn", "--suite", "tiny", "--split", "noise-*", "--sweep",
        "--adapter", "rdumb", "--steps", "2", "--every", "1", "--probe-size", "100",
        "--output", str(out), "--quiet",
    ]
    result = CliRunner().invoke(analyze, args)
    assert result.exit_code == 0, result.output
    sweep = pd.read_csv(out / "sweep.csv")
    assert sweep["split"].tolist() == ["noise-1", "noise-2", "noise-3"]
    for split in sweep["split"]:
        frame = pd.read_csv(out / split / "analysis.csv")
        row = sweep.set_index("split").loc[split]
        assert row["d_accuracy_1"] == pytest.approx(frame["accuracy"].max() - frame["accuracy"].iloc[0])
    report = json.loads((out / "sweep.json").read_text())
    assert report["correlations"]["phase1"]["n"] == 3
    assert (out / "sweep.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "nope"], "unknown split 'nope'"),
        (["--split", "zzz*", "--sweep"], "no split of suite 'tiny' matches 'zzz*'"),
        (["--split", "noise-1", "--reset"], "--reset applies to rdumb only"),
    ],
)
def test_cli_bad_input_is_a_one_line_error(tmp_path, extra, message):
    args = ["--model", "tiny-cnn", "--suite", "tiny", "--adapter", "tent", "--steps", "1",
            "--output", str(tmp_path), *extra]
    result = CliRunner().invoke(analyze, args)
    assert isinstance(result.exception, TTABenchError)
    assert "\n" not in str(result.exception)
    assert message in str(result.exception)
