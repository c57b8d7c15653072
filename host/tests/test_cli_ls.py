"""The CLI shell: ``ls``, ``validate``, lazy subcommands and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_distribution import make_dist

from ttabench import cli, registry

ROOT = Path(__file__).resolve().parents[1]

TOY_MODULE = '''
import click
import torch
from ttabench.adapters import SourceAdapter
from ttabench.errors import TTABenchError

class Drifting(SourceAdapter):
    """Adapts its bias every step and never restores it: reset is broken."""
    name = "drifting"
    def forward(self, x):
        with torch.no_grad():
            self.model.net.fc.bias.add_(0.1)
        return self.model(x)

@click.command()
@click.argument("what")
def hello(what):
    """Say hello."""
    click.echo(f"hello {what}")

@click.command()
@click.argument("kind")
def fails(kind):
    if kind == "user":
        raise TTABenchError("no data under /nowhere; pass --data-dir")
    if kind == "interrupt":
        raise KeyboardInterrupt
    raise RuntimeError("boom\\nsecond line")
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path holding toy plugin modules; registry state reset around the test."""
    (tmp_path / "clitoys.py").write_text(TOY_MODULE)
    (tmp_path / "clibroken.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(registry.AUTOLOAD_ENV, raising=False)
    registry.refresh(keep_explicit=False)
    yield tmp_path
    registry.refresh(keep_explicit=False)
    for name in ("clitoys", "clibroken"):
        sys.modules.pop(name, None)


def invoke(*args: str):
    return CliRunner().invoke(cli.main, list(args))


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_ls_json_lists_the_host_builtins(site):
    result = invoke("ls", "--json", "--check")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    expected = {(group.split(".")[1], n) for group, e in data.items() for n in e
                if group != "ttabench.presets"}  # preset folders are data, not plugins
    assert {(r["kind"], r["name"]) for r in rows if r["distribution"] == "ttabench"} == expected
    for row in rows:
        assert set(row) == {"kind", "name", "target", "distribution", "version", "status",
                            "description"}
        assert row["status"] == "ok" or row["status"].startswith("broken: ")
    estimators = {r["name"] for r in rows if r["kind"] == "estimators"}
    assert {"ac", "aetta"} <= estimators  # host built-ins
    by_name = {(r["kind"], r["name"]): r for r in rows}
    assert by_name[("suites", "tiny")]["status"] == "ok"


def test_ls_one_kind(site):
    result = invoke("ls", "adapter", "--json")
    assert result.exit_code == 0
    assert {r["kind"] for r in json.loads(result.stdout)} == {"adapters"}


def test_ls_table_shows_a_broken_plugin(site):
    make_dist(site, "broken-dist", "0.9", {"ttabench.estimators": {"wobbly": "clibroken:Thing"}})
    result = invoke("ls", "estimators", "--check")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["name", "kind", "target", "distribution", "version", "status",
                              "description"]
    row = next(r for r in rows if r.startswith("wobbly "))
    assert row.split(None, 5) == [
        "wobbly", "estimators", "clibroken:Thing", "broken-dist", "0.9",
        "broken: ImportError: needs libfoo  -",
    ]


def test_ls_and_help_import_no_plugin_and_describe_from_source(site):
    """Without --check nothing is imported (no torch); each description is the first line of
    the docstring the imported object carries."""
    code = ("import sys; from click.testing import CliRunner; from ttabench import cli\n"
            "for args in (['--help'], ['ls'], ['ls', '--json']):\n"
            "    assert CliRunner().invoke(cli.main, args).exit_code == 0\n"
            "heavy = [m for m in ('torch', 'sklearn', 'matplotlib', 'ttabench_enigma.adapters')\n"
            "         if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    rows = {(r["kind"], r["name"]): r for r in json.loads(invoke("ls", "--json").stdout)}
    assert all(r["status"] == "not loaded" for r in rows.values())
    for key in (("adapters", "source"), ("estimators", "cot"), ("suites", "mnist-c")):
        obj = registry.get(*key)
        doc = (getattr(obj, "callback", None) or obj).__doc__
        assert rows[key]["description"] == doc.strip().splitlines()[0].strip()
    assert "Alias of `ttabench run --stream continual`" in invoke("--help").stdout


def test_unknown_command_and_plugin_are_one_line_exit_2(site):
    result = invoke("lss")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: unknown command 'lss'; did you mean 'ls'?")
    result = invoke("validate", "estimators:acc")
    assert result.exit_code == 2
    assert one_error_line(result).startswith(
        "error: unknown estimator 'acc'; did you mean 'ac'? available: "
    )
    result = invoke("ls", "widgets")
    assert result.exit_code == 2
    assert one_error_line(result).startswith("error: unknown plugin kind 'widgets'")
    result = invoke("--plugin", "nowhere_module:X", "ls")
    assert result.exit_code == 2
    assert "ModuleNotFoundError" in one_error_line(result)


def test_lazy_builtin_command_failing_to_import(site, monkeypatch):
    monkeypatch.setitem(cli.BUILTIN_COMMANDS, "ghost", "clibroken:ghost")
    monkeypatch.setitem(cli.BUILTIN_COMMANDS, "greet", "clitoys:hello")
    result = invoke("ghost", "--some-option", "x")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        "error: command 'ghost' (clibroken:ghost) failed to load: ImportError: needs libfoo"
    )
    result = invoke("greet", "world")
    assert (result.exit_code, result.stdout) == (0, "hello world\n")
    assert "ghost" in invoke("--help").stdout  # the help listing survives a broken command


def test_plugin_commands_and_error_exits(site):
    make_dist(
        site, "cmd-dist", "0.9", {"ttabench.commands": {"hello": "clitoys:hello", "fails": "clitoys:fails"}}
    )
    result = invoke("hello", "there")
    assert (result.exit_code, result.stdout) == (0, "hello there\n")
    result = invoke("fails", "user")
    assert result.exit_code == 2
    assert one_error_line(result) == "error: no data under /nowhere; pass --data-dir"
    result = invoke("fails", "interrupt")
    assert result.exit_code == 130
    assert one_error_line(result) == "error: interrupted"
    result = invoke("fails", "other")
    assert result.exit_code == 1
    assert one_error_line(result) == "error: RuntimeError: boom second line"
    result = invoke("--debug", "fails", "other")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and result.stderr.endswith(
        "error: RuntimeError: boom second line\n"
    )


def test_validate_passes_builtin_and_fails_broken_toy(site):
    result = invoke("validate", "tiny")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "suites:tiny: all 6 checks passed"
    assert all(line.startswith("ok") for line in lines[:-1])

    result = invoke("validate", "clitoys:Drifting")
    assert result.exit_code == 1
    status = {line.split()[1].rstrip(":"): line.split()[0] for line in result.stdout.splitlines()}
    assert status["reset"] == "FAIL" and status["forward"] == "ok"
    assert "reset did not restore: ['model.net.fc.bias']" in result.stdout

    result = invoke("--plugin", "clitoys:Drifting", "validate", "adapters:drifting")
    assert result.exit_code == 1
    assert "FAIL  reset" in result.stdout
