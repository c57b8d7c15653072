"""``ttabench diff RUN_A RUN_B``: why two runs' numbers differ.

Each side is a run folder (its ``cells/``) or one cell file. Cells are paired by their identity
(suite, split, adapter, seed). A multi-split stream's cell is named after its stream
(``continual/eval/order-0``), so two runs whose streams differ in kind or order would share no
cell: the cells of such streams left unpaired are paired by (suite, role, adapter, seed) when
both sides hold as many of them, in name order, and the pairing is listed
(``paired_across_streams``), so the stream's kind and order show as facts. A cell of one side
without a partner is listed as present in only that side. For each pair, every fact of the cell record that can change the numbers is
compared: the whole protocol record (model id and weights hash, suite options and record,
stream, adapter and its parameters and plugin, estimators with their parameters and
calibrations, batch size, steps, precision, device type, threads, torch, preset), the images
the cell scored (``n_examples``) and the environment (library versions, device, machine, git
revision). A fact that differs is reported once with its values and the number of pairs it
differs in, in groups ordered by consequence (``GROUPS``): model, data, stream, adapter,
estimators, preset, compute, libraries, machine, then paths: the cell's ``location`` (where the
data and the weights were read from, recorded beside the key, not in it) and any other file
location, which change no number (a moved data folder reruns nothing).

Tables: for each (target, suite, model, adapter) table of both leaderboards
(``leaderboard.json`` of a run folder, else rebuilt from the cells) the entries whose MAE moved
beyond their 95% intervals: B's MAE outside A's interval, or A's outside B's. A table whose model
differs between the sides is paired by (target, suite, adapter) when that pairing is unique.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from ttabench.errors import TTABenchError
from ttabench.records import Cell, read_cell

#: Fact groups, most consequential first: (name, first path components that belong to it).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("model",)),
    ("data", ("suite", "n_examples")),
    ("stream", ("stream", "batch_size", "steps", "data_path")),
    ("adapter", ("adapter",)),
    ("estimators", ("estimators", "reference")),
    ("preset", ("preset",)),
    ("compute", ("compute", "device_type", "threads", "cuda")),
    ("libraries", ("torch", "versions")),
    ("machine", ("device", "device_name", "machine", "git_revision", "cuda_visible_devices")),
)
#: Keys whose values are file locations: compared last, as a separate group.
PATH_KEYS = frozenset({"root", "data_dir", "val_dir", "weights", "checkpoint", "source_val",
                       "class_map_file", "labels_file"})
#: The cell's record of where its data and weights were read from (``Cell.location``): every
#: fact under it is a path fact, whatever its key.
LOCATION = "location"
#: Protocol fields that say which cell it is (paired on), not how it was computed.
IDENTITY = ("split", "seed")


@dataclass
class FactDifference:
    """One fact that differs: its group, dotted path, the values on each side (None: absent)
    and in how many cell pairs."""

    group: str
    fact: str
    a: Any
    b: Any
    pairs: int


@dataclass
class MovedEntry:
    """One leaderboard entry on both sides, MAE and 95% interval (pp) each, and whether it
    moved beyond the intervals."""

    target: str
    suite: str
    model: str
    adapter: str
    entry: str
    mae_a: float | None
    interval_a: tuple[float | None, float | None]
    mae_b: float | None
    interval_b: tuple[float | None, float | None]
    moved: bool


@dataclass
class RunDiff:
    """Everything ``ttabench diff`` reports."""

    a: str
    b: str
    facts: list[FactDifference] = field(default_factory=list)
    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    paired_across_streams: list[str] = field(default_factory=list)
    pairs: int = 0
    tables: list[MovedEntry] = field(default_factory=list)
    tables_compared: bool = False

    @property
    def moved(self) -> list[MovedEntry]:
        return [t for t in self.tables if t.moved]


def load_side(path: Path) -> list[Cell]:
    """The cells of a run folder, or the one cell of a cell file."""
    path = Path(path)
    if path.is_file():
        return [read_cell(path, named_by_key=False)]  # a file the user names, any name
    if not path.is_dir():
        raise TTABenchError(f"{path} is neither a run folder nor a cell file")
    from ttabench.scoring.leaderboard import load_cells

    return load_cells([path])


def identity(cell: Cell) -> tuple[str, str, str, str]:
    """What pairs a cell with its counterpart: (suite, split, adapter, seed)."""
    return (str(cell.suite), str(cell.split.get("name")), str(cell.adapter), str(cell.seed))


def describe_identity(key: tuple[str, str, str, str], cell: Cell) -> str:
    return f"{key[0]} split {key[1]}, adapter {key[2]}, seed {key[3]} (cell {cell.key})"


def is_stream_cell(cell: Cell) -> bool:
    """Whether the cell is a multi-split stream's (its stream record has an ``order``)."""
    stream = cell.protocol.get("stream")
    return isinstance(stream, dict) and "order" in stream


def pair_across_streams(side_a: dict[tuple[str, str, str, str], Cell],
                        side_b: dict[tuple[str, str, str, str], Cell]) -> list[tuple[Cell, Cell]]:
    """Unpaired multi-split stream cells paired by (suite, role, adapter, seed): where both
    sides hold the same number of them, in the order of their names."""
    def groups(side: dict[tuple[str, str, str, str], Cell],
               other: dict[tuple[str, str, str, str], Cell]) -> dict[tuple[str, ...], list[Cell]]:
        out: dict[tuple[str, ...], list[Cell]] = {}
        for key, cell in sorted(side.items()):
            if key not in other and is_stream_cell(cell):
                out.setdefault((key[0], cell.role, key[2], key[3]), []).append(cell)
        return out

    in_a, in_b = groups(side_a, side_b), groups(side_b, side_a)
    return [pair for group, cells in sorted(in_a.items())
            if len(cells) == len(in_b.get(group, []))
            for pair in zip(cells, in_b[group], strict=True)]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}``; lists and other leaves are kept whole."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def facts(cell: Cell) -> dict[str, Any]:
    """Every compared fact of one cell, flattened (see the module docstring); the cell's
    ``location`` under ``location.``."""
    protocol = {k: v for k, v in cell.protocol.items() if k not in IDENTITY}
    environment = dict(cell.environment)
    environment.pop("threads", None)  # the protocol's own thread count is the fact
    flat = flatten({**protocol, "n_examples": cell.n_examples, **environment})
    if cell.location:
        flat.update(flatten(cell.location, LOCATION))
    return flat


def group_of(fact: str) -> str:
    """The group a dotted fact belongs to (``paths`` for a file location and for everything
    the cell's ``location`` records)."""
    if fact.split(".")[0] == LOCATION or fact.split(".")[-1] in PATH_KEYS:
        return "paths"
    head = fact.split(".")[0]
    for name, heads in GROUPS:
        if head in heads:
            return name
    return "other"


ORDER = [name for name, _ in GROUPS] + ["other", "paths"]


def _frozen(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def compare_cells(a: list[Cell], b: list[Cell], result: RunDiff) -> None:
    """Pair the cells and fill ``facts``, ``only_in_a``/``only_in_b`` and ``pairs``."""
    side_a = {identity(c): c for c in a}
    side_b = {identity(c): c for c in b}
    if len(a) == 1 and len(b) == 1 and not set(side_a) & set(side_b):
        side_b = {identity(a[0]): b[0]}  # two cell files: compare them whatever their split
    pairs = [(side_a[k], side_b[k]) for k in sorted(set(side_a) & set(side_b))]
    across = pair_across_streams(side_a, side_b)
    pairs += across
    result.paired_across_streams = [f"A {ca.split.get('name')} (cell {ca.key}) with B "
                                    f"{cb.split.get('name')} (cell {cb.key})"
                                    for ca, cb in across]
    matched_a = {ca.key for ca, _ in across}
    matched_b = {cb.key for _, cb in across}
    result.only_in_a = [describe_identity(k, c) for k, c in sorted(side_a.items())
                        if k not in side_b and c.key not in matched_a]
    result.only_in_b = [describe_identity(k, c) for k, c in sorted(side_b.items())
                        if k not in side_a and c.key not in matched_b]
    counts: dict[tuple[str, str, str], int] = {}
    values: dict[tuple[str, str, str], tuple[Any, Any]] = {}
    for cell_a, cell_b in pairs:
        result.pairs += 1
        fa, fb = facts(cell_a), facts(cell_b)
        for fact in sorted(set(fa) | set(fb)):
            va, vb = fa.get(fact), fb.get(fact)
            if _frozen(va) != _frozen(vb):
                index = (fact, _frozen(va), _frozen(vb))
                counts[index] = counts.get(index, 0) + 1
                values[index] = (va, vb)
    diffs = [FactDifference(group_of(fact), fact, *values[(fact, ja, jb)], n)
             for (fact, ja, jb), n in counts.items()]
    result.facts = sorted(diffs, key=lambda d: (ORDER.index(d.group), d.fact, -d.pairs))


def leaderboard_rows(folder: Path | None, cells: list[Cell]) -> list[dict[str, Any]] | None:
    """Rows (target, group, entry, mae, ci) of a run's leaderboard: its ``leaderboard.json``,
    else rebuilt from its finished cells; None when there is no table to compare."""
    data: dict[str, Any] | None = None
    if folder is not None and (folder / "leaderboard.json").is_file():
        try:
            data = json.loads((folder / "leaderboard.json").read_text())
        except (OSError, ValueError):
            data = None
    if data is None:
        if not any(c.status == "ok" for c in cells) or len(cells) < 2:
            return None
        from ttabench.scoring.leaderboard import build_leaderboard, to_json
        from ttabench.spec import ScoringSpec

        data = to_json(build_leaderboard(cells, ScoringSpec(n_boot=200)))
    rows = []
    for target in data.get("targets", []):
        for table in target.get("tables", []):
            for row in table.get("rows", []):
                rows.append({"target": target["target"], "suite": table["suite"],
                             "model": table["model"], "adapter": table["adapter"],
                             "entry": row["entry"], "mae": row.get("mae"),
                             "ci": (row.get("ci_low"), row.get("ci_high"))})
    return rows


def _outside(value: float | None, interval: tuple[float | None, float | None]) -> bool:
    low, high = interval
    if value is None or low is None or high is None:
        return False
    return not low <= value <= high


def compare_tables(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]]) -> list[MovedEntry]:
    """Every entry scored on both sides, flagged ``moved`` when either side's MAE lies outside
    the other side's 95% interval."""
    def table(row: dict[str, Any]) -> tuple[str, str, str, str]:
        return (row["target"], row["suite"], row["model"], row["adapter"])

    tables_b = {table(r) for r in rows_b}
    pairing: dict[tuple[str, str, str, str], tuple[str, str, str, str]] = {}
    for key in sorted({table(r) for r in rows_a}):
        if key in tables_b:
            pairing[key] = key
            continue
        loose = [t for t in tables_b if (t[0], t[1], t[3]) == (key[0], key[1], key[3])]
        if len(loose) == 1:
            pairing[key] = loose[0]
    by_b = {(table(r), r["entry"]): r for r in rows_b}
    out = []
    for row in rows_a:
        partner = by_b.get((pairing.get(table(row), ("",) * 4), row["entry"]))
        if partner is None:
            continue
        moved = _outside(partner["mae"], row["ci"]) or _outside(row["mae"], partner["ci"])
        model = row["model"] if row["model"] == partner["model"] else \
            f"{row['model']} / {partner['model']}"
        out.append(MovedEntry(row["target"], row["suite"], model, row["adapter"], row["entry"],
                              row["mae"], tuple(row["ci"]), partner["mae"], tuple(partner["ci"]),
                              moved))
    return out


def diff_runs(a: Path, b: Path) -> RunDiff:
    """Compare two runs (folders or cell files); see the module docstring."""
    cells_a, cells_b = load_side(a), load_side(b)
    result = RunDiff(str(a), str(b))
    compare_cells(cells_a, cells_b, result)
    if Path(a).is_dir() and Path(b).is_dir():
        rows_a = leaderboard_rows(Path(a), cells_a)
        rows_b = leaderboard_rows(Path(b), cells_b)
        if rows_a is not None and rows_b is not None:
            result.tables = compare_tables(rows_a, rows_b)
            result.tables_compared = True
    return result


def _shown(value: Any) -> str:
    text = "(absent)" if value is None else (value if isinstance(value, str) else
                                              json.dumps(value, default=str))
    return text if len(text) <= 120 else text[:117] + "..."


def _mae(value: float | None, interval: tuple[float | None, float | None]) -> str:
    if value is None:
        return "-"
    low, high = interval
    bounds = f" [{low:.2f}, {high:.2f}]" if low is not None and high is not None else ""
    return f"{value:.2f}{bounds}"


def format_diff(result: RunDiff) -> str:
    """The report for people: a summary line, then the groups, most consequential first."""
    lines = [f"A = {result.a}", f"B = {result.b}",
             f"{len(result.facts)} fact(s) differ over {result.pairs} paired cell(s); "
             f"{len(result.only_in_a)} cell(s) only in A, {len(result.only_in_b)} only in B; "
             + (f"{len(result.moved)} leaderboard entr{'y' if len(result.moved) == 1 else 'ies'} "
                "moved beyond the intervals" if result.tables_compared
                else "leaderboards not compared (cell files, or no scored table)")]
    for group in ORDER:
        found = [d for d in result.facts if d.group == group]
        if not found:
            continue
        title = ("paths (where the data and weights were read from; they change no number)"
                 if group == "paths" else group)
        lines.append(f"== {title} ==")
        for d in found:
            lines.append(f"  {d.fact}: A {_shown(d.a)} | B {_shown(d.b)} ({d.pairs} pair(s))")
    if result.paired_across_streams:
        lines.append(f"== cells paired across streams (same suite, role, adapter, seed) "
                     f"({len(result.paired_across_streams)}) ==")
        lines += [f"  {line}" for line in result.paired_across_streams]
    for side, only in (("A", result.only_in_a), ("B", result.only_in_b)):
        if only:
            lines.append(f"== cells only in {side} ({len(only)}) ==")
            lines += [f"  {line}" for line in only]
    if result.moved:
        lines.append("== leaderboard entries whose MAE (pp) moved beyond the 95% intervals ==")
        for m in result.moved:
            lines.append(f"  [{m.target}] {m.suite} / {m.model} / {m.adapter}: {m.entry} "
                         f"{_mae(m.mae_a, m.interval_a)} -> {_mae(m.mae_b, m.interval_b)}")
    if not (result.facts or result.only_in_a or result.only_in_b or result.moved):
        lines.append("no difference: same protocol, same cells, same tables")
    return "\n".join(lines)


def to_json(result: RunDiff) -> dict[str, Any]:
    """The report as JSON (``--json``)."""
    return {**asdict(result), "moved": [asdict(m) for m in result.moved]}


@click.command("diff")
@click.argument("run_a", type=click.Path(path_type=Path))
@click.argument("run_b", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(run_a: Path, run_b: Path, as_json: bool) -> None:
    """Every protocol fact that differs between two runs (run folders or cell files), the cells
    present in only one, and the leaderboard entries whose MAE moved beyond their intervals."""
    result = diff_runs(run_a, run_b)
    if as_json:
        click.echo(json.dumps(to_json(result), indent=2, default=str))
    else:
        click.echo(format_diff(result))
