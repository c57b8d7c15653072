"""The ``ttabench`` command line: a click group whose subcommands are resolved lazily.

``ls`` and ``validate`` live here. ``run`` (and its alias ``continual``), ``estimate``,
``calibrate``, ``fit`` and ``leaderboard`` are named
by ``module:attr`` in ``BUILTIN_COMMANDS`` and imported only when invoked, and every entry point
of group ``ttabench.commands`` adds a subcommand. A subcommand that fails to import becomes a
stub that prints one ``error:`` line. ``--help`` and ``ls`` import no command or plugin: their
one-line descriptions are read from the source (``ttabench.source_docs``), so neither imports
torch; ``ls --check`` imports each plugin to report whether it loads.

Errors: a TTABenchError, or a bad option value (click's usage errors), prints ``error:
<message>`` on one line on stderr and exits 2; Ctrl-C exits 130 and SIGTERM, which stops the
same way, exits 143 (``Interrupted``: 128 + the signal number); any other exception prints
``error: <Type>: <message>`` and exits 1. ``--debug`` prints the traceback first.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import threading
import traceback
from typing import Any

import click

from ttabench import __version__, registry
from ttabench.errors import Interrupted, TTABenchError, raise_interrupted
from ttabench.source_docs import describe

BUILTIN_COMMANDS: dict[str, str] = {
    "run": "ttabench.runner.command:run",
    "continual": "ttabench.runner.command:continual",
    "estimate": "ttabench.calibrate.estimate_command:estimate",
    "calibrate": "ttabench.calibrate.command:calibrate",
    "fit": "ttabench.scoring.command:fit",
    "leaderboard": "ttabench.scoring.command:leaderboard",
    "diff": "ttabench.run_diff:diff",
    "fetch": "ttabench.fetch.command:fetch",
    "fetch-model": "ttabench.fetch.command:fetch_model",
    "presets": "ttabench.preset:presets",
}

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _broken_command(name: str, error: TTABenchError) -> click.Command:
    """A stand-in for a subcommand that failed to import: invoking it reports why."""

    def fail(**_: Any) -> None:
        raise error

    return click.Command(
        name,
        callback=fail,
        help=f"(unavailable) {error}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


class LazyGroup(click.Group):
    """A group that resolves ``BUILTIN_COMMANDS`` and plugin commands only when asked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        plugin_names = registry.names("commands")
        return sorted({*self.commands, *BUILTIN_COMMANDS, *plugin_names})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name in BUILTIN_COMMANDS:
            return self._import_builtin(cmd_name)
        if cmd_name in registry.names("commands"):
            try:
                return registry.get("commands", cmd_name)
            except TTABenchError as exc:
                return _broken_command(cmd_name, exc)
        return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``, described from source: nothing is imported."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.commands:
                text = self.commands[name].get_short_help_str(formatter.width)
            else:
                target = BUILTIN_COMMANDS.get(name) or registry.info("commands", name).target
                text = click.utils.make_default_short_help(describe(target) or "", formatter.width)
            rows.append((name, text))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def _import_builtin(self, cmd_name: str) -> click.Command:
        target = BUILTIN_COMMANDS[cmd_name]
        module_name, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{command!r} is not a click.Command")
        except Exception as exc:  # a half-installed host must still run its other commands
            message = " ".join(str(exc).split())
            error = TTABenchError(
                f"command '{cmd_name}' ({target}) failed to load: {type(exc).__name__}: {message}"
            )
            return _broken_command(cmd_name, error)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        unknown = self.get_command(ctx, name) is None and not name.startswith("-")
        if unknown and not ctx.resilient_parsing:
            raise registry.unknown_error("command", name, self.list_commands(ctx))
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug"))
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as exc:  # a bad option value: one line, exit 2
            _report(" ".join(exc.format_message().split()), debug)
            ctx.exit(EXIT_USER_ERROR)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:  # `ttabench ls | head`: the reader left, nothing to report
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(1)
        except TTABenchError as exc:
            _report(str(exc), debug)
            ctx.exit(EXIT_USER_ERROR)
        except Interrupted as exc:
            _report(str(exc), debug)
            ctx.exit(128 + exc.signum)
        except KeyboardInterrupt:
            _report("interrupted", debug)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            _report(f"{type(exc).__name__}: {' '.join(str(exc).split())}", debug)
            ctx.exit(1)


def _report(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    click.echo(f"error: {message}", err=True)


@click.group(cls=LazyGroup)
@click.option(
    "--plugin",
    "plugins",
    multiple=True,
    metavar="[KIND=]MODULE:ATTR",
    help="Register a plugin explicitly (repeatable); KIND is needed for plain functions.",
)
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(version=__version__, prog_name="ttabench")
def main(plugins: tuple[str, ...], debug: bool) -> None:
    """ttabench: test-time adaptation benchmark with label-free accuracy estimators."""
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops like Ctrl-C
        signal.signal(signal.SIGTERM, raise_interrupted)
    for spec in plugins:
        registry.add_plugin_spec(spec)


def _cell(value: str | None) -> str:
    return "-" if value is None else value


@main.command("ls")
@click.argument("kind", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--check", is_flag=True,
              help="Import every plugin: status ok or its load error (else: not loaded).")
def ls(kind: str | None, as_json: bool, check: bool) -> None:
    """List plugins (of KIND: adapters, estimators, suites, models, commands), described."""
    plugins = registry.list_plugins(registry.normalize_kind(kind) if kind else None, load=check)
    if as_json:
        keys = ("kind", "name", "target", "distribution", "version", "status")
        rows = [{**{key: getattr(p, key) for key in keys}, "description": describe(p.target)}
                for p in plugins]
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("name", "kind", "target", "distribution", "version", "status", "description")
    table = [header] + [
        (p.name, p.kind, p.target, _cell(p.distribution), _cell(p.version), p.status,
         _cell(describe(p.target)))
        for p in plugins
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        click.echo("  ".join([*cells, row[-1]]))


def _resolve_for_validation(plugin: str) -> tuple[str, str, Any]:
    """``kind:name``, a bare name, or ``module:attr`` -> (kind, label, loaded object)."""
    prefix, sep, rest = plugin.partition(":")
    if sep:
        try:
            kind = registry.normalize_kind(prefix)
        except TTABenchError:
            info = registry.add_plugin(None, plugin)
            return info.kind, plugin, registry.get(info.kind, info.name)
        return kind, f"{kind}:{rest}", registry.get(kind, rest)
    kinds = [kind for kind in registry.KINDS if plugin in registry.names(kind)]
    if len(kinds) > 1:
        choices = ", ".join(f"{k}:{plugin}" for k in kinds)
        raise TTABenchError(f"'{plugin}' names plugins of several kinds; use one of: {choices}")
    if not kinds:
        every = sorted({n for kind in registry.KINDS for n in registry.names(kind)})
        raise registry.unknown_error("plugin", plugin, every)
    return kinds[0], f"{kinds[0]}:{plugin}", registry.get(kinds[0], plugin)


def _parse_param(text: str) -> tuple[str, Any]:
    from ttabench.runner.config import parse_value  # the one value grammar: --set's

    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise TTABenchError(f"--param '{text}' is not KEY=VALUE")
    return key, parse_value(raw)


@main.command("validate")
@click.argument("plugin")
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter for the plugin (VALUE read as TOML, as --set reads it, else a string); "
         "repeatable.",
)
@click.option("--device", default="cpu",
              help="Where adapters and models are checked: cpu, cuda, cuda:N (default cpu).")
def validate(plugin: str, params: tuple[str, ...], device: str) -> None:
    """Run the conformance checks on PLUGIN (KIND:NAME, NAME or MODULE:ATTR)."""
    from ttabench.runner.preflight import resolve_device
    from ttabench.testing import run_all

    where = resolve_device(device)
    kind, label, obj = _resolve_for_validation(plugin)
    results = run_all(kind, obj, device=where, **dict(_parse_param(p) for p in params))
    for name, ok, message in results:
        click.echo(f"{'ok  ' if ok else 'FAIL'}  {name}" + (f": {message}" if message else ""))
    failed = sum(not ok for _, ok, _ in results)
    if failed:
        click.echo(f"{label}: {failed} check(s) failed", err=True)
        click.get_current_context().exit(1)
    click.echo(f"{label}: all {len(results)} checks passed")
