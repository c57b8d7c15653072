"""Every command in the README's shell blocks runs as written, or is checked as far as this
machine allows.

The README is read as a user would copy it: every line of every ``bash``/``sh``/``shell``
block (continuation lines joined, ``cmd1 && cmd2`` split, environment assignments and ``nice``
prefixes dropped, ``${VAR}`` given an example value) is a command. Each one is

1. **parsed** (all of them, fast): a ``ttabench`` command by the real click tree (the command
   exists, every option and value is accepted); a ``python`` script exists and its ``--help``
   lists every option the line uses; a ``bash`` script exists and ``bash -n`` accepts it; a
   ``pip install`` of a folder of this repository names a folder with a ``pyproject.toml``
   that declares every extra the line asks for (and a ``-c`` file exists);
2. **run** (a slow test) where that needs neither the network nor long work, from a folder
   holding a copy of the repository's ``plugins.toml`` (the README's commands are typed at the
   repository root), with the default cache: ``ttabench run`` and any command with a
   ``--dry-run`` option get ``--dry-run``; ``ls``, ``presets``, ``validate``, ``diff``,
   ``leaderboard`` and a ``fetch`` that only lists run as written (a run folder they name that
   does not exist is first made by a tiny run); a script line with ``--dry-run`` runs as
   written. A command that downloads (``fetch DATASET``) or does long work without a dry run
   (``continual``, ``estimate``, ``fit``, ``analyze``) is parsed only.

The manual's pages (``docs/**/*.md``), where the README's detail moved, are checked at the
parse level too: every ``ttabench`` command by the click tree, and every script a command
names exists.

``host/README.md``, the host's own front page, is checked at the parse level: its ``ttabench``
commands by the click tree, its ``pip install`` lines as above, and every plugin they name
(``-a``, ``-e``, ``-s``, ``-m``, ``validate KIND:NAME``) must be one the host distribution
itself registers, since they are meant to work without the plugin.

A run must exit 0, except: a line whose comment says ``refused`` must be refused (exit 2, one
``error:`` line, not one about missing data), and a command may stop with exit 2 and one ``error:`` line that names what
this machine does not have: a path the line itself gives that does not exist here (the
user's data, ``/data``, ``my-f.json``) or the ``ttabench fetch`` command for missing data or
weights. A plugin the README defines (its ``[project.entry-points...]`` TOML block and the
Python block holding the class it names) is installed for the run, as a reader's distribution
would be, so ``ttabench validate`` on it runs as written.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from ttabench import registry
from ttabench.cli import main
from fake_distribution import installed

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HOST_README = ROOT / "host" / "README.md"
SHELLS = ("bash", "sh", "shell", "console")
#: Example values of the shell variables the README's commands use.
VARIABLES = {"SLURM_ARRAY_TASK_ID": "1"}
TTABENCH = ("ttabench", ".venv/bin/ttabench")
PYTHON = ("python", "python3", ".venv/bin/python")
PIP = ("pip", "pip3", ".venv/bin/pip")
#: Commands that only read (run as written) and commands that run long with no dry run.
READ_ONLY = {"ls", "presets", "validate", "diff", "leaderboard"}
DOWNLOADS = {"fetch", "fetch-model"}


@dataclass(frozen=True)
class Command:
    """One command of a README shell block."""

    line: str
    argv: tuple[str, ...]
    comment: str

    @property
    def program(self) -> str:
        return self.argv[0]


def blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    """The fenced code blocks of ``text`` whose info string is one of ``languages``."""
    pattern = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
    return [m.group(2) for m in pattern.finditer(text) if m.group(1) in languages]


def _expand(line: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in VARIABLES:
            raise AssertionError(f"README uses ${name}: give it an example value in VARIABLES")
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, line)


def _strip_prefixes(argv: list[str]) -> list[str]:
    """Drop ``NAME=value`` assignments and ``nice -n N`` before the program."""
    while argv:
        if re.fullmatch(r"\w+=\S*", argv[0]):
            argv = argv[1:]
        elif argv[0] == "nice":
            argv = argv[3:] if argv[1:2] == ["-n"] else argv[1:]
        else:
            return argv
    return argv


def _split_comment(line: str) -> tuple[str, str]:
    """(the command, its trailing comment): the first `` #`` outside quotes starts it."""
    for match in re.finditer(r"\s#", line):
        try:
            shlex.split(line[:match.start()])
        except ValueError:  # inside a quotation
            continue
        return line[:match.start()], line[match.end():].strip()
    return line, ""


def commands(text: str) -> list[Command]:
    """Every command of every shell block of ``text``."""
    out = []
    for block in blocks(text, SHELLS):
        joined = re.sub(r"\\\n\s*", " ", block)
        for raw in joined.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            code, comment = _split_comment(line)
            tokens = shlex.split(_expand(code))
            part: list[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", ";", "||"):
                    if part:
                        out.append(Command(line, tuple(_strip_prefixes(part)), comment))
                    part = []
                else:
                    part.append(token)
    return out


README_COMMANDS = commands(README.read_text(encoding="utf-8"))
HOST_COMMANDS = commands(HOST_README.read_text(encoding="utf-8"))


def _split_global(args: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    """``ttabench`` arguments -> (global options, command name, the command's arguments)."""
    takes_value = {flag for p in main.params if isinstance(p, click.Option) and not p.is_flag
                   for flag in p.opts}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 2 if args[i] in takes_value else 1
    assert i < len(args), f"no command in: ttabench {' '.join(args)}"
    return list(args[:i]), args[i], list(args[i + 1:])


def resolve(args: tuple[str, ...]) -> tuple[click.Command, str, list[str]]:
    """Parse a ``ttabench`` command line with the real click tree (nothing is invoked)."""
    global_args, name, rest = _split_global(args)
    parent = main.make_context("ttabench", [*global_args, name])
    command = main.get_command(parent, name)
    assert command is not None, f"ttabench has no command {name!r}"
    with command.make_context(name, list(rest), parent=parent):
        pass
    return command, name, rest


def _has_dry_run(command: click.Command) -> bool:
    return any(isinstance(p, click.Option) and "--dry-run" in p.opts for p in command.params)


def _ids(cmds: list[Command]) -> list[str]:
    return [" ".join(c.argv)[:70] for c in cmds]


# --------------------------------------------------------------------------- extraction


def test_the_readme_has_commands_of_each_kind():
    programs = {c.program for c in README_COMMANDS}
    assert programs & set(TTABENCH), programs
    assert all(p in (*TTABENCH, *PYTHON, *PIP, "bash") for p in programs), \
        f"a README command this test cannot check: {programs}"


def test_extraction_joins_lines_splits_chains_and_reads_comments():
    text = ("intro\n```bash\n# a comment\nbash .ci/setup && .venv/bin/ttabench run -e x  # runs\n"
            "OMP_NUM_THREADS=1 nice -n 10 python b.py \\\n    --flag 'a b'\n"
            "ttabench run --shard ${SLURM_ARRAY_TASK_ID}/8   # refused: no\n```\n"
            "```python\nttabench ls\n```\n")
    assert [(c.argv, c.comment) for c in commands(text)] == [
        (("bash", ".ci/setup"), "runs"),
        ((".venv/bin/ttabench", "run", "-e", "x"), "runs"),
        (("python", "b.py", "--flag", "a b"), ""),
        (("ttabench", "run", "--shard", "1/8"), "refused: no"),
    ]


# --------------------------------------------------------------------------- tier 1: parse


@pytest.mark.parametrize("cmd", [c for c in README_COMMANDS if c.program in TTABENCH],
                         ids=_ids([c for c in README_COMMANDS if c.program in TTABENCH]))
def test_ttabench_commands_parse(cmd):
    resolve(cmd.argv[1:])


def test_parsing_refuses_what_the_cli_does_not_accept():
    with pytest.raises(click.UsageError, match="--seeed"):
        resolve(("run", "--seeed", "1"))
    with pytest.raises(click.BadParameter):
        resolve(("run", "--executor", "slurm"))
    with pytest.raises(AssertionError, match="no command 'runn'"):
        resolve(("runn",))


def pip_arguments(cmd: Command) -> list[str] | None:
    """The arguments of a pip command (``pip ...`` or ``python -m pip ...``), else None."""
    if cmd.program in PIP:
        return list(cmd.argv[1:])
    if cmd.program in PYTHON and cmd.argv[1:3] == ("-m", "pip"):
        return list(cmd.argv[3:])
    return None


def check_pip(args: list[str], root: Path) -> None:
    """A ``pip install`` of this repository's folders: each local requirement ``path[extras]``
    is a folder with a ``pyproject.toml`` declaring those extras; a ``-c``/``-r`` file exists."""
    assert args[:1] == ["install"], f"pip {' '.join(args)}: only pip install is checked"
    rest = args[1:]
    for i, arg in enumerate(rest):
        if arg in ("-c", "-r", "--constraint", "--requirement"):
            assert (root / rest[i + 1]).is_file(), f"pip {arg} {rest[i + 1]}: no such file"
        if arg.startswith("-") or (i and rest[i - 1] in ("-c", "-r")):
            continue
        match = re.fullmatch(r"([./][^\[]*)(?:\[([\w,-]+)\])?", arg)
        if match is None:
            continue  # a requirement from a registry: nothing local to check
        folder = root / match.group(1)
        assert (folder / "pyproject.toml").is_file(), f"pip install {arg}: no pyproject.toml"
        declared = tomllib.loads((folder / "pyproject.toml").read_text())["project"].get(
            "optional-dependencies", {})
        for extra in filter(None, (match.group(2) or "").split(",")):
            assert extra in declared, f"pip install {arg}: {match.group(1)} has no extra {extra!r}"


@functools.cache
def script_help(script: Path) -> str:
    """A script's ``--help`` text (once per script: each run imports torch)."""
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                            text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _python_script(cmd: Command) -> tuple[Path, list[str]]:
    script = ROOT / cmd.argv[1]
    assert script.suffix == ".py" and script.is_file(), f"no script {cmd.argv[1]}"
    return script, list(cmd.argv[2:])


SCRIPTS = [c for c in README_COMMANDS if c.program in PYTHON and pip_arguments(c) is None]
PIPS = [c for c in README_COMMANDS if pip_arguments(c) is not None]


@pytest.mark.parametrize("cmd", SCRIPTS, ids=_ids(SCRIPTS))
def test_python_scripts_exist_and_take_the_options_used(cmd):
    script, args = _python_script(cmd)
    usage = script_help(script)
    for option in (a.split("=")[0] for a in args if a.startswith("--")):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", usage), \
            f"{script.name} --help does not list {option}"


def test_pip_installs_name_folders_and_extras_that_exist():
    for cmd in PIPS:  # none in today's README's shell blocks
        check_pip(pip_arguments(cmd), ROOT)


def test_pip_check_refuses_an_extra_the_folder_does_not_declare():
    check_pip(["install", "-e", "./host[ray,test]", "-c", ".ci/constraints.txt"], ROOT)
    check_pip(["install", "ttabench[ray]"], ROOT)  # from a registry: not checked here
    with pytest.raises(AssertionError, match="has no extra 'ray'"):
        check_pip(["install", ".[ray]"], ROOT)
    with pytest.raises(AssertionError, match="no pyproject.toml"):
        check_pip(["install", "-e", "./docs"], ROOT)


@pytest.mark.parametrize("cmd", [c for c in README_COMMANDS if c.program == "bash"],
                         ids=_ids([c for c in README_COMMANDS if c.program == "bash"]))
def test_bash_scripts_exist_and_parse(cmd):
    script = ROOT / cmd.argv[1]
    assert script.is_file(), f"no script {cmd.argv[1]}"
    assert subprocess.run(["bash", "-n", str(script)], timeout=60).returncode == 0


# --------------------------------------------------------------------------- docs/

DOCS_COMMANDS = [(page.relative_to(ROOT).as_posix(), cmd)
                 for page in sorted((ROOT / "docs").rglob("*.md"))
                 for cmd in commands(page.read_text(encoding="utf-8"))]
#: Programs of the manual's shell blocks that are not checked here (the site's own tools).
DOCS_UNCHECKED = (".venv/bin/mkdocs", "mkdocs")


def unchecked_docs_command(cmd: Command) -> str | None:
    """Why a command of the manual does not parse or names no existing script, else None."""
    try:
        if cmd.program in TTABENCH:
            resolve(cmd.argv[1:])
        elif pip_arguments(cmd) is not None:
            check_pip(pip_arguments(cmd), ROOT)
        elif cmd.program in (*PYTHON, "bash"):
            assert (ROOT / cmd.argv[1]).is_file(), f"no script {cmd.argv[1]}"
        elif cmd.program not in DOCS_UNCHECKED:
            return f"a program this test cannot check: {cmd.program}"
    except (AssertionError, click.ClickException) as err:
        return str(err)
    return None


def test_the_manuals_commands_parse():
    assert len(DOCS_COMMANDS) > 20
    problems = [f"{page}: {cmd.line}: {why}" for page, cmd in DOCS_COMMANDS
                if (why := unchecked_docs_command(cmd)) is not None]
    assert not problems, "\n".join(problems)


def test_a_manual_command_that_does_not_parse_is_caught():
    for line in ("ttabench run --severities 3,4,5", "python benchmarks/nope.py --dry-run",
                 "ttabench runn"):
        cmd = commands(f"```bash\n{line}\n```\n")[0]
        assert unchecked_docs_command(cmd) is not None, line


# --------------------------------------------------------------------------- host/README.md

#: The options whose values name plugins, and the kind each names.
PLUGIN_OPTIONS = {"-a": "adapters", "--adapter": "adapters", "-e": "estimators",
                  "--estimator": "estimators", "-s": "suites", "--suite": "suites",
                  "-m": "models", "--model": "models"}


def named_plugins(args: tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, name) of every plugin a ``ttabench`` command line names."""
    named = []
    for option, value in zip(args, args[1:]):
        if option in PLUGIN_OPTIONS:
            kind = PLUGIN_OPTIONS[option]
            for name in value.split(","):
                named.append((kind, registry.model_spec(name)[0] if kind == "models" else name))
    if args[:1] == ("validate",) and ":" in args[1]:
        kind, _, name = args[1].partition(":")
        named.append((kind, name))
    return named


def not_the_hosts(cmd: Command) -> list[str]:
    """The plugins a command names that the ``ttabench`` distribution does not register."""
    return [f"{kind}:{name}" for kind, name in named_plugins(cmd.argv[1:])
            if registry.info(kind, name).distribution != "ttabench"]


def test_the_host_readme_has_commands_and_each_parses():
    host = [c for c in HOST_COMMANDS if c.program in TTABENCH]
    assert host and any(c.argv[1:2] == ("run",) for c in host)
    assert {c.program for c in HOST_COMMANDS} <= {*TTABENCH, *PIP}
    for cmd in host:
        resolve(cmd.argv[1:])
    for cmd in HOST_COMMANDS:
        if pip_arguments(cmd) is not None:
            check_pip(pip_arguments(cmd), ROOT)


def test_the_host_readme_names_only_the_hosts_own_plugins():
    for cmd in HOST_COMMANDS:
        if cmd.program in TTABENCH:
            assert not not_the_hosts(cmd), (cmd.line, not_the_hosts(cmd))


def test_a_plugin_command_in_the_host_readme_would_be_caught():
    line = "ttabench run -s tiny -m tiny-cnn:1 -a rdumb -e ac,enigma"
    cmd = Command(line, tuple(line.split()), "")
    assert named_plugins(cmd.argv[1:]) == [("suites", "tiny"), ("models", "tiny-cnn"),
                                           ("adapters", "rdumb"), ("estimators", "ac"),
                                           ("estimators", "enigma")]
    assert not_the_hosts(cmd) == ["adapters:rdumb", "estimators:enigma"]


# --------------------------------------------------------------------------- tier 2: run


def readme_plugins(text: str) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The plugins the README defines: the entry points of its TOML blocks, and for each
    ``module:Class`` the Python block that defines the class (module name -> source)."""
    groups: dict[str, dict[str, str]] = {}
    for block in blocks(text, ("toml",)):
        try:
            points = tomllib.loads(block).get("project", {}).get("entry-points", {})
        except tomllib.TOMLDecodeError:
            continue
        for group, entries in points.items():
            groups.setdefault(group, {}).update(entries)
    sources = blocks(text, ("python",))
    modules = {}
    for entries in groups.values():
        for target in entries.values():
            module, _, attr = target.partition(":")
            source = next((s for s in sources if re.search(rf"^class {attr}\b", s, re.M)), None)
            assert source is not None, f"README registers {target}, but defines no {attr}"
            modules[module] = source
    return groups, modules


@pytest.fixture
def sandbox(tmp_path, monkeypatch, config):
    """A working folder like the repository root (its ``plugins.toml``), the default cache,
    and the README's own plugins installed."""
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy(ROOT / "plugins.toml", folder / "plugins.toml")
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.chdir(folder)
    for name in ("TTABENCH_CACHE_DIR", "TTABENCH_DATA_DIR", "TTABENCH_FETCH_MIRROR"):
        monkeypatch.delenv(name, raising=False)  # the user's defaults, as the README means
    groups, modules = readme_plugins(README.read_text(encoding="utf-8"))
    with installed(monkeypatch, site, "readme-plugins", "0.0", groups, modules):
        yield folder


def _invoke(args: list[str]) -> click.testing.Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _tiny_run(folder: Path, config: Path, seed: int) -> None:
    result = _invoke(["run", "--config", str(config), "-s", "tiny", "-m", "tiny-cnn", "-e", "ac",
                      "--severities", "1", "--n-examples", "64", "--jobs", "1",
                      "--seed", str(seed), "-o", str(folder)])
    assert result.exit_code == 0, result.output


def _acceptable_stop(cmd: Command, output: str, work: Path) -> bool:
    """Exit 2 with one ``error:`` line naming what this machine lacks (see the docstring)."""
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    if len(errors) != 1:
        return False
    missing = [a for a in cmd.argv if ("/" in a or a.endswith(".json"))
               and not a.startswith("-") and not (work / a).exists()]
    return "ttabench fetch" in errors[0] or any(a.rstrip("/") in errors[0] for a in missing)


def _run_ttabench(cmd: Command, work: Path, config: Path) -> tuple[int, str] | None:
    """Run one ``ttabench`` command as the module docstring says; None: parse only."""
    command, name, rest = resolve(cmd.argv[1:])
    args = list(cmd.argv[1:])
    if _has_dry_run(command):
        args += [] if "--dry-run" in args else ["--dry-run"]
    elif name in DOWNLOADS:
        if rest:
            return None  # it would download
    elif name not in READ_ONLY:
        return None  # long work with no dry run
    if name in ("diff", "leaderboard"):
        for seed, path in enumerate(a for a in rest if a.startswith("runs/")):
            if not (work / path).exists() and not Path(path).suffix:
                _tiny_run(work / path, config, seed)
    result = _invoke(args)
    return result.exit_code, result.output


@pytest.mark.slow
def test_readme_commands_run_as_written(sandbox, config):
    ran, parsed = [], []
    for cmd in README_COMMANDS:
        if cmd.program in TTABENCH:
            outcome = _run_ttabench(cmd, sandbox, config)
        elif cmd in SCRIPTS and "--dry-run" in cmd.argv:
            script, args = _python_script(cmd)
            done = subprocess.run([sys.executable, str(script), *args], capture_output=True,
                                  text=True, cwd=ROOT, timeout=600,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
            outcome = (done.returncode, done.stdout + done.stderr)
        else:
            outcome = None
        if outcome is None:
            parsed.append(cmd)
            continue
        code, output = outcome
        ran.append(cmd)
        if cmd.comment.startswith("refused"):  # for its own reason, not for missing data
            assert code == 2 and output.count("error: ") == 1, (cmd.line, output)
            assert not _acceptable_stop(cmd, output, sandbox), (cmd.line, output)
        elif code != 0:
            assert code == 2 and _acceptable_stop(cmd, output, sandbox), (cmd.line, code, output)
    assert ran, "no README command could be run here"
    print(f"{len(ran)} README commands run, {len(parsed)} parsed only:",
          *(" ".join(c.argv) for c in parsed), sep="\n  ")


@pytest.mark.slow
def test_a_command_that_no_longer_runs_is_caught(sandbox, config):
    """The checks above fail on a README command that the code refuses for its own reasons."""
    typo = Command("ttabench run --set adapter.rdumb.lrr=1", ("ttabench", "run", "--set",
                   "adapter.rdumb.lrr=1"), "")
    code, output = _run_ttabench(typo, sandbox, config)
    assert code == 2 and not _acceptable_stop(typo, output, sandbox)
    unknown = Command("ttabench validate estimators:nope",
                      ("ttabench", "validate", "estimators:nope"), "")
    code, output = _run_ttabench(unknown, sandbox, config)
    assert code == 2 and not _acceptable_stop(unknown, output, sandbox)
    data = Command("ttabench run -s cifar10c --data-dir /data",
                   ("ttabench", "run", "-s", "cifar10c", "--data-dir", "/nonexistent-data"), "")
    code, output = _run_ttabench(data, sandbox, config)
    assert code == 2 and _acceptable_stop(data, output, sandbox), output
