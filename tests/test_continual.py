"""Continual streams through the one runner: `ttabench continual` (an alias of `run --stream
continual`), the guard and the online estimators in them, and parameters reaching wrapped
adapters."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ttabench import registry
from ttabench.cli import main
from ttabench.config_schema import validate as validate_config
from ttabench.errors import TTABenchError
from ttabench.estimators.aetta import AETTA
from ttabench.records import read_cell
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.config import build_spec, load_config
from ttabench.runner.run_folder import RunFolder
from ttabench.spec import RunSpec, StreamSpec

TINY = dict(suite="tiny", model="tiny-cnn", batch_size=16, threads=1, device="cpu",
            splits=["noise-*"])
CONTINUAL = ["continual", "-s", "tiny", "-m", "tiny-cnn", "--splits", "noise-*",
             "--steps-per-split", "4", "--window", "2", "--batch-size", "16", "--threads", "1",
             "--no-baselines", "--n-boot", "20"]


def test_aetta_window_results_are_one_minus_the_mean_error_per_complete_window() -> None:
    est = AETTA()
    est.errors = [0.1, 0.3, 0.2, 0.6, 0.5]
    assert [r.estimate for r in est.window_results(2)] == pytest.approx([1 - 0.2, 1 - 0.4])


def test_wrapped_adapters_resolve_through_the_wrapper_group() -> None:
    cls = registry.get("adapters", "guard:tent")
    assert cls.name == "guard:tent" and cls.inner_cls is registry.get("adapters", "tent")
    info = registry.info("adapters", "guard:rdumb", load=True)
    assert info.target == "ttabench_enigma.guard:guard(ttabench_enigma.adapters:RDumb)"
    assert info.status == "ok"
    with pytest.raises(TTABenchError, match="unknown adapter wrapper 'gaurd'.*did you mean 'guard'"):
        registry.get("adapters", "gaurd:tent")
    with pytest.raises(TTABenchError, match="unknown adapter 'tnet'"):
        registry.get("adapters", "guard:tnet")


def test_a_wrapped_adapter_inherits_its_inner_adapters_section(tmp_path) -> None:
    path = tmp_path / "plugins.toml"
    path.write_text('[run]\nsuite = "tiny"\nmodel = "tiny-cnn"\n[adapter.tent]\nlr = 0.01\n')
    spec = build_spec(load_config(path), adapter=["tent", "guard:tent"], estimator=["ac"])
    assert spec.adapter_params == {"tent": {"lr": 0.01}, "guard:tent": {"lr": 0.01}}
    path.write_text(path.read_text() + '[adapter."guard:tent"]\nlr = 0.5\nthreshold = 0.3\n')
    config = load_config(path, overrides=["adapter.guard:tent.patience=3"])
    validate_config(config)  # the wrapped name, its own and its inner adapter's keys
    spec = build_spec(config, adapter=["tent", "guard:tent"], estimator=["ac"])
    assert spec.adapter_params["guard:tent"] == {"lr": 0.5, "threshold": 0.3, "patience": 3}
    assert spec.adapter_params["tent"] == {"lr": 0.01}
    bench = Benchmark(RunSpec(**{**TINY, "adapters": spec.adapters, "estimators": ["ac"],
                                 "adapter_params": spec.adapter_params}))
    recorded = {p.protocol["adapter"]["name"]: p.protocol["adapter"]["params"]
                for p in bench.plan()}
    assert recorded == spec.adapter_params  # the resolved parameters are in the key
    for assignment, message in (("adapter.guard:tent.lrr=1", "did you mean 'lr'"),
                                ("adapter.guard:tent.threshhold=1", "did you mean 'threshold'")):
        with pytest.raises(TTABenchError, match=message):
            validate_config(load_config(path, overrides=[assignment]))


def test_a_set_for_a_plugin_the_run_does_not_use_is_refused(tmp_path) -> None:
    config = load_config(overrides=["adapter.eta.lr=0.1"])
    with pytest.raises(TTABenchError, match="'eta' is not among this run's adapters.*'eata'"):
        build_spec(config, adapter=["eata"], estimator=["ac"])
    config = load_config(overrides=["estimator.aetta.n_dropouts=2"])
    with pytest.raises(TTABenchError, match="'aetta' is not among this run's estimators"):
        build_spec(config, adapter=["tent"], estimator=["ac"])
    config = load_config(overrides=["adapter.tent.lr=0.1"])  # reaches guard:tent: used
    assert build_spec(config, adapter=["guard:tent"], estimator=["ac"]).adapter_params == {
        "guard:tent": {"lr": 0.1}}


def test_an_estimator_window_follows_the_stream_and_a_contradiction_is_refused() -> None:
    spec = build_spec(load_config(), estimator=["enigma-online"], adapter=["tent"], window=7)
    assert spec.estimator_params["enigma-online"]["window"] == 7
    config = load_config(overrides=["estimator.enigma-online.window=5"])
    with pytest.raises(TTABenchError, match="window = 5 contradicts the stream's window"):
        build_spec(config, estimator=["enigma-online"], adapter=["tent"], window=7)


def test_continual_runs_aetta_and_enigma_online_and_takes_the_folder(tmp_path) -> None:
    out = tmp_path / "out"
    args = [*CONTINUAL, "-o", str(out), "-a", "tent", "-e", "aetta", "-e", "enigma-online"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    cells = [read_cell(p) for p in (out / "cells").glob("*.json")]
    assert len(cells) == 1 and cells[0].protocol["stream"]["kind"] == "continual"
    windows = cells[0].windows
    assert len(windows.correct_per_step) == 12 and len(windows.accuracy) == 6
    for name in ("aetta", "enigma-online"):
        results = cells[0].estimators[name].windows
        assert len(results) == 6 and all(r.failed is None for r in results), name
    assert (out / "windows.md").exists() and "enigma-online" in (out / "windows.csv").read_text()
    # the scoring options are the run's, recorded and reused by `ttabench leaderboard`
    again = CliRunner().invoke(main, ["leaderboard", str(out)])
    assert again.exit_code == 0 and "(20 resamples, seed 0)" in again.output
    other = CliRunner().invoke(main, ["leaderboard", str(out), "--n-boot", "30",
                                      "--boot-seed", "4"])
    assert other.exit_code == 0 and "(30 resamples, seed 4)" in other.output
    old = CliRunner().invoke(main, ["leaderboard", str(out), "--seed", "4"])
    assert old.exit_code == 2  # --seed is a stream seed; the bootstrap's is --boot-seed
    with RunFolder.claim(tmp_path / "busy"):
        busy = CliRunner().invoke(main, [*CONTINUAL, "-o", str(tmp_path / "busy"), "-a", "tent"])
    assert busy.exit_code == 2 and "is in use by another run" in busy.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "0"], "--window"),
    (["--stream", "spiral"], "unknown stream kind 'spiral'"),
    (["--stream", "continual+corelated"], "unknown stream kind"),
    (["--severities", "9"], "--severities 9"),
    (["-a", "guard:tnet"], "unknown adapter 'tnet'"),
    (["--set", "adapter.tent.lrr=1"], "did you mean 'lr'"),
    (["--set", "adapter.rdumb.lr=1"], "'rdumb' is not among this run's adapters"),
    (["--batch-size", "1"], "--stats-window"),
    (["--steps", "5"], "--steps-per-split"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message) -> None:
    result = CliRunner().invoke(main, [*CONTINUAL, "-o", str(tmp_path / "out"), "-a", "tent",
                                       *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]  # (and the overrides note)
    assert errors == lines[-1:] and message in errors[0], lines
    assert not (tmp_path / "out" / "cells").exists() or not any((tmp_path / "out" / "cells").iterdir())


def test_the_guard_resets_a_collapsing_tent_and_leaves_a_healthy_one_alone() -> None:
    """tiny-cnn, Tent at lr 2 collapses to chance (4 classes) on the noise stream; the guard
    resets it and keeps most of the accuracy. At lr 1e-4 nothing collapses: no guard reset,
    and the guarded run is Tent's, step for step."""
    stream = StreamSpec(kind="continual", steps_per_split=20, window=10)
    out = {}
    for lr in (2.0, 1e-4):
        bench = Benchmark(RunSpec(**{**TINY, "batch_size": 64}, adapters=["tent", "guard:tent"],
                                  estimators=["ac"], stream=stream,
                                  adapter_params={"tent": {"lr": lr}, "guard:tent": {"lr": lr}}))
        out[lr] = {p.protocol["adapter"]["name"]: bench.execute(p) for p in bench.plan()}
    collapsed, guarded = out[2.0]["tent"], out[2.0]["guard:tent"]
    assert collapsed.targets["adapted"] < 0.35  # chance is 0.25
    assert guarded.adaptation["adapter_counters"]["guard_resets"] >= 1
    assert guarded.windows.reset_steps == guarded.adaptation["adapter_counters"]["guard_reset_steps"]
    assert guarded.targets["adapted"] > collapsed.targets["adapted"] + 0.2
    healthy = out[1e-4]
    assert healthy["guard:tent"].windows.reset_steps == []
    assert healthy["guard:tent"].windows.correct_per_step == \
        healthy["tent"].windows.correct_per_step
