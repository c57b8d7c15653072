"""Leaderboard tables, files, console text, loading run folders and the `leaderboard` command."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ttabench.errors import TTABenchError
from ttabench.runner.store import write_json_atomic
from ttabench.scoring import build_leaderboard, format_console, load_cells, write_leaderboard
from ttabench.scoring.command import leaderboard as leaderboard_command

N_BOOT = 200


def make_cell(name, dataset, severity, role, targets, estimators, adapter="rdumb", status="ok"):
    key = hashlib.sha256(f"{name}/{adapter}/{role}".encode()).hexdigest()[:16]
    return {
        "schema": "ttabench.cell/1", "key": key, "status": status,
        "error": None if status == "ok" else "RuntimeError: out of memory", "attempts": 1,
        "suite": "tiny", "model": "tiny-cnn", "adapter": adapter, "seed": 0,
        "split": {"name": name, "dataset": dataset, "severity": severity, "role": role},
        "n_examples": 256, "targets": targets, "estimators": estimators,
        "protocol": {}, "timings": {"total": 1.0},
    }


def rec(kind, value, target="source", estimate=None):
    return {"target": target, "kind": kind, "value": value,
            "estimate": value if kind == "direct" else estimate, "scores": {}, "extras": {},
            "params": {}, "plugin": {}}


def make_cells(adapter="rdumb", n_eval=18):
    """``ac`` is off by +10 pp, ``cot`` by -3 pp (dataset "blur": +3), ``mde`` is a score
    linear in accuracy, ``doc`` is skipped; one failed cell."""
    rng = np.random.default_rng(0)
    cells = []
    for role, n, datasets in (("calibration", 8, ["speckle", "spatter"]),
                              ("eval", n_eval, ["fog", "fog", "noise", "blur"])):
        for i in range(n):
            acc = float(rng.uniform(0.3, 0.85))
            dataset = datasets[i % len(datasets)]
            cells.append(make_cell(
                f"{dataset}-{i}", dataset, 1 + i % 5, role,
                {"source": acc, "bn": acc + 0.05, "adapted": acc + 0.08},
                {
                    "ac": rec("direct", acc + 0.10),
                    "cot": rec("direct", acc + (0.03 if dataset == "blur" else -0.03)),
                    "mde": rec("score", 2.0 - 2.0 * acc),
                    "doc": {"skipped": "needs a labelled source-validation split"},
                },
                adapter=adapter,
            ))
    cells.append(make_cell("fog-99", "fog", 5, "eval", {"source": 0.5}, {}, adapter=adapter,
                           status="failed"))
    return cells


def slow_mae(pairs):
    """pairs: list of (estimate, true, dataset); per-dataset averaged MAE in pp."""
    per = {}
    for e, t, d in pairs:
        per.setdefault(d, []).append(abs(e - t) * 100)
    return sum(sum(v) / len(v) for v in per.values()) / len(per)


@pytest.fixture(scope="module")
def cells():
    return make_cells()


@pytest.fixture(scope="module")
def lb(cells):
    return build_leaderboard(cells, n_boot=N_BOOT, seed=0)


def _row(lb, entry, target):
    table = lb.table
    rows = table[(table["entry"] == entry) & (table["target"] == target)]
    assert len(rows) == 1, f"{entry}/{target}: {len(rows)} rows"
    return rows.iloc[0]


def test_table_values_match_independent_computation(cells, lb):
    eval_cells = [c for c in cells if c["status"] == "ok" and c["split"]["role"] == "eval"]
    for target in ("source", "bn", "adapted"):
        expected = slow_mae([(c["estimators"]["cot"]["value"], c["targets"][target],
                              c["split"]["dataset"]) for c in eval_cells])
        row = _row(lb, "cot", target)
        assert row["mae"] == pytest.approx(expected)
        assert row["ci_low"] <= row["mae"] <= row["ci_high"]
        assert row["n_cells"] == 18 and row["n_datasets"] == 3
    assert _row(lb, "cot", "source")["mae"] == pytest.approx(3.0)
    assert _row(lb, "ac", "source")["mae"] == pytest.approx(10.0)
    assert _row(lb, "ac", "source")["worst"] == pytest.approx(10.0)
    assert _row(lb, "mde (lin)", "source")["mae"] == pytest.approx(0.0, abs=1e-6)
    assert _row(lb, "mde (lin)", "source")["n_calib"] == 8


def test_ranking_by_declared_target_and_paired_difference_rule(lb):
    declared = lb.table[lb.table["target"] == lb.table["declared"]]
    order = declared.sort_values("rank")["entry"].tolist()
    assert order[:2] == ["mde (lin)", "mde (quad)"]
    assert order.index("cot") < order.index("ac")
    assert declared["mae"].is_monotonic_increasing
    # cot's best other estimator is mde (lin); mde's best other is cot
    cot = _row(lb, "cot", "source")
    assert cot["vs"] == "mde (lin)" and cot["diff"] == pytest.approx(3.0, abs=1e-6)
    assert bool(cot["significant"])
    assert _row(lb, "mde (quad)", "source")["vs"] == "cot"
    assert _row(lb, "ac", "source")["diff"] == pytest.approx(10.0, abs=1e-6)


def test_per_severity_per_dataset_online_skipped_failed(cells, lb):
    eval_cells = [c for c in cells if c["status"] == "ok" and c["split"]["role"] == "eval"]
    ds = lb.per_dataset[lb.per_dataset["entry"] == "cot"].set_index("dataset")["mae"]
    assert ds.to_dict() == pytest.approx({"blur": 3.0, "fog": 3.0, "noise": 3.0})
    sev = lb.per_severity[lb.per_severity["entry"] == "ac"]
    assert sorted(sev["severity"]) == [1, 2, 3, 4, 5]
    assert np.allclose(sev["mae"], 10.0)
    online = lb.online.iloc[0]
    per = {}
    for c in eval_cells:
        per.setdefault(c["split"]["dataset"], []).append(c["targets"]["adapted"])
    assert online["adapted"] == pytest.approx(100 * np.mean([np.mean(v) for v in per.values()]))
    assert lb.skipped["entry"].tolist() == ["doc"]
    doc = lb.table[lb.table["entry"] == "doc"].iloc[0]
    assert "needs a labelled source-validation split" in doc["note"] and pd.isna(doc["mae"])
    assert [f["split"] for f in lb.failed] == ["fog-99"]


def test_format_console_lists_entries_skipped_and_failed(lb):
    text = format_console(lb)
    for needle in ("mde (lin)", "cot", "ac", "95% CI", "sev 1", "doc", "needs a labelled",
                   "failed cells (1)", "out of memory", "adapter rdumb"):
        assert needle in text
    cot_line = next(line for line in text.splitlines() if " cot " in line)
    assert re.search(r"\b3\.00\s+\[\d+\.\d\d, \d+\.\d\d\]", cot_line)
    assert cot_line.split()[-1] == "18"  # number of cells


def test_write_leaderboard_files_parse(tmp_path, lb):
    paths = write_leaderboard(lb, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"leaderboard.csv", "leaderboard.md", "leaderboard.html", "leaderboard.json",
            "scatter.png", "pairs.csv"} <= names
    csv = pd.read_csv(tmp_path / "out" / "leaderboard.csv")
    assert len(csv) == len(lb.table)
    assert csv.loc[(csv["entry"] == "ac") & (csv["target"] == "source"), "mae"].item() == pytest.approx(10.0)
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "<table" in page and "mde (quad)" in page and "needs a labelled" in page
    assert "out of memory" in page
    assert "http" not in page  # self-contained
    md = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "| entry |" in md or "| rank | entry |" in md
    data = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert data["schema"] == "ttabench.leaderboard/1" and len(data["table"]) == len(lb.table)
    assert (tmp_path / "out" / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert len(pairs[(pairs["entry"] == "ac") & (pairs["target"] == "bn")]) == 18
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_groups_by_adapter():
    cells = make_cells("rdumb") + make_cells("tent", n_eval=6)
    lb = build_leaderboard(cells, n_boot=50)
    assert set(lb.table["adapter"]) == {"rdumb", "tent"}
    assert len(lb.online) == 2
    tent = lb.table[(lb.table["adapter"] == "tent") & (lb.table["entry"] == "ac")
                    & (lb.table["target"] == "source")]
    assert tent["n_cells"].item() == 6


# ----------------------------------------------------------------------------- loading


def _write_run(folder, cells, nested=True):
    target = folder / "cells" if nested else folder
    for cell in cells:
        write_json_atomic(target / f"{cell['key']}.json", cell)
    return folder


def test_load_cells_merges_shards_and_ignores_strays(tmp_path, cells):
    half = len(cells) // 2
    a = _write_run(tmp_path / "a", cells[:half])
    b = _write_run(tmp_path / "b", cells[half:], nested=False)
    (a / "cells" / ".x.json.abc.tmp").write_text("{partial")
    (b / "leaderboard.json").write_text(json.dumps({"schema": "ttabench.leaderboard/1"}))
    loaded = load_cells([a, b])
    assert sorted(c["key"] for c in loaded) == sorted(c["key"] for c in cells)


def test_load_cells_prefers_finished_copy(tmp_path, cells):
    ok = cells[0]
    failed = dict(ok, status="failed", error="boom")
    a = _write_run(tmp_path / "a", [failed])
    b = _write_run(tmp_path / "b", [ok])
    assert load_cells([a, b])[0]["status"] == "ok"
    assert load_cells([b, a])[0]["status"] == "ok"


def test_load_cells_errors(tmp_path):
    with pytest.raises(TTABenchError, match="run folder not found"):
        load_cells([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TTABenchError, match="no cell results"):
        load_cells([tmp_path / "empty"])
    (tmp_path / "bad" / "cells").mkdir(parents=True)
    (tmp_path / "bad" / "cells" / "x.json").write_text("{not json")
    with pytest.raises(TTABenchError, match="cannot read cell file"):
        load_cells([tmp_path / "bad"])


def test_leaderboard_command_merges_folders(tmp_path, cells):
    half = len(cells) // 2
    a = _write_run(tmp_path / "a", cells[:half])
    b = _write_run(tmp_path / "b", cells[half:])
    result = CliRunner().invoke(
        leaderboard_command, [str(a), str(b), "--output", str(tmp_path / "lb"), "--n-boot", "50"]
    )
    assert result.exit_code == 0, result.output
    assert "mde (lin)" in result.output and "failed cells (1)" in result.output
    csv = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
    assert csv.loc[(csv["entry"] == "cot") & (csv["target"] == "source"), "n_cells"].item() == 18
    result = CliRunner().invoke(leaderboard_command, [str(a), "--n-boot", "20"])
    assert result.exit_code == 0 and (a / "leaderboard.html").exists()


def test_leaderboard_command_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(leaderboard_command, [str(tmp_path / "empty")])
    assert isinstance(result.exception, TTABenchError)
    assert "\n" not in str(result.exception)


def test_cells_without_severity_get_their_own_column():
    cells = make_cells()
    for cell in cells:
        if cell["split"]["dataset"] == "blur":
            cell["split"]["severity"] = None
    lb = build_leaderboard(cells, n_boot=20)
    sev = lb.per_severity[lb.per_severity["entry"] == "cot"]
    assert sev["severity"].tolist() == [1, 2, 3, 4, 5, None]
    assert sev["n_cells"].sum() == 18
    header = next(line for line in format_console(lb).splitlines() if "entry" in line)
    assert "sev 1" in header and "sev n/a" in header and "sev 1.0" not in header
