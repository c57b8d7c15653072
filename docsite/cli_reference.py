"""The command-line reference, read from the click command tree of ``ttabench``.

Every command the ``ttabench`` group lists is documented: the host's own and lazily imported
ones (``ttabench.cli.BUILTIN_COMMANDS``) and those registered by an entry point of group
``ttabench.commands`` (the host's ``continual``, a plugin's ``analyze``), each with the
distribution that provides it. Each option is shown as ``--help`` shows it (its flags,
metavar, help and default), so the page says what the installed code accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from docsite.markdown import code, escape, paragraphs, table

PROGRAM = "ttabench"


@dataclass(frozen=True)
class CommandDoc:
    """One command: its name, the click object, and who provides it."""

    name: str
    command: click.Command
    provider: str


class ReferenceError(Exception):
    """A command cannot be documented (it failed to import)."""


def root() -> click.Group:
    """The ``ttabench`` group."""
    from ttabench.cli import main

    return main


def commands() -> list[CommandDoc]:
    """Every subcommand of ``ttabench``, sorted by name, each resolved (imported)."""
    from ttabench import registry
    from ttabench.cli import BUILTIN_COMMANDS

    group = root()
    ctx = click.Context(group, info_name=PROGRAM)
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or (command.help or "").startswith("(unavailable)"):
            detail = command.help if command is not None else "not found"
            raise ReferenceError(f"command '{name}' cannot be documented: {detail}")
        if name in group.commands or name in BUILTIN_COMMANDS:
            provider = "built into `ttabench`"
        else:
            info = registry.info("commands", name)
            provider = (f"entry point `{name} = {info.target}` of group `ttabench.commands`, "
                        f"distribution `{info.distribution or 'none'}`")
        out.append(CommandDoc(name, command, provider))
    return out


def _usage(command: click.Command, ctx: click.Context) -> str:
    pieces = command.collect_usage_pieces(ctx)
    return " ".join([ctx.command_path, *pieces])


def _option_rows(command: click.Command, ctx: click.Context) -> list[tuple[str, str]]:
    rows = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
        if record is None:  # an argument (named in the usage line) or a hidden option
            continue
        flags, text = record
        rows.append((code(flags), escape(" ".join(text.split()))))
    return rows


def option_names(command: click.Command, ctx: click.Context) -> list[str]:
    """Every flag of every option (``-e``, ``--estimator``...), as the page lists them."""
    names = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Option):
            names += [*param.opts, *param.secondary_opts]
    return names


def _section(title: str, anchor: str, command: click.Command, ctx: click.Context,
             provider: str | None) -> list[str]:
    lines = [f"## {code(title)} {{#{anchor}}}", ""]
    if provider:
        lines += [f"Provided by: {provider}.", ""]
    lines += paragraphs(command.help or "")
    lines += ["```text", _usage(command, ctx), "```", ""]
    rows = _option_rows(command, ctx)
    if rows:
        lines += table(("option", "description"), rows)
        lines.append("")
    return lines


def anchor(name: str | None) -> str:
    """The page anchor of a command (``None``: the group itself)."""
    return "ttabench" if name is None else f"ttabench-{name}"


def page() -> str:
    """The Markdown of the CLI reference page."""
    group = root()
    group_ctx = click.Context(group, info_name=PROGRAM)
    docs = commands()
    lines = [
        "# Command-line reference",
        "",
        "Generated from the installed `ttabench` command tree when this site was built "
        "(`docsite/cli_reference.py`): every command, built in or added by a plugin's entry "
        "point, with the options `--help` shows. Global options come before the command "
        "name (`ttabench --debug run ...`).",
        "",
        *table(("command", "what it does"),
               [(f"[{code(PROGRAM + ' ' + d.name)}](#{anchor(d.name)})",
                 escape(d.command.get_short_help_str(limit=120))) for d in docs]),
        "",
    ]
    lines += _section(PROGRAM, anchor(None), group, group_ctx, None)
    for doc in docs:
        ctx = click.Context(doc.command, info_name=doc.name, parent=group_ctx)
        lines += _section(f"{PROGRAM} {doc.name}", anchor(doc.name), doc.command, ctx,
                          doc.provider)
    return "\n".join(lines) + "\n"
