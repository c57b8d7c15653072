"""The runner: cells, the seeded stream, checkpoints, targets, resume, shards, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import ttabench_test_plugins as plugins
from ttabench import registry
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.models.tiny import load_tiny_cnn
from ttabench.runner.benchmark import Benchmark, RunSpec, collect_cells, pending_cells
from ttabench.records import read_cell
from ttabench.runner.cells import in_shard, parse_shard, protocol_key
from ttabench.runner.executor import LocalBackend, run_cells
from ttabench.runner.passes import batch_statistics_copy
from ttabench.runner.stream import first_epoch, stream_indices
from ttabench.suites.tiny import TinySuite

SUPPORT = str(Path(__file__).parents[1] / "host" / "tests" / "support")


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingStatic")
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    registry.add_plugin("suites", "ttabench_test_plugins:FailingTiny")
    registry.add_plugin("models", "ttabench_test_plugins:nan_model", name="nan-model")
    registry.add_plugin("models", "ttabench_test_plugins:ten_class_model", name="ten-class")
    for values in plugins.RECORD.values():
        values.clear()
    yield


def spec(**kw) -> RunSpec:
    base = dict(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                estimators=["recording-static", "recording-trajectory"],
                suite_options={"n_examples": 192}, device="cpu")
    base.update(kw)
    return RunSpec(**base)


# ----------------------------------------------------------------------------- the stream


def test_stream_replays_epochs_with_drop_last():
    batches = list(stream_indices(n=100, seed=3, batch_size=32, steps=7))
    assert len(batches) == 7 and all(len(b) == 32 for b in batches)
    g = torch.Generator().manual_seed(3)
    epochs = [torch.randperm(100, generator=g) for _ in range(3)]
    expected = [e[i * 32:(i + 1) * 32] for e in epochs for i in range(3)][:7]  # 3 batches/epoch
    for got, want in zip(batches, expected):
        assert torch.equal(got, want)
    assert torch.equal(first_epoch(100, 3), epochs[0])


def test_stream_smaller_than_a_batch_is_refused():
    with pytest.raises(TTABenchError, match="fewer than one batch"):
        list(stream_indices(n=10, seed=0, batch_size=64, steps=1))


# ----------------------------------------------------------------------------- one cell


def test_one_source_pass_feeds_every_static_estimator_and_snapshots_are_taken():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingStatic", name="second-static")
    bench = Benchmark(spec(estimators=["recording-static", "second-static", "recording-trajectory"]))
    plans = bench.plan()
    cells = [bench.execute(p) for p in plans]
    assert bench.counters["source_pass"] == len(plans)
    assert bench.counters["bn_pass"] == len(plans)
    # per cell and view, both static estimators saw the very same Outputs object, labels
    # withheld: (source, bn) of each, then adapted of each
    seen = plugins.RECORD["static"]
    assert len(seen) == 6 * len(plans)
    for i in range(len(plans)):
        part = seen[6 * i: 6 * i + 6]
        assert part[0] is part[2] and part[1] is part[3] and part[4] is part[5]
        assert len({id(part[0]), id(part[1]), id(part[4])}) == 3
        assert all(o.labels is None for o in part)
    # checkpoints (0, 5): adaptation stops at 5, snapshots at 0 and 5 only
    assert plugins.RECORD["snapshots"] == [0, 5] * len(plans)
    assert plugins.RECORD["steps"] == [1, 2, 3, 4, 5] * len(plans)
    for cell in cells:
        assert cell.status == "ok" and cell.adaptation["steps"] == 5
        assert set(cell.targets) == {"source", "bn", "adapted"}


def test_targets_match_direct_computation():
    bench = Benchmark(spec(splits=["noise-2"]))
    cell = bench.execute(bench.plan()[0])
    suite = TinySuite(n_examples=192)
    data = suite.dataset([s for s in suite.splits() if s.name == "noise-2"][0])
    images, labels = data.tensors
    model = load_tiny_cnn().module.eval()
    with torch.no_grad():
        source = (model(images.float() / 255).argmax(1) == labels).float().mean().item()
        bn_model = batch_statistics_copy(model)
        order = first_epoch(len(labels), 0)
        correct = sum(int((bn_model(images[idx].float() / 255).argmax(1) == labels[idx]).sum())
                      for idx in torch.split(order, 64))
    assert cell.targets["source"] == pytest.approx(source)
    assert cell.targets["bn"] == pytest.approx(correct / len(labels))
    assert cell.targets["bn"] != cell.targets["source"]


def test_end_snapshot_is_taken_when_batches_per_epoch_divide_the_stop_step():
    # 192 images / 64 = 3 batches per epoch; stop step 6 is a multiple: the reference's loop
    # would miss the end snapshot here.
    bench = Benchmark(spec(estimator_params={"recording-trajectory": {"checkpoints": (0, 6)}}))
    cell = bench.execute(bench.plan()[0])
    assert plugins.RECORD["snapshots"] == [0, 6]
    assert cell.estimators["recording-trajectory"].result.extras["steps_run"] == 6


def test_same_seed_same_numbers_and_another_seed_differs():
    def numbers(seed):
        bench = Benchmark(spec(seeds=[seed], splits=["noise-3"],
                               estimator_params={"recording-trajectory": {"checkpoints": (0, 12)}}))
        cell = bench.execute(bench.plan()[0])
        return cell.targets, {k: (v.result or v.views) for k, v in cell.estimators.items()}

    assert numbers(0) == numbers(0)
    assert numbers(0) != numbers(1)


def test_probe_larger_than_split_is_refused_unless_rescaling_is_allowed():
    params = {"recording-trajectory": {"probe_size": 500}}
    bench = Benchmark(spec(estimator_params=params, splits=["clean"]))
    with pytest.raises(TTABenchError, match="fewer than the probe size 500"):
        bench.execute(bench.plan()[0])
    params = {"recording-trajectory": {"probe_size": 500, "small_probe": "rescale"}}
    bench = Benchmark(spec(estimator_params=params, splits=["clean"]))
    cell = bench.execute(bench.plan()[0])
    assert cell.estimators["recording-trajectory"].result.extras["probe_size"] == 192


def test_class_count_mismatch_is_refused_before_any_work():
    with pytest.raises(TTABenchError, match="10 classes but suite tiny has 4"):
        Benchmark(spec(model="ten-class"))


def test_shards_partition_the_cells():
    assert parse_shard("2/3") == (2, 3)
    with pytest.raises(TTABenchError):
        parse_shard("4/3")
    keys = [protocol_key({"i": i}) for i in range(50)]
    parts = [{k for k in keys if in_shard(k, (i, 3))} for i in (1, 2, 3)]
    assert set().union(*parts) == set(keys)
    assert sum(len(p) for p in parts) == len(keys)


# ----------------------------------------------------------------------------- runs


def test_failed_cell_is_recorded_and_others_go_on(tmp_path):
    bench = Benchmark(spec(suite="failing-tiny", suite_options={"fail_split": "noise-1", "n_examples": 192}))
    plans = bench.plan()
    counts = run_cells(bench, plans, tmp_path, LocalBackend(), retries=1, progress=False)
    assert counts == {"ok": len(plans) - 1, "failed": 1}
    cells = collect_cells(tmp_path, plans)
    failed = [c for c in cells if c.status == "failed"]
    assert failed[0].split["name"] == "noise-1" and failed[0].attempts == 2
    assert "injected failure" in failed[0].error
    # a rerun retries only the failed cell
    assert [p.split.name for p in pending_cells(plans, tmp_path, None)] == ["noise-1"]


def test_cli_run_writes_cells_and_leaderboard_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["run", "--suite", "tiny", "--model", "tiny-cnn", "-a", "noisy", "-e",
            "recording-static,recording-trajectory", "--set", "suite.tiny.n_examples=192",
            "--output", str(out), "--n-boot", "50", "--config", str(tmp_path / "none.toml")]
    (tmp_path / "none.toml").write_text("")
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 6
    assert (out / "leaderboard.csv").exists() and (out / "run.json").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in cells}
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "0 to run" in second.output
    assert {p: p.stat().st_mtime_ns for p in cells} == mtimes


def test_cli_nan_model_gives_one_line_error_and_keeps_results(tmp_path):
    (tmp_path / "none.toml").write_text("")
    result = CliRunner().invoke(main, ["run", "--suite", "tiny", "--model", "nan-model", "-e",
                                       "recording-static", "--output", str(tmp_path / "r"),
                                       "--config", str(tmp_path / "none.toml")])
    assert result.exit_code != 0
    assert "NaN or infinite logits" in result.output
    cells = [read_cell(p) for p in (tmp_path / "r" / "cells").glob("*.json")]
    assert len(cells) == 6 and all(c.status == "failed" for c in cells)


@pytest.mark.slow
def test_killed_run_restarts_and_finishes_every_cell_exactly_once(tmp_path):
    out = tmp_path / "run"
    (tmp_path / "none.toml").write_text("")
    env = {**os.environ, "PYTHONPATH": SUPPORT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "ttabench", "--plugin", "adapters=ttabench_test_plugins:NoisyAdapter",
           "--plugin", "estimators=ttabench_test_plugins:RecordingTrajectory",
           "run", "--suite", "tiny", "--model", "tiny-cnn", "-a", "noisy",
           "-e", "recording-trajectory", "--set", "estimator.recording-trajectory.checkpoints=[0, 40]",
           "--set", "suite.tiny.n_examples=192", "--output", str(out), "--n-boot", "20",
           "--config", str(tmp_path / "none.toml")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert 2 <= len(done_before) < 6
    for content in done_before.values():
        assert json.loads(content)["status"] == "ok"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{6 - len(done_before)} to run" in rerun.stdout
    after = {p.name: p.read_bytes() for p in (out / "cells").glob("*.json")}
    assert len(after) == 6
    assert all(after[name] == content for name, content in done_before.items())


def test_fitted_calibration_is_accepted_by_the_estimator_it_was_fitted_for(tmp_path):
    from ttabench.calibration import Calibration
    from ttabench_enigma import WeightedFlips

    params = {"enigma": {"probe_size": 64, "checkpoints": [0, 5]}}
    bench = Benchmark(spec(estimators=["enigma"], adapters=["rdumb"], estimator_params=params,
                           adapter_params={"rdumb": {"lr": 0.5}}))
    plans = bench.plan()
    run_cells(bench, plans, tmp_path / "run", LocalBackend(), progress=False)
    out = tmp_path / "f.json"
    result = CliRunner().invoke(main, ["fit", str(tmp_path / "run"), "--estimator", "enigma",
                                       "--degree", "1", "--splits", "all", "--output", str(out)])
    assert result.exit_code == 0, result.output
    cal = Calibration.load(out)
    assert cal.input == "weighted_flips"
    assert cal.fitted_for["model"] == "tiny-cnn:0" and cal.fitted_for["steps"] == 5
    assert cal.fitted_for["probe_size"] == 64 and cal.fitted_for["precision"] == "fp32"
    # accepted for the same protocol, refused for another step count
    WeightedFlips(probe_size=64, checkpoints=(0, 5), calibration=str(out))
    with pytest.raises(TTABenchError, match="steps"):
        WeightedFlips(probe_size=64, checkpoints=(0, 6), calibration=str(out))


def test_bn_target_counts_every_image_once_when_one_is_left_over():
    """129 images in batches of 64: the last single image joins the batch before it; every
    image counts exactly once (an in-place merge that lost a batch would still run)."""
    bench = Benchmark(spec(splits=["noise-2"], suite_options={"n_examples": 129},
                           estimators=["recording-static"]))
    cell = bench.execute(bench.plan()[0])
    suite = TinySuite(n_examples=129)
    images, labels = suite.dataset([s for s in suite.splits() if s.name == "noise-2"][0]).tensors
    bn_model = batch_statistics_copy(load_tiny_cnn().module.eval())
    order = first_epoch(129, 0)
    batches = [order[:64], order[64:]]  # 64 and 65 images
    with torch.no_grad():
        correct = sum(int((bn_model(images[i].float() / 255).argmax(1) == labels[i]).sum())
                      for i in batches)
    assert cell.targets["bn"] == pytest.approx(correct / 129)
