"""Tables generated from the code, placed into hand-written pages.

A page holds a marker ``<!-- generated: NAME -->`` (or ``<!-- generated: NAME ARGUMENT -->``)
on a line of its own; the build replaces it with ``SNIPPETS[NAME]()`` (or
``SNIPPETS[NAME](ARGUMENT)``); an unknown name stops the build. The table then follows the code
it is read from, while the prose around it stays hand-written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from docsite.markdown import code, escape, table

MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+)(?: ([\w.+-]+))? -->$", re.MULTILINE)


def shift_datasets() -> str:
    """The Table-1 datasets of the suite ``imagenet-shift`` (``ttabench.suites.shifts``)."""
    from ttabench.suites.shifts import SHIFTS

    rows = []
    for shift in SHIFTS.values():
        options = shift.options
        where = options.get("root") or options.get("corruption_set") or shift.reader
        rows.append((f"{escape(shift.row)} ({code(shift.key)})", str(shift.splits),
                     f"{code(shift.reader)} from {code(str(where))}",
                     f"{escape(shift.convention)}; published at {escape(shift.published)}"))
    return "\n".join(table(("Table-1 row (key)", "splits", "read by", "label space, "
                            "conventions, where published"), rows))


def first_sentence(text: str) -> str:
    """The first sentence of a text's first paragraph, its lines joined."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    head, dot, _ = paragraph.partition(". ")
    return head + "." if dot else paragraph


def plugins(distribution: str) -> str:
    """Every plugin ``distribution`` registers: name, kind, and its one-line description."""
    import click

    from docsite.config_reference import summary
    from ttabench import registry

    rows = []
    for info in registry.list_plugins(load=False):
        if info.distribution == distribution:
            obj = registry.get(info.kind, info.name)
            text = first_sentence(obj.help or "") if isinstance(obj, click.Command) \
                else summary(obj)
            rows.append((code(info.name), info.kind[:-1].replace("_", " "), escape(text)))
    if not rows:
        raise SnippetError(f"no plugin of distribution {distribution!r} is installed")
    return "\n".join(table(("name", "kind", "what it is"), rows))


SNIPPETS: dict[str, Callable[..., str]] = {"shift-datasets": shift_datasets, "plugins": plugins}


class SnippetError(Exception):
    """A marker names no snippet."""


def expand(markdown: str) -> str:
    """Replace every marker in a page by its generated table."""
    def replace(match: re.Match[str]) -> str:
        name, argument = match.group(1), match.group(2)
        if name not in SNIPPETS:
            raise SnippetError(f"unknown generated snippet {name!r}; known: "
                               + ", ".join(SNIPPETS))
        return SNIPPETS[name](argument) if argument else SNIPPETS[name]()

    return MARKER.sub(replace, markdown)
