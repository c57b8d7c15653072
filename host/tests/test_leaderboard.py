"""Leaderboard tables, files, console text, loading run folders and the `leaderboard` command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cell_builders import every_view, make_cell, skipped, static, trajectory
from ttabench.errors import TTABenchError
from ttabench.spec import ScoringSpec
from ttabench.records import Cell, ViewResult
from ttabench.store import write_json_atomic
from ttabench.scoring import build_leaderboard, format_console, load_cells, write_leaderboard
from ttabench.scoring.command import leaderboard as leaderboard_command

N_BOOT = 200


def make_cells(adapter="rdumb", n_eval=18):
    """In every view, ``ac`` is off by +10 pp from that view's target, ``cot`` by -3 pp
    (dataset "blur": +3), ``mde`` is a score linear in the view's accuracy, ``doc`` is
    skipped; the candidate ``wf`` is a view-free score linear in the bn accuracy (off by
    noise elsewhere); one failed cell."""
    rng = np.random.default_rng(0)
    cells = []
    for role, n, datasets in (("calibration", 8, ["speckle", "spatter"]),
                              ("eval", n_eval, ["fog", "fog", "noise", "blur"])):
        for i in range(n):
            acc = float(rng.uniform(0.3, 0.85))
            dataset = datasets[i % len(datasets)]
            targets = {"source": acc, "bn": acc + 0.05 + 0.02 * (i % 3), "adapted": acc + 0.08}
            cells.append(make_cell(
                f"{dataset}-{i}", dataset, 1 + i % 5, role, targets,
                {
                    "ac": static("direct", every_view(lambda v: targets[v] + 0.10)),
                    "cot": static("direct", every_view(
                        lambda v: targets[v] + (0.03 if dataset == "blur" else -0.03))),
                    "mde": static("score", every_view(lambda v: 2.0 - 2.0 * targets[v])),
                    "doc": skipped("needs a labelled source-validation split"),
                    "wf": trajectory("score", 100.0 * (1.0 - targets["bn"])),
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
    return build_leaderboard(cells, ScoringSpec(n_boot=N_BOOT, boot_seed=0))


def _row(lb, entry, target):
    table = lb.table
    rows = table[(table["entry"] == entry) & (table["target"] == target)]
    assert len(rows) == 1, f"{entry}/{target}: {len(rows)} rows"
    return rows.iloc[0]


def test_table_values_match_independent_computation(cells, lb):
    eval_cells = [c for c in cells if c.status == "ok" and c.role == "eval"]
    for target in ("source", "bn", "adapted"):
        expected = slow_mae([(c.estimators["cot"].views[target].value, c.targets[target],
                              c.dataset) for c in eval_cells])
        row = _row(lb, "cot", target)
        assert row["mae"] == pytest.approx(expected)
        assert row["ci_low"] <= row["mae"] <= row["ci_high"]
        assert row["n_cells"] == 18 and row["n_datasets"] == 3
        assert _row(lb, "cot", target)["mae"] == pytest.approx(3.0)
        assert _row(lb, "ac", target)["mae"] == pytest.approx(10.0)
        assert _row(lb, "ac", target)["worst"] == pytest.approx(10.0)
        assert _row(lb, "mde (lin)", target)["mae"] == pytest.approx(0.0, abs=1e-6)
        assert _row(lb, "mde (lin)", target)["n_calib"] == 8
    # the view-free candidate is linear in bn only: exact there, not elsewhere
    assert _row(lb, "wf (lin)", "bn")["mae"] == pytest.approx(0.0, abs=1e-6)
    assert _row(lb, "wf (lin)", "source")["mae"] > 0.5


def test_ranking_within_each_target_and_chosen_baseline(lb):
    for target in ("source", "bn", "adapted"):
        table = lb.table[(lb.table["target"] == target) & lb.table["mae"].notna()]
        assert table.sort_values("rank")["mae"].is_monotonic_increasing
        assert table["rank"].tolist() == list(range(1, len(table) + 1))
        choice = lb.choices[lb.choices["target"] == target].iloc[0]
        # mde (lin) is exact on the calibration cells too: lowest leave-one-out error
        assert choice["chosen_baseline"] == "mde (lin)"
        assert choice["chosen_calib_loo"] == pytest.approx(0.0, abs=1e-6)
        cot = _row(lb, "cot", target)
        assert cot["vs"] == "mde (lin)" and cot["diff"] == pytest.approx(3.0, abs=1e-6)
        assert bool(cot["significant"])
        assert _row(lb, "ac", target)["diff"] == pytest.approx(10.0, abs=1e-6)
        assert pd.isna(_row(lb, "mde (lin)", target)["diff"])  # not against itself
    assert _row(lb, "wf (lin)", "bn")["role"] == "candidate"
    assert _row(lb, "ac", "bn")["role"] == "baseline"


def test_holm_adjusted_p_values_of_a_table_follow_the_formula(lb):
    table = lb.table[(lb.table["target"] == "source") & lb.table["diff"].notna()]
    adjusted = table["p_holm"].to_numpy()
    assert (adjusted >= 0).all() and (adjusted <= 1).all()
    # the smallest raw p-value is multiplied by the number of comparisons at least
    assert len(adjusted) >= 3


def test_per_severity_per_dataset_online_skipped_failed(cells, lb):
    eval_cells = [c for c in cells if c.status == "ok" and c.role == "eval"]
    ds = lb.per_dataset[(lb.per_dataset["entry"] == "cot") & (lb.per_dataset["target"] == "bn")]
    assert ds.set_index("dataset")["mae"].to_dict() == pytest.approx(
        {"blur": 3.0, "fog": 3.0, "noise": 3.0})
    sev = lb.per_severity[(lb.per_severity["entry"] == "ac") & (lb.per_severity["target"] == "source")]
    assert sorted(sev["severity"]) == [1, 2, 3, 4, 5]
    assert np.allclose(sev["mae"], 10.0)
    online = lb.online.iloc[0]
    per = {}
    for c in eval_cells:
        per.setdefault(c.dataset, []).append(c.targets["adapted"])
    assert online["adapted"] == pytest.approx(100 * np.mean([np.mean(v) for v in per.values()]))
    assert lb.skipped["entry"].tolist() == ["doc"] * 3
    doc = lb.table[lb.table["entry"] == "doc"].iloc[0]
    assert "needs a labelled source-validation split" in doc["note"] and pd.isna(doc["mae"])
    assert [f["split"] for f in lb.failed] == ["fog-99"]


def test_a_failure_in_one_view_counts_alone_and_is_reported():
    cells = make_cells()
    for i, cell in enumerate(c for c in cells if c.status == "ok" and c.role == "eval"):
        if i < 4:
            cell.estimators["cot"].views["bn"] = ViewResult(failed="RuntimeError: boom")
    lb = build_leaderboard(cells, ScoringSpec(n_boot=50))
    bn = _row(lb, "cot", "bn")
    assert bn["n_cells"] == 14 and "failed in 4 eval cells" in bn["note"]
    assert _row(lb, "cot", "source")["n_cells"] == 18
    assert _row(lb, "ac", "bn")["n_cells"] == 18
    assert "failed in 4" in format_console(lb)


def test_format_console_lists_tables_in_target_order_skipped_and_failed(lb):
    text = format_console(lb)
    for needle in ("mde (lin)", "cot", "ac", "95% CI", "doc", "needs a labelled",
                   "failed cells (1)", "out of memory", "adapter rdumb", "Holm-corrected",
                   "chosen baseline", "best baseline after the fact"):
        assert needle in text
    heads = [text.index(f"-- target {t}:") for t in ("source", "bn", "adapted")]
    assert heads == sorted(heads)
    source_part = text[heads[0]:heads[1]]
    cot_line = next(line for line in source_part.splitlines() if " cot " in line)
    assert re.search(r"\b3\.00\s+\[\d+\.\d\d, \d+\.\d\d\]", cot_line)


def _ranked_tables_of_markdown(md):
    """``{target: [rows of its ranked tables]}`` from the Markdown file."""
    tables, target, rows = {}, None, None
    for line in md.splitlines():
        if line.startswith("### Target ") and "per dataset" not in line:
            target = line.split()[2].rstrip(":")
            rows = tables.setdefault(target, [])
        elif line.startswith("### ") or line.startswith("## "):
            target = None
        elif target is not None and line.startswith("| ") and not line.startswith("| target |"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return tables


def test_no_output_file_mixes_targets_in_one_ranking(tmp_path, lb):
    """CSV, Markdown, HTML and JSON: every ranking holds one target, ranks 1..n within it."""
    write_leaderboard(lb, tmp_path)
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    assert list(dict.fromkeys(csv["target"])) == ["source", "bn", "adapted"]
    for _target, part in csv.dropna(subset=["mae"]).groupby("target"):
        assert sorted(part["rank"].astype(int)) == list(range(1, len(part) + 1))
        assert part.sort_values("rank")["mae"].is_monotonic_increasing
    md = _ranked_tables_of_markdown((tmp_path / "leaderboard.md").read_text())
    assert list(md) == ["source", "bn", "adapted"]
    for target, rows in md.items():
        assert rows and {r[0] for r in rows} == {target}
        ranks = [int(r[1]) for r in rows if r[1] != "-"]
        assert ranks == list(range(1, len(ranks) + 1))
    page = (tmp_path / "leaderboard.html").read_text()
    sections = re.findall(r'<section class="target" data-target="(\w+)">(.*?)</section>', page, re.S)
    assert [t for t, _ in sections] == ["source", "bn", "adapted"]
    for target, body in sections:
        first_cells = re.findall(r"<tr>\s*<td>([^<]*)</td>", body)
        assert first_cells and set(first_cells) == {target}
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [t["target"] for t in data["targets"]] == ["source", "bn", "adapted"]
    for block in data["targets"]:
        for table in block["tables"]:
            assert {r["target"] for r in table["rows"]} == {block["target"]}
            ranks = [r["rank"] for r in table["rows"] if r["rank"] is not None]
            assert ranks == list(range(1, len(ranks) + 1))


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
    assert "out of memory" in page and "Holm-corrected" in page
    assert "http" not in page  # self-contained
    data = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert data["schema"] == "ttabench.leaderboard/2" and data["boot_unit"] == "dataset"
    assert (tmp_path / "out" / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pairs = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert len(pairs[(pairs["entry"] == "ac") & (pairs["target"] == "bn")]) == 18
    assert not list((tmp_path / "out").glob("*.tmp"))


SCATTER_IN_A_FRESH_PROCESS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import matplotlib
from cell_builders import every_view, make_cell, static
from ttabench.scoring import build_leaderboard, write_leaderboard
from ttabench.spec import ScoringSpec
cells = [make_cell(f"fog-{i}", ("fog", "blur")[i % 2], 1, "eval",
                   {"source": 0.4 + 0.05 * i, "bn": 0.5, "adapted": 0.6},
                   {"ac": static("direct", every_view(lambda view: 0.55))}) for i in range(6)]
write_leaderboard(build_leaderboard(cells, ScoringSpec(n_boot=10, boot_seed=0)), sys.argv[2])
pyplot = "matplotlib.pyplot" in sys.modules  # before get_backend(), which imports pyplot
print(json.dumps({"pyplot": pyplot, "backend": matplotlib.get_backend()}))
"""


def test_scatter_png_leaves_pyplot_and_the_process_backend_alone(tmp_path):
    support = Path(__file__).parent / "support"
    env = {**os.environ, "MPLBACKEND": "svg"}  # a backend other than the Agg a plot draws with
    out = subprocess.run([sys.executable, "-c", SCATTER_IN_A_FRESH_PROCESS, str(support),
                          str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"pyplot": False, "backend": "svg"}
    assert (tmp_path / "out" / "scatter.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_groups_by_adapter():
    cells = make_cells("rdumb") + make_cells("tent", n_eval=6)
    lb = build_leaderboard(cells, ScoringSpec(n_boot=50))
    assert set(lb.table["adapter"]) == {"rdumb", "tent"}
    assert len(lb.online) == 2
    tent = lb.table[(lb.table["adapter"] == "tent") & (lb.table["entry"] == "ac")
                    & (lb.table["target"] == "source")]
    assert tent["n_cells"].item() == 6


def test_split_bootstrap_unit_is_an_option_and_changes_the_intervals(cells):
    by_dataset = build_leaderboard(cells, ScoringSpec(n_boot=200, boot_unit="dataset"))
    by_split = build_leaderboard(cells, ScoringSpec(n_boot=200, boot_unit="split"))
    a, b = _row(by_dataset, "cot", "bn"), _row(by_split, "cot", "bn")
    assert a["mae"] == b["mae"]
    assert (a["ci_low"], a["ci_high"]) != (b["ci_low"], b["ci_high"])
    with pytest.raises(TTABenchError, match="boot_unit"):
        build_leaderboard(cells, ScoringSpec(boot_unit="cell"))


# ----------------------------------------------------------------------------- loading


def _write_run(folder, cells, nested=True):
    target = folder / "cells" if nested else folder
    for cell in cells:
        write_json_atomic(target / f"{cell.key}.json", cell.to_dict())
    return folder


def test_load_cells_merges_shards_and_ignores_strays(tmp_path, cells):
    half = len(cells) // 2
    a = _write_run(tmp_path / "a", cells[:half])
    b = _write_run(tmp_path / "b", cells[half:], nested=False)
    (a / "cells" / ".x.json.abc.tmp").write_text("{partial")
    (b / "leaderboard.json").write_text(json.dumps({"schema": "ttabench.leaderboard/1"}))
    loaded = load_cells([a, b])
    assert sorted(c.key for c in loaded) == sorted(c.key for c in cells)
    assert loaded == sorted(cells, key=lambda c: c.key)  # the records survive the round trip


def test_load_cells_prefers_finished_copy(tmp_path, cells):
    ok = cells[0]
    failed = Cell.from_dict({**ok.to_dict(), "status": "failed", "error": "boom"})
    a = _write_run(tmp_path / "a", [failed])
    b = _write_run(tmp_path / "b", [ok])
    assert load_cells([a, b])[0].status == "ok"
    assert load_cells([b, a])[0].status == "ok"


def test_old_schema_cells_are_refused_with_rerun_advice(tmp_path, cells):
    folder = _write_run(tmp_path / "old", cells[:1])
    path = next((folder / "cells").glob("*.json"))
    path.write_text(json.dumps({**json.loads(path.read_text()), "schema": "ttabench.cell/1"}))
    with pytest.raises(TTABenchError, match="rerun `ttabench run`"):
        load_cells([folder])


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
        if cell.dataset == "blur":
            cell.split["severity"] = None
    lb = build_leaderboard(cells, ScoringSpec(n_boot=20))
    sev = lb.per_severity[(lb.per_severity["entry"] == "cot") & (lb.per_severity["target"] == "source")]
    assert sev["severity"].tolist() == [1, 2, 3, 4, 5, None]
    assert sev["n_cells"].sum() == 18
    header = next(line for line in format_console(lb).splitlines() if "entry" in line)
    assert "sev 1" in header and "sev n/a" in header and "sev 1.0" not in header
