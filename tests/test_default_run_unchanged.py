"""The default stream (reset-each-split) gives the leaderboard it gave before every stream kind
went through one runner (issue 26): the reference files in ``tests/data/default_run`` were
written by the runner before that change (see their README); a run of the same command now
must reproduce them, cell keys included. Only fields the change adds may differ: the
per-window table (``windows.csv``/``.md``, ``leaderboard.json``'s ``windows``), and in each
cell ``protocol.stream``, ``windows`` and every estimator's ``windows``."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from ttabench.cli import main

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "data" / "default_run"
#: The reference command (see the README beside the files), its settings in a config of their
#: own (``tests/data/default_run/plugins.toml``).
COMMAND = "run --n-boot 50"


def _same_table(name: str, out: Path) -> None:
    """Equal cell by cell: text exactly, numbers to 1e-9 relative (the files are byte-equal on
    the machine that wrote the reference; the tolerance only absorbs another CPU's rounding)."""
    old, new = pd.read_csv(REFERENCE / name), pd.read_csv(out / name)
    pd.testing.assert_frame_equal(new, old, check_exact=False, rtol=1e-9, obj=name)


def test_the_default_stream_reproduces_the_leaderboard_of_the_runner_before_streams(tmp_path):
    out = tmp_path / "out"
    args = [*shlex.split(COMMAND), "--config", str(REFERENCE / "plugins.toml"), "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("leaderboard.csv", "pairs.csv"):
        _same_table(name, out)
    board = json.loads((out / "leaderboard.json").read_text())
    assert set(board) == {"boot_unit", "created", "failed", "n_boot", "online", "schema", "seed",
                          "skipped", "statistics", "targets", "windows"}
    assert board["schema"] == "ttabench.leaderboard/2"
    added = {"windows"}
    for path in (out / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        assert cell["protocol"]["stream"] == {"kind": "reset-each-split", "window": 20,
                                              "stats_window": 0}
        assert added <= set(cell) and all(added <= set(e) for e in cell["estimators"].values())
