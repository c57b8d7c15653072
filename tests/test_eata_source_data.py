"""EATA gets its Fisher data from the suite's labelled source-validation split, drawn as
EATA's authors draw it (a seeded subset of 2000 clean images, shuffled, in batches of the test
batch size), and is refused before any work where the suite has none; ETA stays Fisher-free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ttabench import registry
from cli_checks import no_cells, one_line_error
from ttabench.cli import main
from ttabench.records import read_cell
from ttabench.suites.tiny import TinySuite
from ttabench_enigma import EATA, ETA, RDumb

TINY = ["-s", "tiny", "-m", "tiny-cnn", "--set", "suite.tiny.n_examples=64", "--n-boot", "10"]


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    yield



def run(config: Path, out: Path, *args: str):
    return CliRunner().invoke(main, ["run", *args, "--config", str(config), "-o", str(out)])


def test_only_eata_asks_for_source_data():
    assert EATA.source_data_param == "fisher_data" and EATA.source_data_samples == 2000
    assert ETA.source_data_param is None and RDumb.source_data_param is None


def test_source_batches_are_a_seeded_subset_in_stream_sized_batches():
    from ttabench.runner.stream import source_batches

    dataset = TinySuite().source_val()  # 128 labelled images
    images, labels = dataset.tensors

    batches, facts = source_batches(dataset, 100, batch_size=33, seed=5)
    batches = list(batches)
    order = torch.randperm(128, generator=torch.Generator().manual_seed(5))[:100]
    # 100 = 33 + 33 + 33 + 1: the single last image joins the batch before it
    assert [len(x) for x, _ in batches] == [33, 33, 34]
    assert torch.equal(torch.cat([x for x, _ in batches]), images[order])
    assert torch.equal(torch.cat([y for _, y in batches]), labels[order])
    assert facts["samples"] == 100 and facts["batches"] == 3 and facts["seed"] == 5
    everything, facts = source_batches(dataset, EATA.source_data_samples, batch_size=64, seed=0)
    assert facts["samples"] == 128 and sum(len(x) for x, _ in everything) == 128


def test_eata_gets_its_fisher_data_from_the_source_validation_split(tmp_path, config):
    out = tmp_path / "out"
    result = run(config, out, *TINY, "-e", "recording-trajectory", "-a", "eata",
                 "--set", "estimator.recording-trajectory.probe_size=32",
                 "--set", "estimator.recording-trajectory.checkpoints=[0, 2]",
                 "--splits", "noise-1", "--batch-size", "16")
    assert result.exit_code == 0, result.output
    (cell,) = [read_cell(p) for p in (out / "cells").glob("*.json")]
    params = cell.adaptation["adapter_params"]
    assert params["fisher"] is True and params["fisher_batches"] == 8  # 128 images / 16
    source = cell.adaptation["source_data"]
    assert source["samples"] == 128 and source["batch_size"] == 16 and source["seed"] == 0
    assert cell.protocol["adapter"]["source_data"]["samples"] == 128


def test_eata_without_a_source_validation_split_is_refused(tmp_path, config):
    registry.add_plugin("suites", "ttabench_test_plugins:NoSourceValTiny")
    out = tmp_path / "out"
    line = one_line_error(run(config, out, "-s", "no-source-val-tiny", "-m", "tiny-cnn",
                              "-e", "ac", "-a", "eata"))
    assert "adapter eata needs labelled clean source data" in line and no_cells(out)
    assert "no-source-val-tiny has none" in line


