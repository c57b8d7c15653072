"""Runs of several models: one ``--model`` list, each model's outputs kept once in the logit
cache, the estimators that compare models computed from it with every peer's outputs of the
same view, and ``ttabench leaderboard --rescore`` adding estimators without a forward pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from cli_checks import no_cells, one_line_error
from ttabench import registry
from ttabench.cli import main
from ttabench.estimators.functional import agreement
from ttabench.estimators.pool import TTALine
from ttabench.api import Peers
from ttabench.errors import TTABenchError
from ttabench.models import tiny
from ttabench.records import read_cell
from ttabench.runner.logit_cache import FOLDER, LogitCache

MODELS = ("tiny-cnn:0", "tiny-cnn:1", "tiny-cnn:2")
RUN = ["-s", "tiny", "-m", ",".join(MODELS), "-a", "bn-ema", "--steps", "3", "--splits",
       "noise-2,shift-1,clean", "--n-examples", "96", "--batch-size", "32", "--jobs", "1",
       "--threads", "1", "--n-boot", "10"]


def invoke(*args: str, config: Path):
    return CliRunner().invoke(main, [*args, "--config", str(config)] if args[0] == "run"
                              else list(args))


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory) -> Path:
    """One run of three tiny models with GDE, TTALine and AC (no baselines)."""
    base = tmp_path_factory.mktemp("pool")
    (base / "none.toml").write_text("")
    out = base / "run"
    result = invoke("run", *RUN, "-e", "gde,ttaline,ac", "-o", str(out),
                    config=base / "none.toml")
    assert result.exit_code == 0, result.output
    return out


def cells_of(out: Path) -> list:
    return [read_cell(p) for p in sorted((out / "cells").glob("*.json"))]


def test_one_cell_per_model_and_split_each_keeping_its_views(pool_run: Path) -> None:
    cells = cells_of(pool_run)
    assert sorted((c.model, c.split["name"]) for c in cells) == sorted(
        (m, s) for m in MODELS for s in ("noise-2", "shift-1", "clean"))
    cache = LogitCache(pool_run / FOLDER)
    for cell in cells:
        assert set(cell.outputs) == {"source", "bn", "adapted", "source_val:source",
                                     "source_val:bn", "source_val:adapted"}
        adapted = cache.load(cell.outputs["adapted"])
        assert len(adapted.logits) == 3 * 32  # three steps of 32 images
        # the frozen logits of the adapted rows are rows of the source view's outputs
        source = cache.load(cell.outputs["source"])
        assert any(torch.equal(adapted.frozen_logits[0], row) for row in source.logits)
    # source and bn views do not depend on the adapter: one entry per (model, split, view)
    per_model_split = {(c.model, c.split["name"]) for c in cells}
    assert len({c.outputs["bn"] for c in cells}) == len(per_model_split)


def test_gde_is_the_mean_agreement_with_the_other_models_in_the_same_view(pool_run: Path) -> None:
    cells = cells_of(pool_run)
    cache = LogitCache(pool_run / FOLDER)
    for cell in cells:
        peers = [c for c in cells if c.split == cell.split and c.model != cell.model]
        assert len(peers) == 2
        for view in ("source", "bn", "adapted"):
            own = cache.load(cell.outputs[view]).logits
            expected = sum(agreement(own, cache.load(p.outputs[view]).logits)
                           for p in peers) / 2
            got = cell.estimators["gde"].views[view]
            assert got.value == pytest.approx(expected, abs=1e-12)
            assert sorted(got.extras["peers"]) == sorted(p.model for p in peers)


def test_ttaline_reads_the_adapted_outputs_of_every_model(pool_run: Path) -> None:
    """The record equals TTALine called directly on the adapted outputs and the adapted view's
    source-val reference of the model and its peers (on tiny, every model is right on every source-val
    image, so agreement-on-the-line refuses: the same failure either way)."""
    cells = cells_of(pool_run)
    cache = LogitCache(pool_run / FOLDER)
    cell = cells[0]
    peers = [c for c in cells if c.split == cell.split and c.model != cell.model]
    with pytest.raises(TTABenchError, match="strictly between 0 and 1") as err:
        TTALine().estimate(
            cache.load(cell.outputs["adapted"]), cache.load(cell.outputs["source_val:adapted"]),
            Peers(tuple(p.model for p in peers),
                  tuple(cache.load(p.outputs["adapted"]) for p in peers),
                  tuple(cache.load(p.outputs["source_val:adapted"]) for p in peers)))
    recorded = cell.estimators["ttaline"]
    assert recorded.target == "adapted" and recorded.views == {}
    assert recorded.result is not None and recorded.result.failed == str(err.value)


def test_pool_estimators_are_in_no_cell_key(pool_run: Path, tmp_path: Path) -> None:
    """Adding a pool estimator to a finished run reruns no cell: its keys are the same."""
    (tmp_path / "none.toml").write_text("")
    result = invoke("run", *RUN, "-e", "gde,aline-s,ttaline,ac", "-o", str(pool_run),
                    config=tmp_path / "none.toml")
    assert result.exit_code == 0, result.output
    assert "9 cells planned, 0 to run" in result.output
    assert all("aline-s" in c.estimators for c in cells_of(pool_run))


def test_rescore_adds_estimators_without_a_forward_pass(pool_run: Path, tmp_path: Path,
                                                      monkeypatch) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(pool_run, folder)
    before = {c.key: c for c in cells_of(folder)}
    calls = {"forward": 0}
    original = tiny.TinyCNN.forward

    def counting(self, x):
        calls["forward"] += 1
        return original(self, x)

    def no_model(*args, **kwargs):
        raise AssertionError("a rescore loads no model")

    monkeypatch.setattr(tiny.TinyCNN, "forward", counting)
    monkeypatch.setattr(registry, "load_model", no_model)
    result = invoke("leaderboard", str(folder), "--rescore", "-e", "ac,atc-mc,aline-d",
                    "--n-boot", "10", config=tmp_path)
    assert result.exit_code == 0, result.output
    assert calls["forward"] == 0
    after = {c.key: c for c in cells_of(folder)}
    for key, cell in after.items():
        # recomputed from the cache: AC equals what the cell computed in every view and window
        assert cell.estimators["ac"].views == before[key].estimators["ac"].views
        assert cell.estimators["ac"].windows == before[key].estimators["ac"].windows
        assert set(cell.estimators["atc-mc"].views) == {"source", "bn", "adapted"}
        assert cell.estimators["aline-d"].views  # computed (failed on tiny: ID accuracy 1)
        assert cell.estimators["gde"] == before[key].estimators["gde"]
        assert cell.targets == before[key].targets and cell.protocol == before[key].protocol
    assert "atc-mc" in (folder / "leaderboard.csv").read_text()
    # without --estimator: the run's own static and pool estimators (run.json)
    result = invoke("leaderboard", str(folder), "--rescore", "--n-boot", "10", config=tmp_path)
    assert result.exit_code == 0, result.output
    assert calls["forward"] == 0


def test_rescore_refusals(pool_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(pool_run, folder)
    cells = sorted((folder / "cells").glob("*.json"))
    stamp = [p.stat().st_mtime_ns for p in cells]
    for args, words in [
        (["--rescore", "-e", "aetta"], "trajectory estimator"),
        (["-e", "ac"], "add --rescore"),
        (["--rescore", "-e", "ac", "--set", "estimator.doc.x=1"], "not among the rescored"),
        (["--rescore", "-e", "no-such"], "unknown estimator"),
    ]:
        line = one_line_error(invoke("leaderboard", str(folder), *args, config=tmp_path))
        assert words in line, line
    assert [p.stat().st_mtime_ns for p in cells] == stamp  # refused before any rewrite
    shutil.rmtree(folder / FOLDER)
    line = one_line_error(invoke("leaderboard", str(folder), "--rescore", config=tmp_path))
    assert "no logit cache" in line


def test_a_damaged_cache_entry_is_one_error_line(pool_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(pool_run, folder)
    entry = next((folder / FOLDER).glob("*.safetensors"))
    entry.write_bytes(entry.read_bytes()[:50])
    line = one_line_error(invoke("leaderboard", str(folder), "--rescore", "-e", "ac",
                                 config=tmp_path))
    assert "is damaged" in line and entry.name in line


@pytest.mark.parametrize("args, words", [
    (["-m", "tiny-cnn", "-e", "gde"], "needs at least 2 models"),
    (["-m", "tiny-cnn:0,tiny-cnn:1", "-e", "aline-s"], "needs at least 3 models"),
    (["-m", "tiny-cnn:0,tiny-cnn:1", "-e", "ttaline,ac", "--steps", "0"], "does not adapt"),
    (["-m", "tiny-cnn:0,tiny-cnn:1", "-e", "gde", "--no-logit-cache"], "--no-logit-cache"),
    (["-m", "mnist-pool,mnist-cnn:0", "-e", "gde"], "named twice"),
])
def test_pool_runs_refused_before_any_work(tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "none.toml").write_text("")
    result = invoke("run", "-s", "tiny", *args, "-o", str(tmp_path / "out"),
                    config=tmp_path / "none.toml")
    assert words in one_line_error(result)
    assert no_cells(tmp_path / "out")


def test_estimate_refuses_a_pool_estimator_and_several_models(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "none.toml").write_text("")
    for args, words in [(["-e", "gde", "-m", "tiny-cnn"], "compares models"),
                        (["-e", "ac", "-m", "tiny-cnn:0,tiny-cnn:1"], "one --model")]:
        result = CliRunner().invoke(main, ["estimate", *args, "--data", str(tmp_path / "img"),
                                           "--config", str(tmp_path / "none.toml")])
        assert words in one_line_error(result)


def test_run_json_records_the_models(pool_run: Path) -> None:
    spec = json.loads((pool_run / "run.json").read_text())["spec"]
    assert spec["models"] == list(MODELS) and spec["logit_cache"] is True


def test_the_model_option_takes_a_list_a_pool_or_a_config_list(tmp_path: Path) -> None:
    from ttabench.runner.config import build_spec, load_config
    from ttabench.models.pools import MNIST_POOL

    path = tmp_path / "models.toml"
    path.write_text('[run]\nmodel = ["tiny-cnn:0", "tiny-cnn:1"]\nestimators = ["ac"]\n')
    spec = build_spec(load_config(str(path)))
    assert spec.model_list == ["tiny-cnn:0", "tiny-cnn:1"] and spec.model == "tiny-cnn:0"
    assert spec.for_model("tiny-cnn:1").model == "tiny-cnn:1"
    spec = build_spec(load_config(str(path)), model=["tiny-cnn:2,mnist-pool"])
    assert spec.model_list == ["tiny-cnn:2", *MNIST_POOL]
    path.write_text('[run]\nmodel = "tiny-cnn"\nestimators = ["ac"]\n')
    assert build_spec(load_config(str(path))).model_list == ["tiny-cnn"]
