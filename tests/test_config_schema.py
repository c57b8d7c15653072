"""One schema for plugins.toml and --set: every typo or wrong type is one line before any work,
naming the file (or the --set) and the key, with a "did you mean" where one is close."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cli_checks import no_cells, one_line_error
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.runner.config import load_config


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plugins.toml"
    path.write_text('[run]\nsuite = "tiny"\nmodel = "tiny-cnn"\n' + text)
    return path


def error_of(path: Path, *sets: str) -> str:
    from ttabench.config_schema import validate

    with pytest.raises(TTABenchError) as info:
        validate(load_config(path, overrides=list(sets)))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("text, expected", [
    ("[estimatr.enigma]\nprobe_size = 64\n",
     "unknown section 'estimatr'; did you mean 'estimator'?"),
    ("[adapter.rdum]\nlr = 0.1\n", "[adapter.rdum]: unknown adapter 'rdum'; did you mean 'rdumb'?"),
    ("[adapter.rdumb]\nlrr = 0.1\n",
     "[adapter.rdumb]: unknown parameter of adapter rdumb 'lrr'; did you mean 'lr'?"),
    ("[adapter.rdumb]\nlr = \"fast\"\n", "[adapter.rdumb] lr: expected float, got 'fast'"),
    ("[estimator.enigma]\nprobe_size = 64.5\n",
     "[estimator.enigma] probe_size: expected int, got 64.5"),
    ("[estimator.enigma-unweighted]\nprob_size = 64\n",  # **params forwarded to its base class
     "unknown parameter of estimator enigma-unweighted 'prob_size'; did you mean 'probe_size'?"),
    ("[suite.tiny]\nn_example = 64\n", "did you mean 'n_examples'?"),
    ("[executor.ray]\nnum_gpu = 1\n", "[executor.ray]: unknown key 'num_gpu'; did you mean 'num_gpus'?"),
    ("[quick.run]\nsead = 1\n", "[quick]: [run]: unknown key 'sead'; did you mean 'seed"),
])
def test_file_typos_and_types_name_the_file_and_key(tmp_path, text, expected):
    path = config_file(tmp_path, text)
    message = error_of(path)
    assert message.startswith(str(path)) and expected in message


@pytest.mark.parametrize("run_line, expected", [
    ("sead = 1", "[run]: unknown key 'sead'; did you mean 'seed"),
    ("seeds = \"zero\"", "[run] seeds: expected an integer in 0..9223372036854775807 or a list"),
    ("threads = 2000", "[run] threads: expected an integer in 0..1024 (0: torch's default)"),
    ("batch_size = 0", "[run] batch_size: expected a positive integer, got 0"),
    ("batch_size = \"64\"", "[run] batch_size: expected a positive integer, got '64'"),
    ("steps = -5", "[run] steps: expected a non-negative integer"),
    ("severities = [0]", "[run] severities: expected a positive integer or a list of them"),
    ("jobs = 1.5", "[run] jobs: expected a non-negative integer"),
    ("estimators = 3", "[run] estimators: expected a name or a list of names"),
])
def test_run_table_keys_and_types(tmp_path, run_line, expected):
    path = tmp_path / "plugins.toml"
    path.write_text(f"[run]\n{run_line}\n")
    message = error_of(path)
    assert message.startswith(str(path)) and expected in message


@pytest.mark.parametrize("assignment, expected", [
    ("adaptr.rdumb.lr=0.1", "unknown section 'adaptr'; did you mean 'adapter'?"),
    ("adapter.rdumb.lrr=0.1", "unknown parameter of adapter rdumb 'lrr'; did you mean 'lr'?"),
    ("run.sead=1", "unknown key 'sead'; did you mean 'seed"),
    ("estimator.enigma.checkpoints=[0, 1.5]", "[estimator.enigma] checkpoints: expected list of int"),
    ("adapter.rdumb=3", "[adapter.rdumb]: must be a table of parameters, got 3"),
])
def test_set_paths_that_match_nothing(tmp_path, assignment, expected):
    path = config_file(tmp_path, "")
    message = error_of(path, assignment)
    assert message.startswith(f"--set {assignment}: ") and expected in message


def test_valid_file_and_sets_pass(tmp_path):
    from ttabench.config_schema import validate

    path = config_file(tmp_path, '[adapter.rdumb]\nlr = 0.01\nd_margin = "reference"\n'
                                 "[estimator.enigma]\ncheckpoints = [0, 5]\n"
                                 '[suite.imagefolder]\nroot = "x"\nsplits = "a,b"\n'
                                 "[executor.ray]\nnum_gpus = 0.25\n[quick.run]\nseeds = [1]\n")
    validate(load_config(path, overrides=["adapter.eata.fisher_alpha=100",
                                          "estimator.enigma-unweighted.probe_size=64",
                                          "suite.imagenetc.severities=[1, 2]"]))


def test_fits_and_describe_follow_annotations():
    from collections.abc import Iterable
    from typing import Literal

    from ttabench.config_schema import describe, fits

    assert fits(3, float) and fits(3.5, float) and fits(True, float) is False
    assert fits("x", int) is False and fits([1, 2], Iterable[int]) and not fits([1, "a"], Iterable[int])
    assert fits("batch", str | Iterable[str]) and fits("reference", float | str | None)
    assert fits("b", Literal["a", "b"]) and fits("c", Literal["a", "b"]) is False
    assert fits({"a": 1}, object) is None  # cannot tell: left to the plugin
    assert describe(float | str | None) == "float | str | None"
    assert describe(Iterable[int]) == "list of int"


def test_plugin_parameters_follow_forwarded_keywords():
    from ttabench.config_schema import plugin_parameters
    from ttabench_enigma.adapters import EATA, RDumb
    from ttabench_enigma.estimator import UnweightedFlips

    assert set(plugin_parameters(UnweightedFlips, 0)) >= {"probe_size", "checkpoints", "weighted"}
    rdumb = plugin_parameters(RDumb, 1)
    assert "model" not in rdumb and {"lr", "reset_every", "norms"} <= set(rdumb)
    assert "fisher_data" not in plugin_parameters(EATA, 1)  # the host hands it over


@pytest.mark.parametrize("text, sets, expected", [
    ("[estimatr.enigma]\nprobe_size = 64\n", [], "did you mean 'estimator'?"),
    ("", ["adaptr.rdumb.lr=0.1"], "did you mean 'adapter'?"),
    ("sead = 3\n", [], "did you mean 'seed"),
    ("", ["run.sead=3"], "did you mean 'seed"),
    ("", ["estimator.ac.lr=0.1"], "unknown parameter of estimator ac 'lr'"),
    ("[adapter.rdumb]\nlr = \"fast\"\n", [], "[adapter.rdumb] lr: expected float, got 'fast'"),
])
def test_typos_in_a_run_are_one_line_before_any_work(tmp_path, text, sets, expected):
    path = config_file(tmp_path, text)  # "sead = 3" lands in [run]
    out = tmp_path / "out"
    args = ["run", "-e", "ac", "--config", str(path), "-o", str(out), "--n-boot", "10",
            "--set", "suite.tiny.n_examples=64"]
    line = one_line_error(CliRunner().invoke(main, [*args, *(a for s in sets for a in ("--set", s))]))
    assert expected in line and no_cells(out)


def test_the_cli_refuses_before_any_work_and_prints_what_it_overrides(tmp_path):
    path = config_file(tmp_path, "seeds = [0]\n[adapter.rdumb]\nlr = 0.01\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", "-e", "ac", "--config", str(path), "-o", str(out),
                                       "--set", "adapter.rdumb.lrr=0.5"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "did you mean 'lr'?" in lines[0] and str(path) not in lines[0]
    assert not out.exists()  # nothing planned, nothing written
    ok = CliRunner().invoke(main, ["run", "-e", "ac", "-a", "rdumb", "--config", str(path),
                                   "-o", str(out), "--seed", "3", "--set", "adapter.rdumb.lr=0.5",
                                   "--set", "suite.tiny.n_examples=64", "--n-boot", "10"])
    assert ok.exit_code == 0, ok.output
    assert f"--seed 3 replaces [run] seeds = [0] of {path}" in ok.stderr
    assert f"--set adapter.rdumb.lr=0.5 replaces [adapter.rdumb] lr = 0.01 of {path}" in ok.stderr
