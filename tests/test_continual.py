"""Continual scenarios: order, stream, windowed accuracy, resume, the command's bad input."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from ttabench import registry
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.estimators.aetta import AETTA
from ttabench.scenarios import cells as cells_module
from ttabench.scenarios.cells import ScenarioBench, ScenarioRun, read_scenario, scenario_path
from ttabench.scenarios.run import mean_absolute_error, windowed_accuracy
from ttabench.scenarios.spec import (
    ScenarioSpec,
    mixture_weight,
    scenario_order,
    scenario_pool,
)
from ttabench.scenarios.stream import scenario_batches
from ttabench.suites.tiny import TinySuite

TINY = dict(suite="tiny", model="tiny-cnn", batch_size=16, threads=1, device="cpu")


def test_windowed_accuracy_and_mae_by_hand() -> None:
    # windows of 2 steps: (3+1)/(4+4), (4+0)/(4+4), last partial 2/4
    assert windowed_accuracy([3, 1, 4, 0, 2], [4, 4, 4, 4, 4], 2) == [0.5, 0.5, 0.5]
    assert windowed_accuracy([4, 0, 1], [4, 4, 4], 1) == [1.0, 0.0, 0.25]
    assert mean_absolute_error([0.5, 0.2], [0.4, 0.4]) == pytest.approx((0.1 + 0.2) / 2)
    with pytest.raises(TTABenchError):
        mean_absolute_error([0.5], [0.4, 0.4])


def test_aetta_window_estimates_are_one_minus_mean_error_per_window() -> None:
    est = AETTA()
    est.errors = [0.1, 0.3, 0.2, 0.6, 0.5]
    assert [r.estimate for r in est.window_results(2)] == pytest.approx([1 - 0.2, 1 - 0.4])


def test_order_is_a_seeded_permutation_of_the_pool() -> None:
    suite = TinySuite()
    spec = ScenarioSpec(severities=(1, 2, 3), steps_per_split=4, window=2)
    pool = scenario_pool(suite, spec)
    assert [s.name for s in pool] == ["noise-1", "noise-2", "noise-3"]
    expected = torch.randperm(3, generator=torch.Generator().manual_seed(7)).tolist()
    assert [s.name for s in scenario_order(pool, 7)] == [pool[i].name for i in expected]
    calibration = scenario_pool(suite, ScenarioSpec(role="calibration", severities=(1, 2)))
    assert [s.name for s in calibration] == ["shift-1", "shift-2"]  # clean has no severity


def test_mixture_weight_ramps_within_a_segment_and_the_last_one_is_pure() -> None:
    spec = ScenarioSpec(kind="gradual", steps_per_split=4, window=2)
    assert [mixture_weight(t, spec, 2) for t in range(8)] == [
        (0, 0.0), (0, 0.25), (0, 0.5), (0, 0.75), (1, 0.0), (1, 0.0), (1, 0.0), (1, 0.0)]
    sequence = ScenarioSpec(steps_per_split=4, window=2)
    assert {mixture_weight(t, sequence, 3)[1] for t in range(12)} == {0.0}


def test_sequence_batches_come_from_their_segment_and_gradual_ones_mix() -> None:
    suite = TinySuite(n_examples=64)
    spec = ScenarioSpec(severities=(1, 3), steps_per_split=3, window=1)
    order = scenario_order(scenario_pool(suite, spec), 0)
    data = [suite.dataset(s).tensors[0] for s in order]
    batches = list(scenario_batches(suite, order, spec, seed=0, batch_size=8))
    assert [b.segment for b in batches] == [0, 0, 0, 1, 1, 1]
    for b in batches:  # every image is an image of its segment's split
        pool = data[b.segment].flatten(1)
        assert all((pool == img.flatten()).all(1).any() for img in b.images)
    gradual = ScenarioSpec(kind="gradual", severities=(1, 3), steps_per_split=3, window=1)
    mixed = list(scenario_batches(suite, order, gradual, seed=0, batch_size=8))
    from_next = [sum(bool((data[1].flatten(1) == img.flatten()).all(1).any()) for img in b.images)
                 for b in mixed[:3]]
    assert from_next[0] == 0 and from_next[2] > 0  # w = 0, then 2/3


def test_scenario_cells_are_written_and_a_rerun_resumes(tmp_path, monkeypatch) -> None:
    spec = ScenarioSpec(severities=(1, 2, 3), steps_per_split=4, window=2)
    run = ScenarioRun(output=tmp_path, spec=spec, adapters=["tent", "source"], seeds=[0],
                      estimators=["enigma-online"],
                      estimator_params={"enigma-online": {"window": 2}}, **TINY)
    bench = ScenarioBench(run)
    first = bench.execute()
    assert len(first) == 2
    record = read_scenario(scenario_path(tmp_path, first[0]["key"]))
    assert record["protocol"]["scenario"]["order"] == [s.name for s in bench.order]
    assert len(record["window_accuracy"]) == 6 and len(record["correct_per_step"]) == 12
    hits = record["correct_per_step"]
    assert record["window_accuracy"][0] == pytest.approx((hits[0] + hits[1]) / 32)
    assert record["online_accuracy"] == pytest.approx(sum(hits) / (12 * 16))
    est = record["estimators"]["enigma-online"]
    assert est["mae"] == pytest.approx(sum(
        abs(e - t) for e, t in zip(est["windows"], record["window_accuracy"])) / 6)

    def boom(*args, **kwargs):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(cells_module, "run_scenario", boom)
    again = ScenarioBench(run).execute()
    assert [r["key"] for r in again] == [r["key"] for r in first]


def test_a_seeded_rerun_gives_the_same_numbers(tmp_path) -> None:
    spec = ScenarioSpec(severities=(1, 2), steps_per_split=4, window=2)
    outs = []
    for folder in ("a", "b"):
        run = ScenarioRun(output=tmp_path / folder, spec=spec, adapters=["guard:tent"], **TINY)
        outs.append(ScenarioBench(run).execute()[0])
    assert outs[0]["correct_per_step"] == outs[1]["correct_per_step"]
    assert outs[0]["key"] == outs[1]["key"]


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


@pytest.mark.parametrize(("args", "message"), [
    (["--window", "3", "--steps-per-split", "4"], "--window must be at least 1 and divide"),
    (["--severities", "9"], "no eval split at severities 9"),
    (["--severities", "x"], "--severities 'x'"),
    (["-a", "guard:tnet"], "unknown adapter 'tnet'"),
    (["--set", "adapter.tent"], "--set 'adapter.tent'"),
    (["--set", "adapter.tent.lrr=1"], "bad parameters"),
    (["-e", "ac"], "gives no per-window estimate"),
    (["--batch-size", "1"], "--batch-size"),
    (["--kind", "spiral"], "--kind"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message) -> None:
    base = ["continual", "-o", str(tmp_path / "out"), "-s", "tiny", "-m", "tiny-cnn",
            "--severities", "1,2", "--steps-per-split", "4", "--window", "2", "-a", "tent"]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "out" / "scenarios").exists()


def test_the_command_prints_online_accuracy_and_writes_cells(tmp_path) -> None:
    out = tmp_path / "out"
    args = ["continual", "-o", str(out), "-s", "tiny", "-m", "tiny-cnn", "--severities", "1,2",
            "--steps-per-split", "4", "--window", "2", "-a", "tent", "--batch-size", "16",
            "--threads", "1", "--set", "adapter.tent.lr=0.01"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    files = list((out / "scenarios").glob("*.json"))
    record = json.loads(files[0].read_text())
    assert record["protocol"]["adapter"]["params"] == {"lr": 0.01}
    assert f"online accuracy {100 * record['online_accuracy']:.2f}%" in result.stdout


def test_the_guard_resets_a_collapsing_tent_and_leaves_a_healthy_one_alone(tmp_path) -> None:
    """tiny-cnn, Tent at lr 2 collapses to chance (4 classes) on the noise stream; the guard
    resets it and keeps most of the accuracy. At lr 1e-4 nothing collapses: no guard reset,
    and the guarded run is Tent's, step for step."""
    spec = ScenarioSpec(severities=(1, 2, 3), steps_per_split=20, window=10)
    out = {}
    for lr in (2.0, 1e-4):
        run = ScenarioRun(output=tmp_path / str(lr), spec=spec, adapters=["tent", "guard:tent"],
                          adapter_params={"tent": {"lr": lr}, "guard:tent": {"lr": lr}}, **TINY)
        out[lr] = {r["adapter"]: r for r in ScenarioBench(run).execute()}
    collapsed, guarded = out[2.0]["tent"], out[2.0]["guard:tent"]
    assert collapsed["online_accuracy"] < 0.35  # chance is 0.25
    assert guarded["adapter_counters"]["guard_resets"] >= 1
    assert guarded["reset_steps"] == guarded["adapter_counters"]["guard_reset_steps"]
    assert guarded["online_accuracy"] > collapsed["online_accuracy"] + 0.2
    healthy = out[1e-4]
    assert healthy["guard:tent"]["reset_steps"] == []
    assert healthy["guard:tent"]["correct_per_step"] == healthy["tent"]["correct_per_step"]
