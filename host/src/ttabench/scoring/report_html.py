"""``report.html``: one self-contained page per run, a section per accuracy target.

The page reads a ``Report`` (typed records below), built by ``report_from_leaderboard`` from
the scoring output (the ``Leaderboard`` and the finished cells); another scorer can feed it by
building the same records. Each ``TargetTable`` (source, bn, adapted, in that order, per
suite/model/adapter group) shows

- the ranked table of the entries declaring that target (click a header to sort it);
- small multiples, one panel per estimator (its best-ranked entry): estimated vs true
  accuracy (%) on the eval cells (filled) and the calibration cells (hollow), the identity
  line, and for a mapped entry the fitted map ``f(score)`` over the calibration and eval
  scores (as in the paper's Fig. 6);
- MAE per severity (lines) and per dataset (dots);

then the run's protocol facts and links to the CSV/JSON files. Everything is inline (CSS, JS,
SVG): the page needs no network.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ttabench.records import Cell
from ttabench.store import write_bytes_atomic
from ttabench.scoring.leaderboard import (
    Leaderboard,
    _groups,
    _main_view,
    _select,
    choice_line,
    group_aliases,
    statistics_note,
)
from ttabench.scoring.maps import TARGETS, record, role, score_of, truth
from ttabench.scoring.stack import StackMap

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
LINKS = ("leaderboard.csv", "leaderboard.json", "leaderboard.md", "pairs.csv")


@dataclass
class Point:
    """One cell of a panel: accuracies in %, ``score`` the map's input (None when direct)."""

    split: str
    role: str  # "eval" or "calibration"
    estimate: float
    true: float
    score: float | None = None


@dataclass
class Panel:
    """One estimator's best entry against one target."""

    entry: str
    mae: float
    points: list[Point]
    #: ``f(score)`` in % as (score, accuracy) samples, for a mapped entry
    curve: list[tuple[float, float]] = field(default_factory=list)
    score_name: str | None = None


@dataclass
class TargetTable:
    """Everything the page shows for one target of one group."""

    target: str
    group: tuple[str, str, str]
    columns: list[str]
    rows: list[list[str]]
    panels: list[Panel]
    #: entry -> {severity label or dataset: MAE in pp}
    per_severity: dict[str, dict[str, float]]
    per_dataset: dict[str, dict[str, float]]
    aliases: dict[str, str] = field(default_factory=dict)
    #: The table's chosen baseline and candidate, and how they were chosen (``choice_line``).
    choice: str = ""


@dataclass
class Report:
    title: str
    tables: list[TargetTable]
    protocol: list[tuple[str, str]]
    links: tuple[str, ...] = LINKS
    #: How the intervals, tests and calibration choices were made (``statistics_note``).
    statistics: str = ""


# ----------------------------------------------------------------------------- the adapter


def _panels(group_cells: list[Cell], lb: Leaderboard, group: tuple[str, str, str],
            target: str, ranked: pd.DataFrame) -> list[Panel]:
    entries = {e.name: e for e in lb.entries.get((group, target), [])}
    cells = {c.key: c for c in group_cells}
    pairs = _select(lb.pairs, group, target)
    panels = []
    for _, r in ranked.drop_duplicates("entry").iterrows():
        entry = entries.get(r["entry"])
        if entry is None or pd.isna(r["mae"]):
            continue
        # a 1-D map's curve over its score; a stack reads several scores: points only
        found = entry.maps.get(target)
        mapping = None if isinstance(found, StackMap) else found
        map_input = entry.input if mapping is not None else None  # the score the map reads
        points = []
        for p in pairs[pairs["entry"] == r["entry"]].itertuples(index=False):
            rec = record(cells[p.key], entry.estimator, target) if p.key in cells else None
            score = score_of(rec, map_input) if rec is not None and map_input is not None else None
            points.append(Point(p.split, "eval", 100 * p.estimate, 100 * p.true, score))
        if mapping is not None and map_input is not None:
            for key in entry.calibration_keys.get(target, []):
                rec, true = record(cells[key], entry.estimator, target), truth(cells[key], target)
                score = score_of(rec, map_input) if rec is not None else None
                if score is None or true is None:
                    continue
                points.append(Point(str(cells[key].split.get("name")), "calibration",
                                    100 * float(mapping(score)), 100 * true, score))
        curve = []
        scores = [p.score for p in points if p.score is not None]
        if mapping is not None and scores:
            xs = np.linspace(min(scores), max(scores), 60)
            curve = [(float(x), 100 * float(mapping(x))) for x in xs]
        panels.append(Panel(r["entry"], float(r["mae"]), points, curve,
                            entry.input if mapping is not None else None))
    return panels


def _protocol(cells: list[Cell], lb: Leaderboard) -> list[tuple[str, str]]:
    ok = [c for c in cells if c.status == "ok"]
    if not ok:
        return []
    first = ok[0].protocol
    roles = [role(c) for c in ok]
    facts = [
        ("suites", ", ".join(sorted({str(c.suite) for c in ok}))),
        ("models", ", ".join(sorted({str(c.model) for c in ok}))),
        ("adapters", ", ".join(sorted({str(c.adapter) for c in ok}))),
        ("seeds", ", ".join(str(s) for s in sorted({c.seed for c in ok}, key=str))),
        ("cells", f"{len(ok)} ok ({roles.count('eval')} eval, {roles.count('calibration')} "
                  f"calibration), {len(lb.failed)} failed"),
        ("batch size", str(first.get("batch_size"))),
        ("steps", str(sorted({c.adaptation.get("steps") for c in ok}, key=str))),
        ("device", str(first.get("device_type"))),
        ("CPU threads", str(first.get("threads", "-"))),
        ("torch", str(first.get("torch"))),
        ("decoded-image cache (MiB)", str(first.get("data_path", {}).get("cache_mib", "-"))),
        ("precision", str(first.get("compute", {}).get("precision", "fp32"))),
        ("bootstrap", f"{lb.n_boot} resamples over {lb.boot_unit}s, seed {lb.seed}"),
    ]
    for name, est in sorted(first.get("estimators", {}).items()):
        facts.append((f"estimator {name}", ", ".join(f"{k}={v}" for k, v in
                                                     sorted(est.get("params", {}).items()))))
    params = ok[0].adaptation.get("adapter_params") or {}
    facts.append((f"adapter {ok[0].adapter}",
                  ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"))
    return facts


def report_from_leaderboard(lb: Leaderboard, cells: list[Cell]) -> Report:
    """The page's records from the leaderboard and the cells it was built from: one table
    per (group, target), targets in the order ``source``, ``bn``, ``adapted``."""
    by_group: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in cells:
        if cell.status == "ok":
            by_group.setdefault((str(cell.suite), str(cell.model), str(cell.adapter)),
                                []).append(cell)
    tables = []
    for group in _groups(lb):
        for target in TARGETS:
            in_group = group_aliases(lb, group, target)
            part = _main_view(lb, group, target)
            if part.empty:
                continue
            part = part[~part["entry"].isin(in_group)].drop(columns=["target"])  # the section's
            ranked = _select(lb.table, group, target)
            ranked = ranked[~ranked["entry"].isin(in_group)].sort_values("rank")
            shown = {a: of for a, of in in_group.items() if of in set(part["entry"])}
            sev = _select(lb.per_severity, group, target)
            ds = _select(lb.per_dataset, group, target)
            names = list(part["entry"])
            tables.append(TargetTable(
                target=target, group=group, columns=list(part.columns),
                rows=[[str(v) for v in row] for row in part.itertuples(index=False)],
                panels=_panels(by_group.get(group, []), lb, group, target, ranked),
                per_severity={n: {("n/a" if pd.isna(r.severity) else str(r.severity)): r.mae
                                  for r in sev[sev["entry"] == n].itertuples(index=False)}
                              for n in names if n in set(sev["entry"])},
                per_dataset={n: {str(r.dataset): r.mae
                                 for r in ds[ds["entry"] == n].itertuples(index=False)}
                             for n in names if n in set(ds["entry"])},
                aliases=shown,
                choice=choice_line(lb, group, target),
            ))
    return Report("ttabench report", tables, _protocol(cells, lb),
                  statistics=statistics_note(lb))


# ----------------------------------------------------------------------------- SVG plots


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _span(lo: float, hi: float) -> tuple[float, float]:
    """An axis range ``(lo, hi)``, widened by 1 each side when it is empty (``hi <= lo``)."""
    return (lo, hi) if hi > lo else (lo - 1, hi + 1)


class _Axes:
    """A linear map from data to pixels inside a ``w`` x ``h`` plot with margins."""

    def __init__(self, w: int, h: int, x: tuple[float, float], y: tuple[float, float],
                 left: int = 34, bottom: int = 26, top: int = 18, right: int = 8) -> None:
        self.w, self.h, self.left, self.bottom, self.top, self.right = w, h, left, bottom, top, right
        self.x, self.y = _span(*x), _span(*y)

    def px(self, x: float) -> float:
        return self.left + (x - self.x[0]) / (self.x[1] - self.x[0]) * (self.w - self.left - self.right)

    def py(self, y: float) -> float:
        return self.h - self.bottom - (y - self.y[0]) / (self.y[1] - self.y[0]) * (
            self.h - self.bottom - self.top)

    def frame(self, title: str, xlabel: str, ylabel: str, xticks: list[float],
              yticks: list[float]) -> list[str]:
        out = [f'<rect x="{self.left}" y="{self.top}" width="{self.w - self.left - self.right}" '
               f'height="{self.h - self.top - self.bottom}" fill="#fff" stroke="#999"/>',
               f'<text x="{self.w / 2}" y="12" class="t">{_e(title)}</text>',
               f'<text x="{self.w / 2}" y="{self.h - 2}" class="l">{_e(xlabel)}</text>',
               f'<text x="9" y="{self.h / 2}" class="l" transform="rotate(-90 9 {self.h / 2})">'
               f'{_e(ylabel)}</text>']
        for t in xticks:
            out.append(f'<text x="{self.px(t):.1f}" y="{self.h - self.bottom + 11}" class="k">'
                       f'{t:g}</text>')
        for t in yticks:
            out.append(f'<text x="{self.left - 3}" y="{self.py(t) + 3:.1f}" class="k" '
                       f'text-anchor="end">{t:g}</text>')
        return out


def _svg(w: int, h: int, parts: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{_e(label)}">' + "".join(parts)
            + "</svg>")


def _polyline(points: list[tuple[float, float]], colour: str, dash: str = "") -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    style = f' stroke-dasharray="{dash}"' if dash else ""
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"{style}/>'


def panel_svg(panel: Panel, colour: str) -> str:
    """Estimated vs true accuracy (%): identity, eval (filled) and calibration (hollow) cells;
    a mapped entry adds an inset of its fitted map f(score) with the same points."""
    w, h = 250, 250
    ax = _Axes(w, h, (0, 100), (0, 100))
    parts = ax.frame(f"{panel.entry}: {panel.mae:.2f} pp", "true accuracy (%)",
                     "estimated accuracy (%)", [0, 50, 100], [0, 50, 100])
    parts.append(_polyline([(ax.px(0), ax.py(0)), (ax.px(100), ax.py(100))], "#444", "4 3"))
    for p in panel.points:
        fill = colour if p.role == "eval" else "none"
        parts.append(f'<circle cx="{ax.px(p.true):.1f}" cy="{ax.py(p.estimate):.1f}" r="3" '
                     f'fill="{fill}" stroke="{colour}" class="{p.role}"><title>{_e(p.split)} '
                     f'({p.role}): true {p.true:.1f}, estimate {p.estimate:.1f}</title></circle>')
    if panel.curve:
        scores = [x for x, _ in panel.curve]
        inset = _Axes(110, 95, (min(scores), max(scores)), (0, 100), left=22, bottom=16, top=12)
        inner = inset.frame(f"f({panel.score_name})", "", "", [], [0, 100])
        inner.append(_polyline([(inset.px(x), inset.py(y)) for x, y in panel.curve], "#000"))
        for p in panel.points:
            if p.score is not None:
                fill = colour if p.role == "eval" else "none"
                inner.append(f'<circle cx="{inset.px(p.score):.1f}" cy="{inset.py(p.true):.1f}" '
                             f'r="2" fill="{fill}" stroke="{colour}"/>')
        parts.append(f'<g transform="translate({w - 116},{ax.top + 104})" class="inset">'
                     + "".join(inner) + "</g>")
    return _svg(w, h, parts, f"scatter {panel.entry}")


def _legend(names: list[str]) -> str:
    return "".join(f'<span class="key"><i style="background:{PALETTE[i % len(PALETTE)]}"></i>'
                   f"{_e(n)}</span>" for i, n in enumerate(names))


def lines_svg(per_level: dict[str, dict[str, float]], title: str) -> str:
    """MAE (pp) per severity: one line per entry."""
    levels = sorted({lv for v in per_level.values() for lv in v}, key=lambda s: (s == "n/a", s))
    top = max([m for v in per_level.values() for m in v.values()] + [1.0])
    w, h = 360, 220
    ax = _Axes(w, h, (-0.5, len(levels) - 0.5), (0, top * 1.05))
    parts = ax.frame(title, "severity", "MAE (pp)", [], [0, round(top, 1)])
    for i, lv in enumerate(levels):
        parts.append(f'<text x="{ax.px(i):.1f}" y="{h - ax.bottom + 11}" class="k">{_e(lv)}</text>')
    for j, values in enumerate(per_level.values()):
        colour = PALETTE[j % len(PALETTE)]
        pts = [(ax.px(i), ax.py(values[lv])) for i, lv in enumerate(levels) if lv in values]
        parts.append(_polyline(pts, colour))
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in pts]
    return _svg(w, h, parts, title)


def dots_svg(per_dataset: dict[str, dict[str, float]], title: str) -> str:
    """MAE (pp) per dataset: one row per dataset, one dot per entry."""
    datasets = sorted({d for v in per_dataset.values() for d in v})
    top = max([m for v in per_dataset.values() for m in v.values()] + [1.0])
    row = 14
    w, h = 420, 40 + row * max(len(datasets), 1)
    ax = _Axes(w, h, (0, top * 1.05), (0, max(len(datasets), 1)), left=125)
    parts = ax.frame(title, "MAE (pp)", "", [0, round(top / 2, 1), round(top, 1)], [])
    for i, d in enumerate(datasets):
        y = ax.py(len(datasets) - i - 0.5)
        parts.append(f'<text x="{ax.left - 4}" y="{y + 3:.1f}" class="k r">'
                     f"{_e(d)}</text>")
        for j, values in enumerate(per_dataset.values()):
            if d in values:
                parts.append(f'<circle cx="{ax.px(values[d]):.1f}" cy="{y:.1f}" r="3" '
                             f'fill="{PALETTE[j % len(PALETTE)]}" fill-opacity="0.85"/>')
    return _svg(w, h, parts, title)


# ----------------------------------------------------------------------------- the page

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;white-space:nowrap}
td:nth-child(2),th:nth-child(2),td:last-child{text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none}
th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
tr:nth-child(even) td{background:#fafafa}
.grid{display:flex;flex-wrap:wrap;gap:6px}
.plots{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
svg text{font-size:9px;text-anchor:middle;fill:#333}svg text.t{font-size:10px;font-weight:600}
svg text.l{font-size:9px}svg text.r{text-anchor:end}
.key{display:inline-block;margin-right:12px;font-size:12px}
.key i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:5px}
.note{color:#555;font-size:13px}
"""

SCRIPT = """
function cellValue(td){var t=td.textContent.trim();var m=t.match(/^[-+]?\\d+(\\.\\d+)?/);
  return (t==='-'||t==='')?null:(m?parseFloat(m[0]):t.toLowerCase());}
function sortTable(th){var table=th.closest('table');var body=table.tBodies[0];
  var i=Array.prototype.indexOf.call(th.parentNode.children,th);
  var asc=!th.classList.contains('asc');
  Array.prototype.forEach.call(th.parentNode.children,function(h){h.classList.remove('asc','desc');});
  th.classList.add(asc?'asc':'desc');
  var rows=Array.prototype.slice.call(body.rows);
  rows.sort(function(a,b){var x=cellValue(a.cells[i]),y=cellValue(b.cells[i]);
    if(x===null)return 1;if(y===null)return -1;
    var r=(typeof x==='number'&&typeof y==='number')?x-y:String(x).localeCompare(String(y));
    return asc?r:-r;});
  rows.forEach(function(r){body.appendChild(r);});
  table.setAttribute('data-sorted-by',th.textContent+(asc?' asc':' desc'));}
document.querySelectorAll('table.sortable th').forEach(function(th){
  th.addEventListener('click',function(){sortTable(th);});});
var s=location.hash.match(/^#sort=(\\d+)$/);
if(s){document.querySelectorAll('table.sortable').forEach(function(t){
  var th=t.tHead.rows[0].cells[parseInt(s[1])];if(th)sortTable(th);});}
"""


def _table_html(table: TargetTable) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>"
                   for row in table.rows)
    return (f'<table class="sortable" data-target="{_e(table.target)}"><thead><tr>{head}'
            f"</tr></thead><tbody>{body}</tbody></table>")


def _section(table: TargetTable) -> str:
    suite, model, adapter = table.group
    anchor = f"{table.target}-{suite}-{model}-{adapter}".replace(" ", "_")
    parts = [f'<section class="target" id="{_e(anchor)}" data-target="{_e(table.target)}">',
             f"<h2>Target {_e(table.target)}: suite {_e(suite)}, model {_e(model)}, adapter "
             f"{_e(adapter)}</h2>",
             '<p class="note">MAE in pp against this target, per-dataset averaged; click a '
             "header to sort.</p>",
             *([f'<p class="note">{_e(table.choice)}.</p>'] if table.choice else []),
             _table_html(table)]
    if table.aliases:
        parts.append('<p class="note">' + "; ".join(
            f"{_e(a)}: alias of {_e(of)} (same numbers, shown once)"
            for a, of in table.aliases.items()) + "</p>")
    if table.panels:
        parts.append("<h3>Estimated vs true accuracy, one panel per estimator</h3>"
                     '<p class="note">filled: eval cells; hollow: calibration cells; dashed: '
                     "identity; inset: the fitted map f(score) with the true accuracies.</p>")
        parts.append('<div class="grid">' + "".join(
            panel_svg(p, PALETTE[i % len(PALETTE)]) for i, p in enumerate(table.panels))
            + "</div>")
    plots = []
    if table.per_severity:
        plots.append(lines_svg(table.per_severity, "MAE per severity"))
    if table.per_dataset:
        plots.append(dots_svg(table.per_dataset, "MAE per dataset"))
    if plots:
        names = list(dict.fromkeys([*table.per_severity, *table.per_dataset]))
        parts.append(f"<h3>MAE per severity and per dataset</h3><div>{_legend(names)}</div>"
                     f'<div class="plots">{"".join(plots)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def write_report(lb: Leaderboard, cells: list[Cell], out_dir: Path) -> Path:
    """Write ``report.html`` next to the leaderboard files (atomically); returns its path."""
    path = Path(out_dir) / "report.html"
    write_bytes_atomic(path, render(report_from_leaderboard(lb, cells)))
    return path


def render(report: Report) -> str:
    """The page: inline CSS, JS and SVG only."""
    facts = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in report.protocol)
    links = " · ".join(f'<a href="{_e(n)}">{_e(n)}</a>' for n in report.links)
    contents = "".join(f'<li><a href="#{_e(t.target)}-{_e("-".join(t.group)).replace(" ", "_")}">'
                       f"{_e(t.target)} ({_e(', '.join(t.group))})</a></li>"
                       for t in report.tables)
    body = "\n".join(_section(t) for t in report.tables) or "<p>(no scored entries)</p>"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(report.title)}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>{_e(report.title)}</h1>\n<p>Files: {links}</p>\n"
            + (f'<p class="note">{_e(report.statistics)}</p>\n' if report.statistics else "")
            + f"<ul>{contents}</ul>\n{body}\n"
            f'<h2>Protocol</h2><table class="facts">{facts}</table>\n'
            f"<script>{SCRIPT}</script>\n</body></html>\n")

