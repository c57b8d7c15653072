"""The default stream (reset-each-split) gives the leaderboard it gave before every stream kind
went through one runner (issue 26): the reference files in ``tests/data/default_run`` were
written by the runner before that change (see their README); a run of the same command now
must reproduce their point figures (``POINT_COLUMNS``; what later issues changed on purpose
is listed there). Only fields the change adds may differ: the
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


#: Rows a later fix had to move (issue 23): the ``bn`` and ``adapted`` views of the estimators
#: that compare with labelled source val now batch that reference from a seeded shuffle, not
#: in file order, so their estimates move; on this fixture only ``doc``'s do.
MOVED_BY_REFERENCE_SHUFFLE = {("bn", "doc"), ("adapted", "doc")}
#: What the reference's rows must still give: every point figure. Later issues changed, on
#: purpose, what is not compared: the intervals and paired tests (issue 25: datasets, then
#: splits, are resampled), the calibration error and the chosen baseline (issue 25:
#: leave-one-dataset-out), and the cell keys (issue 23: the reference batching is recorded in
#: the protocol). The one-runner change itself is checked on the real default run, byte for
#: byte, in benchmarks/results/runner_default_identity.md.
POINT_COLUMNS = ["target", "rank", "entry", "estimator", "role", "map", "input", "mae", "worst",
                 "pearson", "spearman", "n_cells", "n_datasets", "n_calib"]
PAIR_ORDER = ["target", "entry", "dataset", "split"]


def _same_table(name: str, out: Path) -> None:
    """Equal row by row (pairs in one order) in the compared columns: text exactly, numbers to
    1e-9 relative (another CPU's rounding), except the rows of ``MOVED_BY_REFERENCE_SHUFFLE``,
    which must move."""
    old, new = pd.read_csv(REFERENCE / name), pd.read_csv(out / name)
    if name == "pairs.csv":
        old, new = (t.sort_values(PAIR_ORDER).reset_index(drop=True) for t in (old, new))
        columns, value = [*PAIR_ORDER, "severity", "estimate", "true"], "estimate"
    else:
        columns, value = POINT_COLUMNS, "mae"
    assert old[["target", "entry"]].equals(new[["target", "entry"]]), name
    moved = pd.Series([(t, e) in MOVED_BY_REFERENCE_SHUFFLE
                       for t, e in zip(old["target"], old["entry"])])
    pd.testing.assert_frame_equal(new.loc[~moved, columns], old.loc[~moved, columns],
                                  check_exact=False, rtol=1e-9, obj=name)
    assert (old.loc[moved, value] != new.loc[moved, value]).any(), f"{name}: moved rows did not"


def test_the_default_stream_reproduces_the_leaderboard_of_the_runner_before_streams(tmp_path):
    out = tmp_path / "out"
    args = [*shlex.split(COMMAND), "--config", str(REFERENCE / "plugins.toml"), "-o", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for name in ("leaderboard.csv", "pairs.csv"):
        _same_table(name, out)
    board = json.loads((out / "leaderboard.json").read_text())
    assert set(board) == {"boot_unit", "created", "failed", "n_boot", "online", "schema", "seed",
                          "skipped", "statistics", "targets", "windows",
                          "cross_model"}  # windows: issue 26; cross_model: issue 28
    assert board["schema"] == "ttabench.leaderboard/2"
    added = {"windows"}
    for path in (out / "cells").glob("*.json"):
        cell = json.loads(path.read_text())
        assert cell["protocol"]["stream"] == {"kind": "reset-each-split", "window": 20,
                                              "stats_window": 0}
        assert added <= set(cell) and all(added <= set(e) for e in cell["estimators"].values())
