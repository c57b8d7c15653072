"""Text from the code, made safe for Markdown tables and paragraphs."""

from __future__ import annotations

import html
import re

_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_SPECIAL = {"|": r"\|", "<": "&lt;", ">": "&gt;", "*": r"\*", "[": r"\[", "]": r"\]",
            "_": r"\_"}


def escape(text: str) -> str:
    """Escape Markdown and HTML specials outside code spans; code spans are kept (one with a
    ``|`` as HTML, see ``code``)."""
    out, last = [], 0
    for match in _CODE_SPAN.finditer(text):
        out.append(_escape_plain(text[last:match.start()]))
        out.append(code(match.group(2).strip()) if "|" in match.group(0) else match.group(0))
        last = match.end()
    out.append(_escape_plain(text[last:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    return "".join(_SPECIAL.get(char, char) for char in text)


def code(text: str) -> str:
    """``text`` as one inline code span (backticks inside are fenced by longer runs). Text
    with a ``|`` becomes an HTML ``<code>`` element, since a table cell cannot hold a ``|``
    inside a Markdown code span."""
    if "|" in text:
        return "<code>" + html.escape(text).replace("|", "&#124;") + "</code>"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A Markdown table (cells already escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return lines


def paragraphs(text: str) -> list[str]:
    """A docstring or help text as Markdown paragraphs: indentation dropped, click's ``\\b``
    markers removed, lines of one paragraph joined."""
    blocks = re.split(r"\n\s*\n", text.strip())
    out = []
    for block in blocks:
        lines = [line.strip() for line in block.splitlines() if line.strip() != "\b"]
        if lines:
            out += [escape(" ".join(lines)), ""]
    return out
