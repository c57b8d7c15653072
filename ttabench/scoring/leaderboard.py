"""Leaderboards from finished cells: tables, files (CSV, Markdown, HTML, JSON, PNG), console text.

Cells are grouped by (suite, model, adapter); within a group every entry (see
``ttabench.scoring.maps``) is scored on the eval cells against every target, and ranked by its
MAE against its declared target.

Paired difference rule: the row of entry A against target t is compared with the entry of a
*different estimator* that has the lowest MAE against the same target t in the same group (the
best other method); ``diff = MAE_A - MAE_best_other`` on the cells both scored, with a paired
bootstrap interval (negative: A is better; ``significant``: 0 outside the interval).
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ttabench.errors import TTABenchError
from ttabench.runner.store import write_bytes_atomic
from ttabench.scoring import metrics
from ttabench.scoring.aliases import find_aliases
from ttabench.scoring.maps import TARGETS, Entry, build_entries, role, truth

CELL_SCHEMA = "ttabench.cell/1"
LEADERBOARD_SCHEMA = "ttabench.leaderboard/1"
GROUP = ["suite", "model", "adapter"]


# ----------------------------------------------------------------------------- loading cells


def load_cells(dirs: list[Path] | list[str]) -> list[dict[str, Any]]:
    """All cell results in run folders: ``<dir>/cells/*.json``, or ``<dir>/*.json`` if ``dir``
    holds the JSON files itself.

    Stray ``.tmp`` files and JSON files of another schema are ignored. A cell found in several
    folders (same key) is kept once, a finished copy before a failed one. Raises
    TTABenchError when a folder is missing, a file is unreadable or no cell is found.
    """
    by_key: dict[str, dict[str, Any]] = {}
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise TTABenchError(f"run folder not found: {folder}")
        cells_dir = folder / "cells" if (folder / "cells").is_dir() else folder
        for path in sorted(cells_dir.glob("*.json")):
            if path.name.endswith(".tmp"):
                continue
            try:
                cell = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise TTABenchError(
                    f"cannot read cell file {path}: {str(err).splitlines()[0]}; delete it and "
                    f"re-run that cell"
                ) from None
            if not isinstance(cell, dict) or cell.get("schema") != CELL_SCHEMA:
                continue
            key = str(cell.get("key") or path.stem)
            cell["key"] = key
            old = by_key.get(key)
            if old is None or (old.get("status") != "ok" and cell.get("status") == "ok"):
                by_key[key] = cell
    if not by_key:
        raise TTABenchError(
            f"no cell results found in {', '.join(map(str, dirs))}; run `ttabench run` first"
        )
    return [by_key[k] for k in sorted(by_key)]


def _failed_record(cell: dict[str, Any]) -> dict[str, Any]:
    return {
        "key": cell.get("key"),
        "suite": cell.get("suite"),
        "model": cell.get("model"),
        "adapter": cell.get("adapter"),
        "split": (cell.get("split") or {}).get("name"),
        "seed": cell.get("seed"),
        "error": cell.get("error") or "unknown error",
    }


# ----------------------------------------------------------------------------- the leaderboard


@dataclass
class Leaderboard:
    """Scores of every entry, ready to print or write.

    ``table``: one row per (group, entry, target), ranked by MAE against the declared target
    (skipped entries last, with ``note``). MAE, CI, worst case and differences are in pp.
    ``per_severity`` / ``per_dataset``: MAE against the declared target, long format.
    ``online``: per (suite, model, adapter), the mean accuracy (%) of each target over eval
    cells, per-dataset averaged; ``adapted`` is the adapted model's online accuracy.
    ``pairs``: every (estimate, true) accuracy pair (fractions) behind the table.
    """

    table: pd.DataFrame
    per_severity: pd.DataFrame
    per_dataset: pd.DataFrame
    online: pd.DataFrame
    pairs: pd.DataFrame
    skipped: pd.DataFrame
    failed: list[dict[str, Any]] = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0


TABLE_COLUMNS = [
    *GROUP, "rank", "entry", "estimator", "map", "input", "declared", "target", "mae",
    "ci_low", "ci_high", "worst", "pearson", "spearman", "n_cells", "n_datasets", "n_calib",
    "vs", "diff", "diff_low", "diff_high", "significant", "note",
]


def _group_key(cell: dict[str, Any]) -> tuple[str, str, str]:
    return (str(cell.get("suite")), str(cell.get("model")), str(cell.get("adapter")))


class _Scored:
    """Estimate/truth arrays of one (entry, target) on the eval cells it covers."""

    def __init__(self, entry: Entry, target: str, cells: dict[str, dict[str, Any]]):
        self.entry = entry
        self.target = target
        self.keys = [
            k for k in sorted(entry.estimates.get(target, {}))
            if k in cells and truth(cells[k], target) is not None
        ]
        self.est = np.asarray([entry.estimates[target][k] for k in self.keys])
        self.true = np.asarray([truth(cells[k], target) for k in self.keys])
        self.datasets = [str(cells[k]["split"].get("dataset")) for k in self.keys]
        self.severities = [cells[k]["split"].get("severity") for k in self.keys]
        self.mae = metrics.mae_by_dataset(self.est, self.true, self.datasets) if self.keys else None


def _paired(a: _Scored, b: _Scored, n_boot: int, seed: int) -> metrics.PairedDifference | None:
    common = sorted(set(a.keys) & set(b.keys))
    if len(common) < 2:
        return None
    ia = {k: i for i, k in enumerate(a.keys)}
    ib = {k: i for i, k in enumerate(b.keys)}
    return metrics.paired_difference(
        a.est[[ia[k] for k in common]], b.est[[ib[k] for k in common]],
        a.true[[ia[k] for k in common]], [a.datasets[ia[k]] for k in common],
        n_boot=n_boot, seed=seed,
    )


def _score_group(
    group: tuple[str, str, str], cells: list[dict[str, Any]], n_boot: int, seed: int
) -> dict[str, list[dict[str, Any]]]:
    labels = dict(zip(GROUP, group))
    entries, skipped = build_entries(cells)
    eval_cells = {c["key"]: c for c in cells if role(c) == "eval"}
    scored = {
        (e.name, t): s for e in entries for t in TARGETS
        if (s := _Scored(e, t, eval_cells)).keys
    }
    ranked = sorted(
        (e for e in entries if (e.name, e.declared) in scored),
        key=lambda e: (scored[e.name, e.declared].mae, e.name),
    )
    rows, sev_rows, ds_rows, pair_rows = [], [], [], []
    for rank, entry in enumerate(ranked, start=1):
        targets = [entry.declared] + [t for t in TARGETS if t != entry.declared]
        for target in targets:
            if (entry.name, target) not in scored:
                continue
            s = scored[entry.name, target]
            low, high = metrics.bootstrap_ci(s.est, s.true, s.datasets, n_boot=n_boot, seed=seed)
            row = {
                **labels, "rank": rank, "entry": entry.name, "estimator": entry.estimator,
                "map": entry.map, "input": entry.input, "declared": entry.declared,
                "target": target, "mae": s.mae, "ci_low": low, "ci_high": high,
                "worst": metrics.worst_case(s.est, s.true),
                "pearson": metrics.pearson(s.est, s.true),
                "spearman": metrics.spearman(s.est, s.true),
                "n_cells": len(s.keys), "n_datasets": len(set(s.datasets)),
                "n_calib": len(entry.calibration_keys.get(target, [])),
                "note": entry.note,
            }
            others = [
                scored[e.name, target] for e in entries
                if e.estimator != entry.estimator and (e.name, target) in scored
            ]
            if others:
                best = min(others, key=lambda o: (o.mae, o.entry.name))
                diff = _paired(s, best, n_boot, seed)
                if diff is not None:
                    row.update(vs=best.entry.name, diff=diff.difference, diff_low=diff.low,
                               diff_high=diff.high, significant=diff.significant)
            rows.append(row)
            for key, est, true in zip(s.keys, s.est, s.true):
                split = eval_cells[key]["split"]
                pair_rows.append({
                    **labels, "entry": entry.name, "target": target, "key": key,
                    "dataset": split.get("dataset"), "split": split.get("name"),
                    "severity": split.get("severity"), "estimate": float(est), "true": float(true),
                })
            if target != entry.declared:
                continue
            by_sev = metrics.mae_by_severity(s.est, s.true, s.datasets, s.severities)
            for level, mae in by_sev.items():
                n = sum(1 for v in s.severities if v == level)
                sev_rows.append({**labels, "entry": entry.name, "severity": level, "mae": mae,
                                 "n_cells": n})
            for dataset in sorted(set(s.datasets)):
                mask = np.asarray([d == dataset for d in s.datasets])
                ds_rows.append({
                    **labels, "entry": entry.name, "dataset": dataset,
                    "mae": metrics.mae_by_dataset(s.est[mask], s.true[mask], [dataset] * int(mask.sum())),
                    "n_cells": int(mask.sum()),
                })
    scored_names = {e.name for e in ranked}
    skip_rows = []
    for skip in skipped:
        skip_rows.append({**labels, "entry": skip.name, "estimator": skip.estimator,
                          "reason": skip.reason, "n_cells": skip.n_cells})
        if skip.name not in scored_names:
            rows.append({**labels, "entry": skip.name, "estimator": skip.estimator,
                         "note": f"skipped: {skip.reason}"})
    online = {**labels, "n_cells": len(eval_cells)}
    for target in TARGETS:
        accs = [(truth(c, target), str(c["split"].get("dataset"))) for c in eval_cells.values()]
        accs = [(a, d) for a, d in accs if a is not None]
        online[target] = (
            100.0 * metrics.mean_by_dataset([a for a, _ in accs], [d for _, d in accs])
            if accs else None
        )
    return {"rows": rows, "sev": sev_rows, "ds": ds_rows, "pairs": pair_rows,
            "skipped": skip_rows, "online": [online]}


def build_leaderboard(cells: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0) -> Leaderboard:
    """Score every estimator of the finished cells (failed cells are listed, not scored).

    See the module docstring for grouping, ranking and the paired-difference rule.
    """
    ok = [c for c in cells if c.get("status") == "ok"]
    failed = [_failed_record(c) for c in cells if c.get("status") != "ok"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for cell in ok:
        groups.setdefault(_group_key(cell), []).append(cell)
    parts: dict[str, list[dict[str, Any]]] = {k: [] for k in ("rows", "sev", "ds", "pairs", "skipped", "online")}
    for group in sorted(groups):
        for name, rows in _score_group(group, groups[group], n_boot, seed).items():
            parts[name].extend(rows)
    table = pd.DataFrame(parts["rows"], columns=TABLE_COLUMNS)
    for column in ("rank", "n_cells", "n_datasets", "n_calib"):
        table[column] = table[column].astype("Int64")
    return Leaderboard(
        table=table,
        per_severity=pd.DataFrame(parts["sev"], columns=[*GROUP, "entry", "severity", "mae", "n_cells"],
                                  dtype=object).astype({"mae": float, "n_cells": int}),
        per_dataset=pd.DataFrame(parts["ds"], columns=[*GROUP, "entry", "dataset", "mae", "n_cells"]),
        online=pd.DataFrame(parts["online"], columns=[*GROUP, *TARGETS, "n_cells"]),
        pairs=pd.DataFrame(parts["pairs"], columns=[*GROUP, "entry", "target", "key", "dataset",
                                                    "split", "severity", "estimate", "true"]),
        skipped=pd.DataFrame(parts["skipped"], columns=[*GROUP, "entry", "estimator", "reason", "n_cells"]),
        failed=failed,
        n_boot=n_boot,
        seed=seed,
    )


# ----------------------------------------------------------------------------- text views


def _groups(lb: Leaderboard) -> list[tuple[str, str, str]]:
    keys = set(map(tuple, lb.table[GROUP].itertuples(index=False)))
    keys |= set(map(tuple, lb.online[GROUP].itertuples(index=False)))
    return sorted(keys)


def _select(df: pd.DataFrame, group: tuple[str, str, str]) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for column, value in zip(GROUP, group):
        mask &= (df[column] == value).to_numpy()
    return df[mask]


def _severity_label(level: Any) -> str:
    return "sev n/a" if level is None or (isinstance(level, float) and np.isnan(level)) else f"sev {level}"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def _same(column: pd.Series, value: Any) -> pd.Series:
    """Elementwise ``column == value`` where ``None`` equals ``None``."""
    return column.map(lambda v: v is None if value is None else v == value).astype(bool)


def _count(value: Any) -> str:
    return "-" if pd.isna(value) else str(int(value))


def _main_view(lb: Leaderboard, group: tuple[str, str, str]) -> pd.DataFrame:
    """Declared-target rows (and skipped entries) of one group, with per-severity MAE columns.

    An entry repeating another's numbers exactly is left out; the row it repeats notes it
    (``aliases: ...``)."""
    table = _select(lb.table, group)
    declared = table[(table["target"] == table["declared"]) | table["target"].isna()]
    sev = _select(lb.per_severity, group)
    levels = list(dict.fromkeys(sev["severity"].tolist()))
    aliases = {k[3]: v for k, v in find_aliases(lb.table, lb.pairs).items() if k[:3] == group}
    rows = []
    for _, r in declared.iterrows():
        if r["entry"] in aliases:
            continue
        same = [a for a, of in aliases.items() if of == r["entry"]]
        note = r["note"] if isinstance(r["note"], str) else ""
        if same:
            note = "; ".join([*([note] if note else []), f"aliases: {', '.join(same)} "
                              "(alias of this entry: same numbers)"])
        row = {
            "rank": _fmt(r["rank"]), "entry": r["entry"], "target": _fmt(r["declared"]),
            "MAE": _fmt(r["mae"]),
            "95% CI": "-" if pd.isna(r["mae"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            "worst": _fmt(r["worst"]),
        }
        for level in levels:
            hit = sev[(sev["entry"] == r["entry"]) & _same(sev["severity"], level)]
            row[_severity_label(level)] = _fmt(hit["mae"].iloc[0]) if len(hit) else "-"
        row.update({
            "pearson": _fmt(r["pearson"]), "spearman": _fmt(r["spearman"]),
            "cells": _count(r["n_cells"]), "datasets": _count(r["n_datasets"]),
            "calib": _count(r["n_calib"]) if r["map"] in ("linear", "quadratic") else "-",
            "vs best other": "-" if pd.isna(r["diff"]) else (
                f"{r['vs']}: {r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]"
                + (" *" if r["significant"] else "")
            ),
            "note": note,
        })
        rows.append(row)
    return pd.DataFrame(rows)


def _pivot(df: pd.DataFrame, columns: str, order: list[Any] | None = None) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame()
    entries = list(dict.fromkeys(df["entry"]))
    labels = order or list(dict.fromkeys(df[columns].tolist()))
    rows = []
    for entry in entries:
        part = df[df["entry"] == entry]
        row = {"entry": entry}
        for label in labels:
            hit = part[_same(part[columns], label)]
            name = _severity_label(label) if columns == "severity" else str(label)
            row[name] = _fmt(hit["mae"].iloc[0]) if len(hit) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def _sections(lb: Leaderboard) -> list[tuple[str, pd.DataFrame]]:
    """Titled tables shared by the Markdown and HTML files."""
    sections = []
    aliases = find_aliases(lb.table, lb.pairs)
    for group in _groups(lb):
        title = f"suite {group[0]}, model {group[1]}, adapter {group[2]}"
        sections.append((f"Leaderboard: {title} (MAE in pp against the declared target)",
                         _main_view(lb, group)))

        def shown(df: pd.DataFrame, group: tuple[str, str, str] = group) -> pd.DataFrame:
            return df[~df["entry"].map(lambda e: (*group, e) in aliases)]

        table = shown(_select(lb.table, group).dropna(subset=["target"]))
        sections.append((f"MAE (pp) against every target: {title}",
                         _pivot(table, "target", list(TARGETS))))
        sections.append((f"MAE (pp) per dataset: {title}",
                         _pivot(shown(_select(lb.per_dataset, group)), "dataset")))
    online = lb.online.copy()
    for target in TARGETS:
        online[target] = online[target].map(_fmt)
    sections.append(("Mean accuracy (%) of each target over eval cells; adapted = online accuracy",
                     online))
    if not lb.skipped.empty:
        sections.append(("Skipped", lb.skipped))
    if lb.failed:
        sections.append(("Failed cells", pd.DataFrame(lb.failed)))
    return sections


def _markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    cells = [[str(c) for c in df.columns]] + [[_fmt(v) for v in row] for row in df.itertuples(index=False)]
    cells = [[c.replace("|", "\\|").replace("\n", " ") for c in row] for row in cells]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def to_markdown(lb: Leaderboard) -> str:
    """The leaderboard as a Markdown document."""
    parts = ["# ttabench leaderboard", "",
             f"MAE in percentage points, per-dataset averaged; 95% bootstrap intervals over "
             f"eval cells ({lb.n_boot} resamples, seed {lb.seed}). `vs best other`: paired "
             f"difference to the best entry of another estimator (* = 0 outside the interval)."]
    for title, df in _sections(lb):
        parts += ["", f"## {title}", "", _markdown_table(df)]
    return "\n".join(parts) + "\n"


def to_html(lb: Leaderboard) -> str:
    """The leaderboard as one self-contained HTML page (inline style, no external assets)."""
    body = []
    for title, df in _sections(lb):
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(df.to_html(index=False, na_rep="-", classes="leaderboard") if not df.empty
                    else "<p>(none)</p>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#eee}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ttabench leaderboard</title>"
        f"<style>{style}</style></head><body>\n<h1>ttabench leaderboard</h1>\n"
        f"<p>MAE in percentage points, per-dataset averaged; 95% bootstrap intervals over eval "
        f"cells ({lb.n_boot} resamples, seed {lb.seed}).</p>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def to_json(lb: Leaderboard) -> dict[str, Any]:
    """A JSON-ready copy of every table (NaN as null)."""
    return {
        "schema": LEADERBOARD_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_boot": lb.n_boot, "seed": lb.seed,
        "table": _records(lb.table), "per_severity": _records(lb.per_severity),
        "per_dataset": _records(lb.per_dataset), "online": _records(lb.online),
        "skipped": _records(lb.skipped), "failed": lb.failed,
    }


def format_console(lb: Leaderboard) -> str:
    """The text printed at the end of a run: one table per group, then skipped and failed."""
    lines = []
    for group in _groups(lb):
        view = _main_view(lb, group)
        online = _select(lb.online, group)
        lines.append(f"== suite {group[0]}, model {group[1]}, adapter {group[2]}: MAE (pp) "
                     f"against the declared target ==")
        if view.empty:
            lines.append("(no scored entries)")
        else:
            view = view.drop(columns=["pearson", "spearman", "datasets", "calib", "vs best other"])
            view["note"] = [
                "skipped (see below)" if n.startswith("skipped:")
                else "has aliases (below)" if "aliases:" in n else n for n in view["note"]
            ]
            if not any(view["note"]):
                view = view.drop(columns=["note"])
            lines.append(view.to_string(index=False))
        if len(online):
            accs = ", ".join(f"{t} {_fmt(online[t].iloc[0], 1)}" for t in TARGETS)
            lines.append(f"mean accuracy % over {online['n_cells'].iloc[0]} eval cells: {accs}")
        for alias, of in find_aliases(lb.table, lb.pairs).items():
            if alias[:3] == group:
                lines.append(f"{alias[3]}: alias of {of} (same numbers, shown once)")
        lines.append("")
    if not lb.skipped.empty:
        lines.append("skipped:")
        for _, r in lb.skipped.iterrows():
            lines.append(f"  [{r['adapter']}] {r['entry']}: {r['reason']} ({r['n_cells']} cells)")
    if lb.failed:
        lines.append(f"failed cells ({len(lb.failed)}):")
        for f in lb.failed:
            lines.append(f"  {f['key']} {f['split']} {f['adapter']} seed {f['seed']}: {f['error']}")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- files


def scatter_png(lb: Leaderboard) -> bytes:
    """Estimated vs true accuracy (%), one panel per group, one colour per estimator.

    Each estimator shows its best-ranked entry against its declared target; the dashed line
    is the identity (a perfect estimator lies on it).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    groups = _groups(lb) or [("-", "-", "-")]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 5.5), squeeze=False)
    for ax, group in zip(axes[0], groups):
        table = _select(lb.table, group).dropna(subset=["mae"])
        best = table[table["target"] == table["declared"]].sort_values("rank")
        best = best.drop_duplicates("estimator")
        pairs = _select(lb.pairs, group)
        colours = plt.get_cmap("tab20" if len(best) > 10 else "tab10")
        for i, (_, r) in enumerate(best.iterrows()):
            p = pairs[(pairs["entry"] == r["entry"]) & (pairs["target"] == r["target"])]
            ax.scatter(100 * p["true"], 100 * p["estimate"], s=18, alpha=0.8,
                       color=colours(i % colours.N), label=f"{r['entry']} vs {r['target']} ({r['mae']:.1f} pp)")
        ax.plot([0, 100], [0, 100], "k--", linewidth=1, label="identity")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel("true accuracy (%)")
        ax.set_ylabel("estimated accuracy (%)")
        ax.set_title(f"{group[1]} on {group[0]}, adapter {group[2]}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


def write_leaderboard(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """Write leaderboard.{csv,md,html,json}, pairs.csv and scatter.png into ``out_dir``.

    Every file is written atomically. Returns the paths written.
    """
    out_dir = Path(out_dir)
    files: dict[str, bytes | str] = {
        "leaderboard.csv": lb.table.to_csv(index=False),
        "leaderboard.md": to_markdown(lb),
        "leaderboard.html": to_html(lb),
        "leaderboard.json": json.dumps(to_json(lb), indent=2, sort_keys=True, allow_nan=False) + "\n",
        "pairs.csv": lb.pairs.to_csv(index=False),
        "scatter.png": scatter_png(lb),
    }
    paths = []
    for name, data in files.items():
        write_bytes_atomic(out_dir / name, data)
        paths.append(out_dir / name)
    return paths
