"""Checks shared by the command-line tests."""

from __future__ import annotations

from pathlib import Path


def one_line_error(result) -> str:
    """The command failed with exit status 2 and exactly one ``error:`` line on stderr (no
    traceback); returns that line."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def no_cells(out: Path) -> bool:
    """No cell result was written into the run folder ``out`` (nothing ran)."""
    return not list((Path(out) / "cells").glob("*.json"))
