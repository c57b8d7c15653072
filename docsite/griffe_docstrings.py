"""A Griffe extension: the project's reST-flavoured docstrings, readable as Markdown.

The docstrings use three reST forms that Markdown would garble; each is fenced as a literal
block before mkdocstrings renders the docstring (``extensions`` in ``mkdocs.yml``):

- doctest runs (lines from ``>>>`` to the next blank line) become a ``pycon`` block;
- simple tables (a line of ``=`` runs, the header, another such line, the rows, a closing
  line) become a ``text`` block, kept as written;
- a literal block after a paragraph ending in ``::`` becomes a ``text`` block, and the ``::``
  a ``:``.

Double-backtick literals need nothing: Markdown reads ````x```` as code too.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_TABLE_RULE = re.compile(r"^\s*=+( +=+)+\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def fence_rest(text: str) -> str:
    """The docstring with its doctests, simple tables and ``::`` blocks fenced."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith(">>>"):
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            out += ["```pycon", *(row.strip() for row in lines[i:end]), "```"]
            i = end
        elif _TABLE_RULE.match(line):
            rules = 0
            end = i
            while end < len(lines) and (lines[end].strip() or rules < 3):
                rules += bool(_TABLE_RULE.match(lines[end]))
                end += 1
                if rules == 3:
                    break
            out += ["```text", *lines[i:end], "```"]
            i = end
        elif line.rstrip().endswith("::") and i + 1 < len(lines) and not lines[i + 1].strip():
            base = _indent(line)
            end = i + 2
            while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
                end += 1
            block = lines[i + 2:end]
            while block and not block[-1].strip():
                block.pop()
            head = line.rstrip()[:-1]
            out += [head if head.strip() != ":" else "", "", "```text",
                    *_dedent(block), "```", ""]
            i = end
        else:
            out.append(line)
            i += 1
    return "\n".join(out)


def _dedent(block: list[str]) -> list[str]:
    depth = min((_indent(row) for row in block if row.strip()), default=0)
    return [row[depth:] for row in block]


class RestDocstrings(griffe.Extension):
    """Fence reST forms in every docstring Griffe loads."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = fence_rest(obj.docstring.value)
