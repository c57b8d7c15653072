"""Tables generated from the code, placed into hand-written pages.

A page holds a marker ``<!-- generated: NAME -->`` on a line of its own; the build replaces it
with ``SNIPPETS[NAME]()`` (an unknown name stops the build). The table then follows the code
it is read from, while the prose around it stays hand-written.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from docsite.markdown import code, escape, table

MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.MULTILINE)


def shift_datasets() -> str:
    """The Table-1 datasets of the suite ``imagenet-shift`` (``ttabench.suites.shifts``)."""
    from ttabench.suites.shifts import SHIFTS

    rows = []
    for shift in SHIFTS.values():
        options = shift.options
        where = options.get("root") or options.get("corruption_set") or shift.reader
        rows.append((escape(shift.row), code(shift.key), str(shift.splits),
                     f"{code(shift.reader)}, {code(str(where))}", code(shift.published),
                     escape(shift.convention)))
    return "\n".join(table(("Table-1 row", "key", "splits", "reader, folder", "published at",
                            "label space and conventions"), rows))


SNIPPETS: dict[str, Callable[[], str]] = {"shift-datasets": shift_datasets}


class SnippetError(Exception):
    """A marker names no snippet."""


def expand(markdown: str) -> str:
    """Replace every marker in a page by its generated table."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in SNIPPETS:
            raise SnippetError(f"unknown generated snippet {name!r}; known: "
                               + ", ".join(SNIPPETS))
        return SNIPPETS[name]()

    return MARKER.sub(replace, markdown)
