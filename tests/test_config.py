"""plugins.toml is the roster and the parameters of a run; the command line overrides it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ttabench.errors import TTABenchError
from ttabench.runner.command import build_spec
from ttabench.runner.config import load_config, parse_value

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text(text)
    return path


def test_roster_and_parameters_come_from_the_file(tmp_path):
    path = write(tmp_path, """
[run]
suite = "tiny"
model = "tiny-cnn"
estimators = ["enigma"]
baselines = ["ac", "cot"]
seeds = [3, 4]
batch_size = 32
[adapter.rdumb]
lr = 0.01
[estimator.enigma]
probe_size = 64
[suite.tiny]
n_examples = 128
""")
    spec = build_spec(load_config(path))
    assert spec.estimators == ["enigma", "ac", "cot"]
    assert spec.adapters == ["rdumb"]  # enigma's preferred adapter
    assert spec.adapter_params == {"rdumb": {"lr": 0.01}}
    assert spec.estimator_params["enigma"] == {"probe_size": 64}
    assert spec.suite_options == {"n_examples": 128}
    assert spec.seeds == [3, 4] and spec.batch_size == 32


def test_command_line_and_set_override_the_file(tmp_path):
    path = write(tmp_path, '[run]\nsuite = "tiny"\nmodel = "tiny-cnn"\nbaselines = ["ac"]\n'
                           '[adapter.rdumb]\nlr = 0.01\n')
    config = load_config(path, overrides=["adapter.rdumb.lr=0.5", "estimator.cot.x=[1, 2]",
                                          "run.batch_size=16"])
    spec = build_spec(config, estimator=("cot,ac",), adapter=("tent", "rdumb"), seed=(7,),
                      n_examples=99, baselines=False)
    assert spec.estimators == ["cot", "ac"]
    assert spec.adapters == ["tent", "rdumb"]
    assert spec.adapter_params["rdumb"] == {"lr": 0.5}
    assert spec.estimator_params["cot"] == {"x": [1, 2]}
    assert spec.seeds == [7] and spec.batch_size == 16
    assert spec.suite_options == {"n_examples": 99}


def test_quick_table_applies_only_with_quick(tmp_path):
    path = write(tmp_path, '[run]\nsuite = "tiny"\nseeds = [0]\n[quick.run]\nseeds = [1]\n')
    assert load_config(path).run["seeds"] == [0]
    assert load_config(path, quick=True).run["seeds"] == [1]


def test_values_and_errors():
    assert parse_value("3") == 3 and parse_value("[0, 5]") == [0, 5]
    assert parse_value("true") is True and parse_value("fog-5") == "fog-5"
    with pytest.raises(TTABenchError, match="section.key=value"):
        load_config(overrides=["nonsense"])
    with pytest.raises(TTABenchError, match="not found"):
        load_config("/nonexistent/plugins.toml")


def test_repository_plugins_toml_is_the_default_roster():
    config = load_config(ROOT / "plugins.toml")
    spec = build_spec(config, estimator=("enigma",))
    assert spec.suite == "mnist-c" and spec.model == "mnist-cnn" and spec.adapters == ["rdumb"]
    assert spec.estimators[0] == "enigma" and "cot" in spec.estimators
    assert spec.adapter_params["rdumb"]["lr"] == config.data["adapter"]["rdumb"]["lr"]


@pytest.mark.slow
def test_quick_default_run_end_to_end(tmp_path):
    """The README's run command with --quick, in the repository, on a fresh cache."""
    env = {**os.environ, "TTABENCH_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TTABENCH_DATA_DIR", None)
    out = tmp_path / "quick"
    result = subprocess.run([sys.executable, "-m", "ttabench", "run", "--estimator", "enigma",
                             "--quick", "-o", str(out), "--n-boot", "200"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "enigma (quad)" in result.stdout
    for name in ("leaderboard.csv", "leaderboard.md", "leaderboard.html", "scatter.png", "run.json"):
        assert (out / name).exists(), name
    assert len(list((out / "cells").glob("*.json"))) == 20  # 15 eval + 4 holdout + clean
