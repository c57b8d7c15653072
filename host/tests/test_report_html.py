"""report.html: its records against an independent computation, and the page in a real
headless Chromium (sections, sorted tables, plots rendered)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import sys

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the leaderboard tests' fabricated cells
from cell_builders import trajectory  # noqa: E402
from test_leaderboard import N_BOOT, make_cells  # noqa: E402

from ttabench.spec import ScoringSpec
from ttabench.scoring import build_leaderboard, format_console
from ttabench.scoring.leaderboard import to_markdown
from ttabench.scoring.report_html import render, report_from_leaderboard, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def cells():
    """The leaderboard test cells plus ``ac2`` (a copy of ``ac``: an alias) and ``flips``, a
    view-free score declared for the ``bn`` target."""
    out = make_cells()
    for cell in out:
        if cell.status == "ok":
            cell.estimators["ac2"] = copy.deepcopy(cell.estimators["ac"])
            cell.estimators["flips"] = trajectory("score", 100 * (1 - cell.targets["bn"]) ** 2)
    return out


@pytest.fixture(scope="module")
def report(cells):
    return report_from_leaderboard(build_leaderboard(cells, ScoringSpec(n_boot=N_BOOT)), cells)


def test_sections_per_target_in_order_with_aliases_shown_once(cells, report):
    assert [t.target for t in report.tables] == ["source", "bn", "adapted"]
    source = report.tables[0]
    entries = [row[source.columns.index("entry")] for row in source.rows]
    assert "ac" in entries and "ac2" not in entries and source.aliases == {"ac2": "ac"}
    lb = build_leaderboard(cells, ScoringSpec(n_boot=N_BOOT))
    assert "ac2: alias of ac" in format_console(lb)
    assert "| ac2 |" not in to_markdown(lb) and "aliases: ac2" in to_markdown(lb)
    assert {"flips (lin)", "flips (quad)"} <= {p.entry for p in report.tables[1].panels}
    for table in report.tables:  # every entry of a table estimates that table's target
        assert "ac2" not in {p.entry for p in table.panels}


def test_a_mapped_panel_holds_calibration_and_eval_points_and_the_fitted_map(cells, report):
    panel = next(p for p in report.tables[0].panels if p.entry == "mde (lin)")
    calib = [p for p in panel.points if p.role == "calibration"]
    evals = [p for p in panel.points if p.role == "eval"]
    ok = [c for c in cells if c.status == "ok"]
    assert len(calib) == sum(c.split["role"] == "calibration" for c in ok) == 8
    assert len(evals) == 18
    # independent fit: accuracy (%) linear in the score on the calibration cells
    x = [c.estimators["mde"].views["source"].value for c in ok
         if c.split["role"] == "calibration"]
    y = [100 * c.targets["source"] for c in ok if c.split["role"] == "calibration"]
    slope, intercept = np.polyfit(x, y, 1)
    for score, acc in (panel.curve[0], panel.curve[-1]):
        assert acc == pytest.approx(slope * score + intercept, abs=1e-6)
    for p in evals:  # mde is exactly linear in accuracy: the map recovers the truth
        assert p.estimate == pytest.approx(p.true, abs=1e-6)


def test_the_report_draws_the_maps_the_leaderboard_fitted_and_fits_none(cells, monkeypatch):
    from ttabench.scoring import maps

    board = build_leaderboard(cells, ScoringSpec(n_boot=N_BOOT))
    group = next(iter(board.entries))[0]
    fitted = {e.name: e for e in board.entries[(group, "source")]}

    def refit(*args, **kwargs):
        raise AssertionError("the report fitted a map again")

    monkeypatch.setattr(maps, "build_entries", refit)
    monkeypatch.setattr(maps, "fit_map_kind", refit)
    page = report_from_leaderboard(board, cells)
    panel = next(p for p in page.tables[0].panels if p.entry == "mde (lin)")
    mapping = fitted["mde (lin)"].maps["source"]
    score, acc = panel.curve[0]
    assert acc == pytest.approx(100 * float(mapping(score)))


class _Dom(HTMLParser):
    """Sections, tables (their sort attribute and entry column) and SVG counts of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.tables, self.svgs, self.circles = [], [], 0, 0
        self._cell, self._row, self._in_body = None, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("data-target"))
        elif tag == "table":
            sortable = "sortable" in (attrs.get("class") or "")
            if sortable:
                self.tables.append({"sorted": attrs.get("data-sorted-by"), "rows": []})
            self._sortable = sortable
        elif tag == "tbody" and getattr(self, "_sortable", False):
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = ""
        elif tag == "svg":
            self.svgs += 1
        elif tag == "circle":
            self.circles += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell.strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[-1]["rows"].append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False


def chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (install it with "
                    "`apt-get install -y chromium`; .ci/setup does where apt is usable)")
def test_the_page_renders_in_headless_chromium(cells, tmp_path):
    from PIL import Image

    page = write_report(build_leaderboard(cells, ScoringSpec(n_boot=N_BOOT)), cells, tmp_path)
    assert "http" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", page.read_text())
    # the page's script sorts every table by column 1 (entry) when the URL asks for it
    dom = chromium(["--dump-dom", f"{page.as_uri()}#sort=1"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _Dom()
    parsed.feed(dom.stdout)
    assert parsed.sections == ["source", "bn", "adapted"]
    assert len(parsed.tables) == 3
    for table in parsed.tables:
        assert table["sorted"] == "entry asc"  # set by the script: the JS ran
        names = [row[1] for row in table["rows"]]
        assert names == sorted(names, key=str.lower) and len(names) >= 2
    assert parsed.svgs >= 4 and parsed.circles > 50
    shot = tmp_path / "shot.png"
    result = chromium(["--window-size=1200,1600", f"--screenshot={shot}", page.as_uri()], tmp_path)
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and coloured plots


def test_render_is_self_contained(report):
    page = render(report)
    assert "<script>" in page and "<style>" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_aliases_are_found_once_per_table_and_every_writer_reads_them(cells, tmp_path,
                                                                       monkeypatch):
    import pandas as pd

    from cell_builders import static
    from ttabench.api import TARGETS
    from ttabench.scoring import leaderboard, write_leaderboard

    mixed = copy.deepcopy(cells)
    for cell in mixed:  # ac3 repeats ac on the source and adapted tables, not on bn's
        if cell.status == "ok":
            t = cell.targets
            cell.estimators["ac3"] = static("direct", {
                "source": t["source"] + 0.10, "bn": t["bn"] + 0.20, "adapted": t["adapted"] + 0.10})
    calls = []
    real = leaderboard.find_aliases
    monkeypatch.setattr(leaderboard, "find_aliases",
                        lambda table, pairs: calls.append(1) or real(table, pairs))
    lb = build_leaderboard(mixed, ScoringSpec(n_boot=N_BOOT))
    assert len(calls) == len(TARGETS)  # once per target, all groups at once
    console, markdown = format_console(lb), to_markdown(lb)
    write_leaderboard(lb, tmp_path)
    report = report_from_leaderboard(lb, mixed)
    assert len(calls) == len(TARGETS)  # the writers read the table's alias_of column
    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    of = {(r.entry, r.target): r.alias_of for r in csv.itertuples() if r.entry in ("ac2", "ac3")}
    assert of[("ac2", "source")] == of[("ac2", "bn")] == of[("ac2", "adapted")] == "ac"
    assert of[("ac3", "source")] == of[("ac3", "adapted")] == "ac" and pd.isna(of[("ac3", "bn")])
    assert "ac3: alias of ac" in console and "| ac3 |" in markdown  # shown in bn's table only
    by_target = {t.target: t for t in report.tables}
    assert by_target["source"].aliases == {"ac2": "ac", "ac3": "ac"}
    assert by_target["bn"].aliases == {"ac2": "ac"}
    assert "ac3" in [row[by_target["bn"].columns.index("entry")] for row in by_target["bn"].rows]
