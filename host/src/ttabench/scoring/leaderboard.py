"""Leaderboards from finished cells: one table per target, files (CSV, Markdown, HTML, JSON,
PNG) and console text.

Cells are grouped by (suite, model, adapter). Each group has one table per target, in the
order ``source`` (the paper's target), ``bn``, ``adapted``: every entry of a target's table
estimates that target from that target's view (``ttabench.scoring.maps``), is scored on the
eval cells against it, and is ranked within that table only. No output ranks entries of
different targets together.

Chosen baseline of a table: the ``baseline``-role entry with the lowest leave-one-dataset-out
MAE on the calibration cells (``ttabench.scoring.lodo``: a mapped entry's map refitted without
each calibration dataset in turn; a stack with its feature selection redone inside that loop;
a direct entry: its plain error there, nothing being fitted), never looking at evaluation
results. The chosen candidate is picked the same way among the ``candidate``-role entries.
The table also names the best baseline after the fact (lowest evaluation MAE), labelled as
such, for reference only.

Paired differences: every other entry of a table against the chosen baseline,
``diff = MAE_entry - MAE_baseline`` on the cells both scored, with a paired bootstrap interval
(negative: the entry is better). Intervals resample datasets, then splits within each
(``boot_unit="dataset"``, the default) or splits (``"split"``). The p-values of a table's
comparisons are Holm-corrected together; ``significant``: Holm-adjusted p < 0.05.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ttabench.errors import TTABenchError
from ttabench.records import Cell, read_cell
from ttabench.spec import ScoringSpec
from ttabench.store import write_bytes_atomic
from ttabench.scoring import metrics
from ttabench.scoring.aliases import find_aliases
from ttabench.scoring.cross_model import rank_correlation
from ttabench.scoring.lodo import NAME as LODO, SHORT as LODO_SHORT
from ttabench.scoring.windows import WINDOW_TARGET, window_cells
from ttabench.scoring.maps import (
    KIND_OF_MAP,
    VALUE,
    Entry,
    build_entries,
    direct_estimate,
    kind_lodo_mae,
    labelled_points,
    record,
    role,
    truth,
)
from ttabench.scoring.maps import TARGETS as TARGETS

LEADERBOARD_SCHEMA = "ttabench.leaderboard/2"
GROUP = ["suite", "model", "adapter"]
ALPHA = 0.05


# ----------------------------------------------------------------------------- loading cells


def load_cells(dirs: list[Path] | list[str], ignored: list[str] | None = None) -> list[Cell]:
    """All cell records in run folders: ``<dir>/cells/*.json``, or ``<dir>/*.json`` if ``dir``
    holds the JSON files itself.

    Stray ``.tmp`` files and JSON files that are no ttabench cell are skipped; a cell of the
    old schema is refused (rerun). A cell file that cannot be read or fails the cell schema
    (``ttabench.records.read_cell``: wrong types, values out of range, a finished cell missing
    its split, targets or estimators, a key other than its file name) is left out like an
    unfinished cell, which a rerun recomputes; ``ignored`` (when given) collects one line per
    such file. A cell found in several folders (same key) is kept once, a finished copy before
    a failed one. Raises TTABenchError when a folder is missing or no cell is found.
    """
    by_key: dict[str, Cell] = {}
    damaged: list[str] = []
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise TTABenchError(f"run folder not found: {folder}")
        cells_dir = folder / "cells" if (folder / "cells").is_dir() else folder
        for path in sorted(cells_dir.glob("*.json")):
            if path.name.endswith(".tmp") or not _claims_to_be_a_cell(path):
                continue
            try:
                cell = read_cell(path)
            except TTABenchError as err:
                if "from before per-view scoring" in str(err):
                    raise
                damaged.append(str(err))
                continue
            old = by_key.get(cell.key)
            if old is None or (old.status != "ok" and cell.status == "ok"):
                by_key[cell.key] = cell
    if not by_key:
        why = (f"; every cell file is damaged ({len(damaged)}), first: {damaged[0]}" if damaged
               else "; run `ttabench run` first")
        raise TTABenchError(f"no cell results found in {', '.join(map(str, dirs))}{why}")
    if ignored is not None:
        ignored.extend(damaged)
    return [by_key[k] for k in sorted(by_key)]


def _claims_to_be_a_cell(path: Path) -> bool:
    """Whether a JSON file says it is a ttabench cell (or cannot be read at all, which a cell
    file half-written or damaged may be): other JSON files of a folder are not cells."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return True
    return not isinstance(data, dict) or str(data.get("schema", "")).startswith("ttabench.cell/")


def _failed_record(cell: Cell) -> dict[str, Any]:
    return {
        "key": cell.key, "suite": cell.suite, "model": cell.model, "adapter": cell.adapter,
        "split": cell.split.get("name"), "seed": cell.seed,
        "error": cell.error or "unknown error",
    }


# ----------------------------------------------------------------------------- the leaderboard


TABLE_COLUMNS = [
    *GROUP, "target", "rank", "entry", "estimator", "role", "map", "input", "mae", "ci_low",
    "ci_high", "worst", "pearson", "spearman", "n_cells", "n_datasets", "n_calib", "calib_loo",
    "vs", "diff", "diff_low", "diff_high", "p_holm", "significant", "note", "alias_of",
]
CROSS_MODEL_COLUMNS = ["suite", "adapter", "target", "entry", "spearman", "ci_low", "ci_high",
                       "n_models", "n_splits", "n_datasets", "n_undefined"]
CHOICE_COLUMNS = [*GROUP, "target", "chosen_baseline", "chosen_calib_loo", "chosen_mae",
                  "best_after_the_fact", "best_after_the_fact_mae", "chosen_candidate",
                  "candidate_calib_loo", "candidate_mae", "n_calib_datasets"]


@dataclass
class Leaderboard:
    """Scores of every entry, one table per (group, target), ready to print or write.

    ``table``: one row per (group, target, entry), ranked by MAE within its (group, target)
    (skipped entries last, with ``note``). MAE, CI, worst case and differences are in pp.
    ``alias_of``: the entry a row repeats exactly in its table (``alias_column``), read by
    every writer (such a row is shown once, as a note of the row it repeats).
    ``choices``: per (group, target) the chosen baseline and candidate (calibration
    leave-one-dataset-out) and the
    best baseline after the fact (evaluation MAE). ``per_severity`` / ``per_dataset``: MAE per
    target, long format. ``online``: per group, the mean accuracy (%) of each target over eval
    cells, per-dataset averaged. ``pairs``: every (estimate, true) pair behind the table.
    """

    table: pd.DataFrame
    choices: pd.DataFrame
    per_severity: pd.DataFrame
    per_dataset: pd.DataFrame
    online: pd.DataFrame
    pairs: pd.DataFrame
    skipped: pd.DataFrame
    failed: list[dict[str, Any]] = field(default_factory=list)
    n_boot: int = 1000
    seed: int = 0
    boot_unit: str = "dataset"
    map_kinds: tuple[str, ...] = ScoringSpec.map_kinds
    #: The per-window table (``ttabench.scoring.windows``): rows as ``table``'s, target
    #: ``adapted`` against each window's online accuracy; its baseline choices; the window.
    windows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TABLE_COLUMNS))
    window_choices: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=CHOICE_COLUMNS))
    window_steps: list[int] = field(default_factory=list)
    #: The entries (with their fitted maps) of every (group, target) table, for the report.
    entries: dict[tuple[tuple[str, str, str], str], list[Entry]] = field(default_factory=dict)
    #: Cross-model scores (``cross_model_table``): empty unless cells of several models share
    #: a suite, an adapter and splits.
    cross_model: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=CROSS_MODEL_COLUMNS))


def _group_key(cell: Cell) -> tuple[str, str, str]:
    return (str(cell.suite), str(cell.model), str(cell.adapter))


#: The protocol facts that make a group's setting: cells of one (suite, model, adapter) group
#: that differ in one of them (another lr, batch size, step count, weights...) measure
#: different things and are never pooled into one table.
SETTING_FACTS: tuple[str, ...] = ("model", "adapter", "batch_size", "steps", "compute")


def check_one_setting(group: tuple[str, ...], cells: list[Cell]) -> None:
    """Refuse a group whose cells come from several settings (``SETTING_FACTS``), naming the
    first fact that differs and two cells that differ in it."""
    first = cells[0]
    for cell in cells[1:]:
        for fact in SETTING_FACTS:
            if cell.protocol.get(fact) != first.protocol.get(fact):
                raise TTABenchError(
                    f"cells {first.key} and {cell.key} of {'/'.join(group)} come from two "
                    f"settings (their protocols differ in {fact!r}); score the run folders of "
                    "each setting separately"
                )


class _Scored:
    """Estimate/truth arrays of one entry of a target's table on the eval cells it covers."""

    def __init__(self, entry: Entry, target: str, cells: dict[str, Cell]):
        self.entry = entry
        self.target = target
        self.keys = [
            k for k in sorted(entry.estimates.get(target, {}))
            if k in cells and truth(cells[k], target) is not None
        ]
        self.est = np.asarray([entry.estimates[target][k] for k in self.keys])
        self.true = np.asarray([truth(cells[k], target) for k in self.keys])
        self.datasets = [cells[k].dataset for k in self.keys]
        self.severities = [cells[k].split.get("severity") for k in self.keys]
        self.mae = metrics.mae_by_dataset(self.est, self.true, self.datasets) if self.keys else None


def _paired(a: _Scored, b: _Scored, n_boot: int, seed: int,
            unit: str) -> metrics.PairedDifference | None:
    common = sorted(set(a.keys) & set(b.keys))
    if len(common) < 2:
        return None
    ia = {k: i for i, k in enumerate(a.keys)}
    ib = {k: i for i, k in enumerate(b.keys)}
    return metrics.paired_difference(
        a.est[[ia[k] for k in common]], b.est[[ib[k] for k in common]],
        a.true[[ia[k] for k in common]], [a.datasets[ia[k]] for k in common],
        n_boot=n_boot, seed=seed, unit=unit,
    )


def calibration_loo(entry: Entry, target: str, calib: list[Cell]) -> float | None:
    """The entry's leave-one-dataset-out MAE (pp) on the calibration cells against ``target``.

    A ``[best]`` or ``[stack]`` entry: its nested error (``Entry.calibration_lodo``, the choice
    redone inside the loop); another mapped entry: ``maps.kind_lodo_mae`` of its map's kind on
    its calibration cells; a direct entry (or one with its own
    calibration): its plain MAE there, since nothing was fitted on them. None without at least
    two usable calibration cells (or, for a map, when a dataset left out leaves too few points
    or distinct scores to fit it).
    """
    if entry.nested:
        return entry.calibration_lodo
    if entry.map in KIND_OF_MAP:
        keys = set(entry.calibration_keys.get(target, []))
        kind = KIND_OF_MAP[entry.map]
        _, x, y, datasets = labelled_points([c for c in calib if c.key in keys], entry.estimator,
                                            entry.input or VALUE, target)
        mae = kind_lodo_mae(kind, x, y, datasets)
        return float(mae) if np.isfinite(mae) else None
    est: list[float] = []
    true: list[float] = []
    of_dataset: list[str] = []
    for cell in calib:
        res = record(cell, entry.estimator, target)
        kind = cell.estimators[entry.estimator].kind if res is not None else "direct"
        value = direct_estimate(res, kind) if res is not None else None
        if value is not None and (actual := truth(cell, target)) is not None:
            est.append(value)
            true.append(actual)
            of_dataset.append(cell.dataset)
    return metrics.mae_by_dataset(est, true, of_dataset) if len(est) >= 2 else None


def _lowest_loo(entries: list[Entry], loo: dict[str, float | None]) -> Entry | None:
    """The entry with the lowest calibration error, None if none has one. Errors equal to
    1e-9 pp (float noise of two exact fits) tie; ties go to the first name."""
    known = [e for e in entries if loo[e.name] is not None]
    return min(known, key=lambda e: (round(float(loo[e.name] or 0.0), 9), e.name)) if known else None


def _score_table(labels: dict[str, str], target: str, cells: list[Cell], n_boot: int, seed: int,
                 unit: str, map_kinds: tuple[str, ...]) -> dict[str, list[Any]]:
    """The rows of one target's table of one group (see the module docstring)."""
    entries, skipped = build_entries(cells, target, map_kinds)
    eval_cells = {c.key: c for c in cells if role(c) == "eval"}
    calib = [c for c in cells if role(c) == "calibration"]
    scored = {e.name: s for e in entries if (s := _Scored(e, target, eval_cells)).keys}
    ranked = sorted((e for e in entries if e.name in scored),
                    key=lambda e: (scored[e.name].mae, e.name))
    loo = {e.name: calibration_loo(e, target, calib) for e in ranked}
    baselines = [e for e in ranked if e.role == "baseline"]
    chosen = _lowest_loo([e for e in ranked if e.role == "baseline"], loo)
    candidate = _lowest_loo([e for e in ranked if e.role == "candidate"], loo)
    after = baselines[0] if baselines else None
    choice = {**labels, "target": target,
              "chosen_baseline": chosen.name if chosen else None,
              "chosen_calib_loo": loo[chosen.name] if chosen else None,
              "chosen_mae": scored[chosen.name].mae if chosen else None,
              "best_after_the_fact": after.name if after else None,
              "best_after_the_fact_mae": scored[after.name].mae if after else None,
              "chosen_candidate": candidate.name if candidate else None,
              "candidate_calib_loo": loo[candidate.name] if candidate else None,
              "candidate_mae": scored[candidate.name].mae if candidate else None,
              "n_calib_datasets": len({c.dataset for c in calib if truth(c, target) is not None})}
    diffs = {e.name: d for e in ranked if chosen is not None and e is not chosen
             and (d := _paired(scored[e.name], scored[chosen.name], n_boot, seed, unit))}
    adjusted = dict(zip(diffs, metrics.holm([d.p_value for d in diffs.values()])))
    rows, sev_rows, ds_rows, pair_rows = [], [], [], []
    for rank, entry in enumerate(ranked, start=1):
        s = scored[entry.name]
        low, high = metrics.bootstrap_ci(s.est, s.true, s.datasets, n_boot=n_boot, seed=seed,
                                         unit=unit)
        row = {
            **labels, "target": target, "rank": rank, "entry": entry.name,
            "estimator": entry.estimator, "role": entry.role, "map": entry.map,
            "input": entry.input, "mae": s.mae, "ci_low": low, "ci_high": high,
            "worst": metrics.worst_case(s.est, s.true),
            "pearson": metrics.pearson(s.est, s.true),
            "spearman": metrics.spearman(s.est, s.true),
            "n_cells": len(s.keys), "n_datasets": len(set(s.datasets)),
            "n_calib": len(entry.calibration_keys.get(target, [])),
            "calib_loo": loo[entry.name], "note": entry.note,
        }
        if chosen is not None and entry.name in diffs:
            d = diffs[entry.name]
            row.update(vs=chosen.name, diff=d.difference, diff_low=d.low, diff_high=d.high,
                       p_holm=adjusted[entry.name], significant=adjusted[entry.name] < ALPHA)
        rows.append(row)
        for key, est, true in zip(s.keys, s.est, s.true):
            split = eval_cells[key].split
            pair_rows.append({
                **labels, "target": target, "entry": entry.name, "key": key,
                "dataset": split.get("dataset"), "split": split.get("name"),
                "severity": split.get("severity"), "estimate": float(est), "true": float(true),
            })
        by_sev = metrics.mae_by_severity(s.est, s.true, s.datasets, s.severities)
        for level, mae in by_sev.items():
            n = sum(1 for v in s.severities if v == level)
            sev_rows.append({**labels, "target": target, "entry": entry.name, "severity": level,
                             "mae": mae, "n_cells": n})
        for dataset in sorted(set(s.datasets)):
            mask = np.asarray([d == dataset for d in s.datasets])
            ds_rows.append({
                **labels, "target": target, "entry": entry.name, "dataset": dataset,
                "mae": metrics.mae_by_dataset(s.est[mask], s.true[mask], [dataset] * int(mask.sum())),
                "n_cells": int(mask.sum()),
            })
    skip_rows = []
    for skip in skipped:
        skip_rows.append({**labels, "target": target, "entry": skip.name,
                          "estimator": skip.estimator, "reason": skip.reason,
                          "n_cells": skip.n_cells})
        if skip.name not in scored:
            rows.append({**labels, "target": target, "entry": skip.name,
                         "estimator": skip.estimator, "note": f"skipped: {skip.reason}"})
    return {"rows": rows, "sev": sev_rows, "ds": ds_rows, "pairs": pair_rows,
            "skipped": skip_rows, "choices": [choice], "entries": entries}


def _online(labels: dict[str, str], cells: list[Cell]) -> dict[str, Any]:
    eval_cells = [c for c in cells if role(c) == "eval"]
    online: dict[str, Any] = {**labels, "n_cells": len(eval_cells)}
    for target in TARGETS:
        accs = [(a, c.dataset) for c in eval_cells if (a := truth(c, target)) is not None]
        online[target] = (
            100.0 * metrics.mean_by_dataset([a for a, _ in accs], [d for _, d in accs])
            if accs else None
        )
    return online


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    for column in ("rank", "n_cells", "n_datasets", "n_calib"):
        table[column] = table[column].astype("Int64")
    return table


def build_leaderboard(cells: list[Cell], scoring: ScoringSpec | None = None) -> Leaderboard:
    """Score every estimator of the finished cells (failed cells are listed, not scored),
    mapping every score estimator with each kind of ``scoring.map_kinds`` (None: the default
    scoring options).

    See the module docstring for the tables, the chosen baseline and the statistics.
    """
    scoring = scoring or ScoringSpec()
    n_boot, seed, boot_unit = scoring.n_boot, scoring.boot_seed, scoring.boot_unit
    map_kinds = scoring.map_kinds
    ok = [c for c in cells if c.status == "ok"]
    failed = [_failed_record(c) for c in cells if c.status != "ok"]
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in ok:
        groups.setdefault(_group_key(cell), []).append(cell)
    for group, members in groups.items():
        check_one_setting(group, members)
    parts: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("rows", "sev", "ds", "pairs", "skipped", "choices", "online")}
    windows: dict[str, list[dict[str, Any]]] = {"rows": [], "choices": []}
    entries: dict[tuple[tuple[str, str, str], str], list[Entry]] = {}
    for group in sorted(groups):
        labels = dict(zip(GROUP, group))
        for target in TARGETS:
            scored = _score_table(labels, target, groups[group], n_boot, seed, boot_unit,
                                  map_kinds)
            entries[(group, target)] = scored.pop("entries")
            for name, rows in scored.items():
                parts[name].extend(rows)
        parts["online"].append(_online(labels, groups[group]))
        in_windows = window_cells(groups[group])
        if in_windows:
            scored = _score_table(labels, WINDOW_TARGET, in_windows, n_boot, seed, boot_unit,
                                  map_kinds)
            windows["rows"] += scored["rows"]
            windows["choices"] += scored["choices"]
    table = _typed(pd.DataFrame(parts["rows"], columns=TABLE_COLUMNS))
    pairs = pd.DataFrame(parts["pairs"], columns=[*GROUP, "target", "entry", "key", "dataset",
                                                  "split", "severity", "estimate", "true"])
    table["alias_of"] = alias_column(table, pairs)
    return Leaderboard(
        cross_model=cross_model_table(pairs, n_boot, seed, boot_unit),
        table=table,
        choices=pd.DataFrame(parts["choices"], columns=CHOICE_COLUMNS),
        per_severity=pd.DataFrame(parts["sev"], columns=[*GROUP, "target", "entry", "severity",
                                                         "mae", "n_cells"],
                                  dtype=object).astype({"mae": float, "n_cells": int}),
        per_dataset=pd.DataFrame(parts["ds"], columns=[*GROUP, "target", "entry", "dataset", "mae",
                                                       "n_cells"]),
        online=pd.DataFrame(parts["online"], columns=[*GROUP, *TARGETS, "n_cells"]),
        pairs=pairs,
        skipped=pd.DataFrame(parts["skipped"], columns=[*GROUP, "target", "entry", "estimator",
                                                        "reason", "n_cells"]),
        failed=failed,
        n_boot=n_boot,
        seed=seed,
        boot_unit=boot_unit,
        map_kinds=map_kinds,
        windows=_typed(pd.DataFrame(windows["rows"], columns=TABLE_COLUMNS)),
        window_choices=pd.DataFrame(windows["choices"], columns=CHOICE_COLUMNS),
        window_steps=sorted({c.windows.window for c in ok if c.windows is not None}),
        entries=entries,
    )


def cross_model_table(pairs: pd.DataFrame, n_boot: int, seed: int, unit: str) -> pd.DataFrame:
    """Per (suite, adapter, target, entry) whose eval pairs cover several models: the
    cross-model Spearman correlation of estimated and true accuracy (per split across the
    models, averaged per dataset then over datasets; ``ttabench.scoring.cross_model``), with
    its bootstrap interval, best first within each (suite, adapter, target)."""
    rows = []
    for (suite, adapter, target, entry), part in pairs.groupby(
            ["suite", "adapter", "target", "entry"], sort=True):
        if part["model"].nunique() < 2:
            continue
        try:
            rc = rank_correlation(part["estimate"].tolist(), part["true"].tolist(),
                                  part["model"].tolist(), part["split"].tolist(),
                                  part["dataset"].tolist(), n_boot=n_boot, seed=seed, unit=unit)
        except ValueError:  # no split ranks two models of different estimates
            continue
        rows.append({"suite": suite, "adapter": adapter, "target": target, "entry": entry,
                     "spearman": rc.value, "ci_low": rc.low, "ci_high": rc.high,
                     "n_models": int(part["model"].nunique()), "n_splits": len(rc.per_split),
                     "n_datasets": len(rc.per_dataset), "n_undefined": len(rc.undefined)})
    table = pd.DataFrame(rows, columns=CROSS_MODEL_COLUMNS)
    order = {t: i for i, t in enumerate(TARGETS)}
    return table.sort_values(["suite", "adapter", "target", "spearman"],
                             key=lambda c: c.map(order) if c.name == "target" else
                             (-c if c.name == "spearman" else c)).reset_index(drop=True)


def cross_model_view(lb: Leaderboard) -> pd.DataFrame:
    """The cross-model table as printed (numbers formatted)."""
    view = lb.cross_model.copy()
    for column in ("spearman", "ci_low", "ci_high"):
        view[column] = view[column].map(_fmt)
    return view


# ----------------------------------------------------------------------------- text views


def _groups(lb: Leaderboard) -> list[tuple[str, str, str]]:
    keys = set(map(tuple, lb.table[GROUP].itertuples(index=False)))
    keys |= set(map(tuple, lb.online[GROUP].itertuples(index=False)))
    return sorted(keys)


def _select(df: pd.DataFrame, group: tuple[str, str, str], target: str | None = None) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for column, value in zip(GROUP, group):
        mask &= (df[column] == value).to_numpy()
    if target is not None:
        mask &= (df["target"] == target).to_numpy()
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


def statistics_note(lb: Leaderboard) -> str:
    """How the intervals and tests were made, said in every output."""
    unit = ("datasets, then splits within each" if lb.boot_unit == "dataset"
            else "splits (as if independent)")
    return (f"MAE in percentage points, per-dataset averaged. 95% bootstrap intervals resample "
            f"{unit} ({lb.n_boot} resamples, seed {lb.seed}). `vs chosen baseline`: paired "
            f"difference entry minus the table's chosen baseline (negative: better); p-values "
            f"Holm-corrected across the comparisons of each table (* = Holm-adjusted p < "
            f"{ALPHA}). Each table ranks the entries of one target only. Every choice made on "
            f"calibration data (the chosen baseline and candidate, the score of a `[best]` "
            f"entry, the features of a `[stack]`) uses its {LODO} ({LODO_SHORT}) error: each "
            f"calibration dataset (a corruption family with all its severities, or a family "
            f"of the calibration meta-set) predicted by a map fitted on the other datasets "
            f"only.")


def choice_line(lb: Leaderboard, group: tuple[str, str, str], target: str) -> str:
    """The table's chosen baseline and candidate and its best baseline after the fact, in
    words."""
    return _choice_words(_select(lb.choices, group, target))


def _choice_words(hit: pd.DataFrame) -> str:
    """A table's choices (its row of ``Leaderboard.choices`` or ``window_choices``) in words."""
    if hit.empty or (hit["chosen_baseline"].iloc[0] is None
                     and hit["chosen_candidate"].iloc[0] is None):
        return "no baseline or candidate entry with a calibration error in this table"
    c = hit.iloc[0]
    how = (f"lowest {LODO} MAE over {_count(c['n_calib_datasets'])} calibration datasets")
    parts = []
    if c["chosen_baseline"] is not None:
        parts.append(f"chosen baseline ({how}): {c['chosen_baseline']} (calibration "
                     f"{_fmt(c['chosen_calib_loo'])} pp, evaluation {_fmt(c['chosen_mae'])} pp)")
    if c["chosen_candidate"] is not None:
        ratio = (c["candidate_mae"] / c["chosen_mae"]
                 if c["chosen_baseline"] is not None and c["chosen_mae"] else None)
        parts.append(f"chosen candidate (same rule): {c['chosen_candidate']} (calibration "
                     f"{_fmt(c['candidate_calib_loo'])} pp, evaluation {_fmt(c['candidate_mae'])}"
                     f" pp" + (f", {ratio:.2f}x the chosen baseline" if ratio is not None else "")
                     + ")")
    if c["best_after_the_fact"] is not None:
        parts.append(f"best baseline after the fact (lowest evaluation MAE, for reference "
                     f"only): {c['best_after_the_fact']} ({_fmt(c['best_after_the_fact_mae'])} pp)")
    return "; ".join(parts)


def _main_view(lb: Leaderboard, group: tuple[str, str, str], target: str) -> pd.DataFrame:
    """The rows of one target's table (skipped entries last), with per-severity MAE columns.

    An entry repeating another's numbers exactly (``find_aliases``) is left out; the row it
    repeats notes it (``aliases: ...``)."""
    aliases = group_aliases(lb, group, target)
    table = _select(lb.table, group, target)
    table = table[~table["entry"].isin(aliases)]
    sev = _select(lb.per_severity, group, target)
    levels = list(dict.fromkeys(sev["severity"].tolist()))
    rows = []
    for _, r in table.iterrows():
        row = {
            "target": target, "rank": _fmt(r["rank"]), "entry": r["entry"],
            "role": _fmt(r["role"]), "MAE": _fmt(r["mae"]),
            "95% CI": "-" if pd.isna(r["mae"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            "worst": _fmt(r["worst"]),
        }
        for level in levels:
            hit = sev[(sev["entry"] == r["entry"]) & _same(sev["severity"], level)]
            row[_severity_label(level)] = _fmt(hit["mae"].iloc[0]) if len(hit) else "-"
        row.update({
            "pearson": _fmt(r["pearson"]), "spearman": _fmt(r["spearman"]),
            "cells": _count(r["n_cells"]), "datasets": _count(r["n_datasets"]),
            "calib": _count(r["n_calib"]) if r["map"] in (*KIND_OF_MAP, "stack") else "-",
            f"calib {LODO_SHORT}": _fmt(r["calib_loo"]),
            "vs chosen baseline": "-" if pd.isna(r["diff"]) else (
                f"{r['vs']}: {r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}] "
                f"p_holm {r['p_holm']:.3f}" + (" *" if r["significant"] else "")
            ),
            "note": "; ".join(
                [*([r["note"]] if isinstance(r["note"], str) and r["note"] else []),
                 *([f"aliases: {', '.join(same)} (same numbers)"] if (same := [
                     a for a, of in aliases.items() if of == r["entry"]]) else [])]),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def window_view(lb: Leaderboard, group: tuple[str, str, str]) -> pd.DataFrame:
    """The per-window table of one group: its rows in rank order (skipped entries left out)."""
    rows = []
    for _, r in _select(lb.windows, group).dropna(subset=["mae"]).iterrows():
        rows.append({
            "rank": _fmt(r["rank"]), "entry": r["entry"], "role": _fmt(r["role"]),
            "MAE": _fmt(r["mae"]), "95% CI": f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
            "worst": _fmt(r["worst"]), "windows": _count(r["n_cells"]),
            "datasets": _count(r["n_datasets"]), f"calib {LODO_SHORT}": _fmt(r["calib_loo"]),
            "vs chosen baseline": "-" if pd.isna(r["diff"]) else (
                f"{r['vs']}: {r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}] "
                f"p_holm {r['p_holm']:.3f}" + (" *" if r["significant"] else "")),
        })
    return pd.DataFrame(rows)


def window_sections(lb: Leaderboard) -> list[tuple[str, str, pd.DataFrame]]:
    """Per group: a title, its baseline choice and its per-window table (none without
    windows)."""
    steps = "/".join(map(str, lb.window_steps))
    out = []
    for group in _groups(lb):
        view = window_view(lb, group)
        if view.empty:
            continue
        choice = _choice_words(_select(lb.window_choices, group))
        out.append((f"per window of {steps} steps: MAE (pp) against each window's online "
                    f"accuracy, {_title(group)}", choice, view))
    return out


def alias_column(table: pd.DataFrame, pairs: pd.DataFrame) -> list[str | None]:
    """The ``alias_of`` column of ``table``: per row, the entry whose numbers it repeats in its
    own (group, target) table (equal estimates on every eval cell of that table; see
    ``ttabench.scoring.aliases``), or None. Computed once, when the leaderboard is built."""
    of: dict[tuple[Any, ...], str] = {}
    for target in TARGETS:
        found = find_aliases(table[table["target"] == target], pairs[pairs["target"] == target])
        of.update({(*keys[:3], target, keys[3]): entry for keys, entry in found.items()})
    return [of.get((*group, target, entry)) for *group, target, entry
            in table[[*GROUP, "target", "entry"]].itertuples(index=False)]


def group_aliases(lb: Leaderboard, group: tuple[str, str, str], target: str) -> dict[str, str]:
    """``entry -> the entry it repeats`` in ``target``'s table of ``group`` (the table's
    ``alias_of`` column, see ``alias_column``)."""
    rows = _select(lb.table, group, target).dropna(subset=["alias_of"])
    return dict(zip(rows["entry"], rows["alias_of"]))


def _pivot(df: pd.DataFrame, columns: str, order: list[Any] | None = None) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame()
    entries = list(dict.fromkeys(df["entry"]))
    labels = order or list(dict.fromkeys(df[columns].tolist()))
    rows = []
    for entry in entries:
        part = df[df["entry"] == entry]
        row = {"target": part["target"].iloc[0], "entry": entry}
        for label in labels:
            hit = part[_same(part[columns], label)]
            name = _severity_label(label) if columns == "severity" else str(label)
            row[name] = _fmt(hit["mae"].iloc[0]) if len(hit) else "-"
        rows.append(row)
    return pd.DataFrame(rows)


def _title(group: tuple[str, str, str]) -> str:
    return f"suite {group[0]}, model {group[1]}, adapter {group[2]}"


def _target_sections(lb: Leaderboard) -> list[tuple[str, list[tuple[str, str, pd.DataFrame]]]]:
    """Per target (in ``TARGETS`` order): its titled tables, each with a one-line caption."""
    out = []
    for target in TARGETS:
        parts = []
        for group in _groups(lb):
            parts.append((f"Target {target}: {_title(group)} (MAE in pp against {target})",
                          choice_line(lb, group, target), _main_view(lb, group, target)))
            per_dataset = _select(lb.per_dataset, group, target)
            per_dataset = per_dataset[~per_dataset["entry"].isin(group_aliases(lb, group, target))]
            parts.append((f"Target {target}: MAE (pp) per dataset, {_title(group)}", "",
                          _pivot(per_dataset, "dataset")))
        out.append((target, parts))
    return out


def _other_sections(lb: Leaderboard) -> list[tuple[str, pd.DataFrame]]:
    online = lb.online.copy()
    for target in TARGETS:
        online[target] = online[target].map(_fmt)
    sections = [("Mean accuracy (%) of each target over eval cells; adapted = online accuracy",
                 online)]
    if not lb.cross_model.empty:
        sections.append(("Cross-model rank correlation (Spearman of estimated vs true accuracy "
                         "across the models, per split; mean per dataset, then over datasets)",
                         cross_model_view(lb)))
    if not lb.skipped.empty:
        sections.append(("Skipped or failed", lb.skipped))
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
    """The leaderboard as a Markdown document: one section per target."""
    parts = ["# ttabench leaderboard", "", statistics_note(lb)]
    for target, tables in _target_sections(lb):
        parts += ["", f"## Target `{target}`"]
        for title, caption, df in tables:
            parts += ["", f"### {title}", ""] + ([caption, ""] if caption else []) + [_markdown_table(df)]
    for title, df in _other_sections(lb):
        parts += ["", f"## {title}", "", _markdown_table(df)]
    return "\n".join(parts) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    return (df.to_html(index=False, na_rep="-", classes="leaderboard") if not df.empty
            else "<p>(none)</p>")


def to_html(lb: Leaderboard) -> str:
    """The leaderboard as one self-contained HTML page (inline style, no external assets):
    one ``<section data-target=...>`` per target."""
    body = []
    for target, tables in _target_sections(lb):
        body.append(f'<section class="target" data-target="{html.escape(target)}">')
        body.append(f"<h2>Target {html.escape(target)}</h2>")
        for title, caption, df in tables:
            body.append(f"<h3>{html.escape(title)}</h3>")
            if caption:
                body.append(f"<p>{html.escape(caption)}</p>")
            body.append(_html_table(df))
        body.append("</section>")
    for title, df in _other_sections(lb):
        body.append(f"<h2>{html.escape(title)}</h2>")
        body.append(_html_table(df))
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "th{background:#eee}")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>ttabench leaderboard</title>"
        f"<style>{style}</style></head><body>\n<h1>ttabench leaderboard</h1>\n"
        f"<p>{html.escape(statistics_note(lb))}</p>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return cast("list[dict[str, Any]]", json.loads(df.to_json(orient="records")))


def to_json(lb: Leaderboard) -> dict[str, Any]:
    """A JSON-ready copy (NaN as null): ``targets`` holds one object per target, in order, each
    with its tables (one per group: the choice of baseline and the ranked rows)."""
    targets = []
    for target in TARGETS:
        tables = []
        for group in _groups(lb):
            choice = _records(_select(lb.choices, group, target))
            tables.append({**dict(zip(GROUP, group)), **(choice[0] if choice else {}),
                           "rows": _records(_select(lb.table, group, target)),
                           "per_severity": _records(_select(lb.per_severity, group, target)),
                           "per_dataset": _records(_select(lb.per_dataset, group, target))})
        targets.append({"target": target, "tables": tables})
    return {
        "schema": LEADERBOARD_SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "n_boot": lb.n_boot, "seed": lb.seed, "boot_unit": lb.boot_unit,
        "statistics": statistics_note(lb),
        "targets": targets, "online": _records(lb.online),
        "skipped": _records(lb.skipped), "failed": lb.failed,
        "cross_model": _records(lb.cross_model),
        "windows": {"steps": lb.window_steps, "rows": _records(lb.windows),
                    "choices": _records(lb.window_choices)},
    }


CONSOLE_DROP = ["pearson", "spearman", "datasets", "calib", "target"]


def format_console(lb: Leaderboard) -> str:
    """The text printed at the end of a run: per group, one table per target (``source``,
    ``bn``, ``adapted``), then skipped and failed."""
    lines = []
    for group in _groups(lb):
        online = _select(lb.online, group)
        lines.append(f"== suite {group[0]}, model {group[1]}, adapter {group[2]} ==")
        if len(online):
            accs = ", ".join(f"{t} {_fmt(online[t].iloc[0], 1)}" for t in TARGETS)
            lines.append(f"mean accuracy % over {online['n_cells'].iloc[0]} eval cells: {accs}")
        for target in TARGETS:
            view = _main_view(lb, group, target)
            lines.append(f"-- target {target}: MAE (pp) against {target}, each estimator on the "
                         f"{target} model's outputs --")
            if view.empty:
                lines.append("(no scored entries)")
                continue
            view = view.drop(columns=[c for c in CONSOLE_DROP if c in view.columns])
            view["note"] = [
                "skipped (see below)" if n.startswith("skipped:")
                else "has aliases (below)" if "aliases:" in n else n[:60] for n in view["note"]
            ]
            if not any(view["note"]):
                view = view.drop(columns=["note"])
            lines.append(view.to_string(index=False))
            lines.append(choice_line(lb, group, target))
            for alias, of in group_aliases(lb, group, target).items():
                lines.append(f"{alias}: alias of {of} (same numbers, shown once)")
        for title, choice, view in window_sections(lb):
            if title.endswith(_title(group)):
                lines += [f"-- {title} --", view.to_string(index=False), choice]
        lines.append("")
    if not lb.cross_model.empty:
        lines.append("-- cross-model rank correlation (Spearman across the models, per split; "
                     "mean per dataset, then over datasets) --")
        lines.append(cross_model_view(lb).to_string(index=False))
    lines.append(statistics_note(lb))
    if not lb.skipped.empty:
        lines.append("skipped or failed:")
        for _, r in lb.skipped.iterrows():
            lines.append(f"  [{r['adapter']}, {r['target']}] {r['entry']}: {r['reason']} "
                         f"({r['n_cells']} cells)")
    if lb.failed:
        lines.append(f"failed cells ({len(lb.failed)}):")
        for f in lb.failed:
            lines.append(f"  {f['key']} {f['split']} {f['adapter']} seed {f['seed']}: {f['error']}")
    return "\n".join(lines).rstrip() + "\n"


# ----------------------------------------------------------------------------- files


def scatter_png(lb: Leaderboard) -> bytes:
    """Estimated vs true accuracy (%): one panel per (group, target), one colour per estimator.

    Each panel holds one target's table only: each estimator's best-ranked entry there; the
    dashed line is the identity (a perfect estimator lies on it). Drawn on a standalone
    ``Figure`` (matplotlib's object API): no pyplot state, the process's backend untouched.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    groups = _groups(lb) or [("-", "-", "-")]
    fig = Figure(figsize=(6 * len(TARGETS), 5.5 * len(groups)))
    axes = fig.subplots(len(groups), len(TARGETS), squeeze=False)
    for row, group in enumerate(groups):
        for ax, target in zip(axes[row], TARGETS):
            table = _select(lb.table, group, target).dropna(subset=["mae"])
            best = table.sort_values("rank").drop_duplicates("estimator")
            pairs = _select(lb.pairs, group, target)
            colours = colormaps["tab20" if len(best) > 10 else "tab10"]
            for i, (_, r) in enumerate(best.iterrows()):
                p = pairs[pairs["entry"] == r["entry"]]
                ax.scatter(100 * p["true"], 100 * p["estimate"], s=14, alpha=0.8,
                           color=colours(i % colours.N), label=f"{r['entry']} ({r['mae']:.1f} pp)")
            ax.plot([0, 100], [0, 100], "k--", linewidth=1, label="identity")
            ax.set_xlim(0, 100)
            ax.set_ylim(0, 100)
            ax.set_xlabel(f"true {target} accuracy (%)")
            ax.set_ylabel("estimated accuracy (%)")
            ax.set_title(f"target {target}: {group[1]} on {group[0]}, adapter {group[2]}", fontsize=10)
            ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def write_leaderboard(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """Write leaderboard.{csv,md,html,json}, pairs.csv and scatter.png into ``out_dir``, and
    windows.{csv,md} (the per-window table) when the cells have windows.

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
    if not lb.cross_model.empty:
        files["cross_model.csv"] = lb.cross_model.to_csv(index=False)
    sections = window_sections(lb)
    if sections:
        files["windows.csv"] = lb.windows.to_csv(index=False)
        files["windows.md"] = "\n".join(
            ["# Per-window scores", "", statistics_note(lb).replace("per-dataset", "per-dataset "
             "(a stream's dataset: its split order)"), "",
             *[part for title, choice, view in sections
               for part in (f"## {title}", "", choice, "", _markdown_table(view), "")]])
    paths = []
    for name, data in files.items():
        write_bytes_atomic(out_dir / name, data)
        paths.append(out_dir / name)
    return paths
