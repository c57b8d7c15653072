"""Protocol presets: every shipped preset shows its protocol facts under ``--dry-run``, refuses a
run that changes one of them, and runs with ``--allow-deviation`` recording each deviation in
every cell. The facts are checked against the preset file read here with ``tomllib``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import one_line_error
from ttabench import preset as presets
from ttabench.cli import main
from ttabench.runner.benchmark import RunSpec
from ttabench.spec import StreamSpec

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(presets.available())


def run(tmp_path: Path, *args: str):
    config = tmp_path / "empty.toml"
    config.write_text("")
    return CliRunner().invoke(main, ["run", "--config", str(config), "--data-dir",
                                     str(tmp_path / "no-data"), *args])


def file_leaves(name: str) -> list[tuple[str, object]]:
    """The protocol leaves of a preset file, read directly (an independent parse)."""
    content = tomllib.loads(Path(presets.available()[name].origin).read_text())
    head = content.pop("preset")
    free = set(presets.DEFAULT_FREE) | set(head.get("free", []))
    out = []
    for section, table in content.items():
        for key, value in table.items():
            if isinstance(value, dict):
                out += [(f"{section}.{key}.{k}", v) for k, v in value.items()]
            else:
                out.append((f"{section}.{key}", value))
    return [(leaf, value) for leaf, value in out if leaf not in free]


def test_the_shipped_presets():
    assert {"wf-table1", "robustbench-imagenetc-5000", "tent-cifar10c", "tent-imagenetc",
            "eata-imagenetc", "rdumb-ccc"} <= set(SHIPPED)
    listing = CliRunner().invoke(main, ["presets"])
    assert listing.exit_code == 0 and all(name in listing.output for name in SHIPPED)
    assert "did you mean 'tent-cifar10c'" in one_line_error(
        CliRunner().invoke(main, ["presets", "tent-cifar10"]))


@pytest.mark.parametrize("name", SHIPPED)
def test_dry_run_shows_every_protocol_fact_and_names_the_fetch_command(tmp_path, name):
    result = run(tmp_path, "--preset", name, "--dry-run")
    text = result.stdout
    chosen = presets.available()[name]
    assert f"preset {name}: {chosen.title}" in text and f"source: {chosen.source}" in text
    assert f"model: {chosen.model}" in text
    for leaf, value in file_leaves(name):
        assert f"    {leaf} = {value!r}" in text, leaf
    for key, value in chosen.options.items():
        assert f"    options.{key} = {value!r}" in text
    assert all(f"fetch: {command}" in text for command in chosen.fetch) and chosen.fetch
    line = one_line_error(result)  # the data is not here: the error says how to fetch it
    assert "`ttabench fetch " in line


@pytest.mark.parametrize("name", SHIPPED)
def test_a_deviation_is_refused_naming_it(tmp_path, name):
    batch = presets.available()[name].layer["run"]["batch_size"]
    line = one_line_error(run(tmp_path, "--preset", name, "--batch-size", "7", "--dry-run"))
    assert (f"preset {name}: this run changes 1 protocol fact(s): run.batch_size (preset "
            f"{batch}, this run 7)") in line
    assert "--allow-deviation" in line


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_allow_deviation_runs_and_every_cell_records_the_deviations(tmp_path, name):
    out = tmp_path / "out"
    stream = presets.available()[name].layer["run"].get("stream", {})
    continual = stream.get("kind", "reset-each-split") != "reset-each-split"
    length = ("--steps-per-split", "run.stream.steps_per_split") if continual else \
        ("--steps", "run.steps")
    changed = {"run.suite": "tiny", "run.model": "tiny-cnn", "run.batch_size": 16,
               length[1]: 2, "run.severities": [1]}
    result = run(tmp_path, "--preset", name, "--allow-deviation", "-s", "tiny", "-m",
                 "tiny-cnn", "--batch-size", "16", length[0], "2", "--severities", "1",
                 "--splits", "noise-1", "-e", "ac", "--no-baselines", "--n-boot", "10",
                 "--threads", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    (cell,) = [json.loads(p.read_text()) for p in (out / "cells").glob("*.json")]
    assert cell["status"] == "ok", cell["error"]
    recorded = cell["protocol"]["preset"]
    assert recorded["name"] == name and recorded["source"] == presets.available()[name].source
    leaves = dict(file_leaves(name))
    expected = {fact: (leaves[fact], value) for fact, value in changed.items()
                if fact in leaves and leaves[fact] != value}
    assert {d["fact"]: (d["preset"], d["run"]) for d in recorded["deviations"]} == expected


def test_a_file_value_is_replaced_with_a_note_and_an_extra_parameter_deviates(tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text('[run]\nbatch_size = 32\n[adapter.tent]\nlr = 0.5\nnorms = "bn"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--preset",
                                       "tent-cifar10c", "--data-dir", str(tmp_path), "--dry-run",
                                       "--set", "adapter.tent.lr=0.01"])
    notes = result.stderr
    assert "preset tent-cifar10c replaces [run] batch_size = 32" in notes
    assert "replaces [adapter.tent] lr = 0.5" in notes
    assert "[adapter.tent] norms = 'bn'" in notes  # dropped: the preset leaves it at its default
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = notes.strip().splitlines()[-1]  # the notes, then the one error line
    assert last.startswith("error: ") and "adapter.tent.lr (preset 0.001, this run 0.01)" in last


def test_deviations_against_a_spec_computed_by_hand():
    tent = presets.available()["tent-cifar10c"]
    spec = RunSpec(suite="cifar10c", model="robustbench:cifar10/Standard", adapters=["tent"],
                   estimators=["ac"], batch_size=200, steps=50, severities=[5],
                   adapter_params={"tent": {"optimizer": "Adam", "lr": 0.001, "beta": 0.9}},
                   stream=StreamSpec(shuffle=False))
    assert presets.deviations(tent, spec) == []
    spec.adapter_params["tent"]["norms"] = "bn"  # a parameter the preset leaves at its default
    spec.adapter_params["tent"]["optimizer"] = "SGD"
    spec.suite_options = {"n_examples": 100}
    spec.precision = "bf16"
    spec.stream = StreamSpec(kind="continual")
    found = {d.fact: (d.preset, d.run) for d in presets.deviations(tent, spec)}
    assert found == {"adapter.tent.norms": ("(the plugin's default)", "bn"),
                     "adapter.tent.optimizer": ("Adam", "SGD"),
                     "suite.cifar10c.n_examples": ("(the plugin's default)", 100),
                     "options.precision": ("fp32", "bf16"),
                     "run.stream.kind": ("reset-each-split", "continual"),
                     "run.stream.shuffle": (False, True)}


def test_config_file_preset_key_and_the_paper_protocol_file(tmp_path):
    config = tmp_path / "p.toml"
    config.write_text('[run]\npreset = "wf-table1"\n')
    result = CliRunner().invoke(main, ["run", "--config", str(config), "--data-dir",
                                       str(tmp_path), "--dry-run"])
    assert "preset wf-table1:" in result.stdout
    paper = tomllib.loads((ROOT / "benchmarks" / "paper_protocol.toml").read_text())
    assert paper["run"]["preset"] == "wf-table1"
