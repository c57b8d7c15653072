"""Leaderboard entries of one target's table, fitting score-to-accuracy maps where needed.

Cells passed to ``build_entries`` are the finished (``status: ok``) cells of one group (one
suite, model and adapter) and one target; every estimator is read in that target's view (a
static estimator's result computed on the outputs of the model whose accuracy the target is;
a trajectory estimator's view-free result), and every map is fitted against that target.
Each estimator found in them becomes one or more entries:

- a direct estimator (``kind: direct``) is scored as is: its ``estimate`` (or ``value``);
- a score estimator whose cells carry their own ``estimate`` (run with a calibration file)
  gets an entry ``"<est>"`` scored as is;
- every score estimator also gets ``"<est> (<kind>)"`` for every map kind asked for
  (``map_kinds``, default ``lin`` and ``quad``: least-squares polynomials of degree 1 and 2;
  also ``iso``, ``logit-lin``, ``logit-quad`` of ``ttabench.scoring.map_kinds``): a map from
  its ``value`` to accuracy, fitted on the calibration-role cells and applied to the eval-role
  cells. Fairness rule: every score estimator's maps are fitted on exactly the same
  calibration cells (those on which every mapped estimator has a score and the target's truth
  is known), with the same kinds;
- a score estimator whose cells carry alternative ``scores`` (e.g. ``"wf@100"``) also gets
  ``"<est>[best] (<kind>)"`` per kind: the score name with the lowest leave-one-dataset-out
  MAE (``ttabench.scoring.lodo``) of that kind's map on the calibration cells is chosen,
  never looking at eval cells; its calibration error is nested (the choice redone without
  each held-out dataset);
- a score estimator whose ``input`` is ``STACK_INPUT`` also gets ``"<est>[stack]"``: one
  monotone stack over its named scores (``ttabench.scoring.stack``), its features chosen by
  leave-one-dataset-out on the same calibration cells; its calibration error is nested (the
  selection redone without each held-out dataset).

An entry's ``role`` is its estimator's (``candidate`` or ``baseline``). Estimators skipped or
failed in every eval cell, and maps that cannot be fitted, are returned as ``Skipped`` with the
reason; an entry that failed in some cells says how many in its note.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttabench.calibration import Calibration, fit_polynomial
from ttabench.errors import TTABenchError
from ttabench.spec import ScoringSpec
from ttabench.records import VIEWS, Cell, ViewResult
from ttabench.scoring.map_kinds import (
    MIN_POINTS,
    FittedMap,
    check_map_kinds,
    fit_map_kind,
)
from ttabench.scoring.lodo import lodo_mae, nested_choice_lodo
from ttabench.scoring.stack import (
    MAX_FEATURES,
    STACK_INPUT,
    StackMap,
    fit_stack,
    nested_lodo,
    select_features,
)

# The accuracy targets a cell records, each with its view (``ttabench.records.VIEWS``).
TARGETS: tuple[str, ...] = VIEWS
MAP_NAMES = {1: "linear", 2: "quadratic"}
#: The map kinds of a table unless asked otherwise; the polynomial ones keep an exportable
#: ``Calibration`` and their names in ``Entry.map`` (``KIND_OF_MAP`` reads them back).
POLYNOMIAL = {"lin": 1, "quad": 2}
ENTRY_MAP = {"lin": "linear", "quad": "quadratic"}
KIND_OF_MAP = {"linear": "lin", "quadratic": "quad", "iso": "iso", "logit-lin": "logit-lin",
               "logit-quad": "logit-quad"}
VALUE = "value"  # input name of a map fitted on an estimator's main ``value``


@dataclass
class Entry:
    """One entry of a target's table: estimates (fractions) keyed by target then eval cell key
    (the one target of the table it was built for)."""

    name: str
    estimator: str
    map: str  # "direct", "own" (the estimator's own calibration), or a key of KIND_OF_MAP
    declared: str
    role: str = "baseline"
    input: str | None = None  # the score a map reads: "value" or a name from ``scores``
    estimates: dict[str, dict[str, float]] = field(default_factory=dict)
    maps: dict[str, Calibration | FittedMap | StackMap] = field(default_factory=dict)
    calibration_keys: dict[str, list[str]] = field(default_factory=dict)
    note: str = ""
    #: A calibration error the builder computed itself (pp): the nested leave-one-dataset-out
    #: error of a ``[best]`` or ``[stack]`` entry (its choice redone without each held-out
    #: dataset), None when that cannot be computed; read when ``nested``.
    calibration_lodo: float | None = None
    nested: bool = False


@dataclass(frozen=True)
class Skipped:
    """An entry that could not be scored, with why (shown in the leaderboard)."""

    name: str
    estimator: str
    reason: str
    n_cells: int


def role(cell: Cell) -> str:
    """``"calibration"`` or ``"eval"`` (any other role is scored as eval)."""
    return cell.role


def record(cell: Cell, estimator: str, view: str) -> ViewResult | None:
    """The estimator's result in ``view``'s table; ``None`` if absent, skipped or failed."""
    rec = cell.estimators.get(estimator)
    return None if rec is None else rec.in_view(view)


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def score_of(res: ViewResult, name: str) -> float | None:
    """The result's ``value`` (name ``"value"``) or one of its ``scores``; ``None`` if absent."""
    if name == VALUE:
        return _finite(res.value)
    return _finite(res.scores.get(name))


def direct_estimate(res: ViewResult, kind: str) -> float | None:
    """An accuracy the estimator gave itself: ``estimate``, else ``value`` for direct ones."""
    own = _finite(res.estimate)
    if own is None and kind == "direct":
        own = _finite(res.value)
    return own


def truth(cell: Cell, target: str) -> float | None:
    """True accuracy of a cell for a target (fraction), ``None`` if not recorded."""
    return _finite(cell.targets.get(target))


def labelled_points(
    cells: list[Cell], estimator: str, score: str, target: str
) -> tuple[list[Cell], np.ndarray, np.ndarray, list[str]]:
    """The cells where ``estimator`` has a finite ``score`` in ``target``'s view and ``target``
    is known, with the scores, the true accuracies and each cell's dataset, in cell order."""
    chosen, xs, ys, datasets = [], [], [], []
    for cell in cells:
        rec = record(cell, estimator, target)
        x = score_of(rec, score) if rec is not None else None
        y = truth(cell, target)
        if x is not None and y is not None:
            chosen.append(cell)
            xs.append(x)
            ys.append(y)
            datasets.append(cell.dataset)
    return chosen, np.asarray(xs), np.asarray(ys), datasets


def protocol_facts(
    cells: list[Cell], estimator: str, score: str = VALUE, strict: bool = True
) -> dict[str, Any]:
    """What a map fitted on these cells is tied to: model, suite, steps, probe size, precision.

    ``steps`` comes from a score name ending in ``@N`` (e.g. ``"wf@200"``), else from the
    estimator's ``estimate_at`` param when it is one number; ``probe_size`` from its params;
    ``precision`` from the cells' protocol (``compute.precision``; fp32 where not recorded).
    Several suites are recorded joined by ``+``. If the cells disagree on another fact, raise
    TTABenchError (``strict``) or leave that fact out.
    """
    facts: dict[str, set[Any]] = {"model": set(), "suite": set(), "steps": set(),
                                   "probe_size": set(), "precision": set()}
    at = re.search(r"@(\d+)$", score) if score != VALUE else None
    for cell in cells:
        model = cell.protocol.get("model", {}).get("id") or cell.model
        facts["model"].add(model)
        facts["suite"].add(cell.suite)
        facts["precision"].add(cell.protocol.get("compute", {}).get("precision", "fp32"))
        rec = cell.estimators.get(estimator)
        params = rec.params if rec is not None else {}
        steps = params.get("estimate_at")
        if isinstance(steps, list) and len(steps) == 1:
            steps = steps[0]
        if at is not None:
            facts["steps"].add(int(at.group(1)))
        elif isinstance(steps, int):
            facts["steps"].add(steps)
        if isinstance(params.get("probe_size"), int):
            facts["probe_size"].add(params["probe_size"])
    result: dict[str, Any] = {}
    for key, values in facts.items():
        values.discard(None)
        if key == "suite" and len(values) > 1:
            result[key] = "+".join(sorted(values))
        elif len(values) > 1 and strict:
            raise TTABenchError(
                f"the cells disagree on {key} ({', '.join(map(str, sorted(values)))}); "
                f"select cells of one protocol"
            )
        elif len(values) == 1:
            result[key] = values.pop()
    return result


def fit_map(
    x: np.ndarray,
    y: np.ndarray,
    degree: int,
    *,
    estimator: str,
    input: str,
    target: str,
    fitted_for: dict[str, Any],
    provenance: str,
    monotone: bool = False,
    id: str | None = None,
) -> Calibration:
    """Least-squares polynomial map ``accuracy (fraction) = p(score)`` as a Calibration."""
    coefficients = fit_polynomial(np.asarray(x), np.asarray(y), degree, monotone_decreasing=monotone)
    return Calibration(
        id=id or f"{estimator}-{input}-{MAP_NAMES.get(degree, f'degree{degree}')}-{target}",
        estimator=estimator,
        input=input,
        coefficients=coefficients,
        output="fraction",
        target=target,
        fitted_for=fitted_for,
        provenance=provenance,
    )


def kind_lodo_mae(kind: str, x: np.ndarray, y: np.ndarray, datasets: list[str]) -> float:
    """Leave-one-dataset-out MAE (pp, per-dataset averaged) of a ``kind`` map
    (``ttabench.scoring.lodo``); ``inf`` when some fit is impossible."""
    return lodo_mae(kind, x, y, datasets)


def _estimators(cells: list[Cell]) -> list[str]:
    return sorted({name for cell in cells for name in cell.estimators})


def _skip_reasons(cells: list[Cell], estimator: str, view: str) -> tuple[Counter[str], int]:
    """Why the estimator has no result in these cells (skipped or failed), and how many of
    them failed."""
    reasons: Counter[str] = Counter()
    failed = 0
    for cell in cells:
        rec = cell.estimators.get(estimator)
        if rec is None:
            continue
        if rec.skipped is not None:
            reasons[str(rec.skipped)] += 1
        elif (why := rec.failure(view)) is not None:
            reasons[f"failed: {why}"] += 1
            failed += 1
    return reasons, failed


class _Builder:
    """Builds the entries of one group of cells (see the module docstring)."""

    def __init__(self, cells: list[Cell], target: str, map_kinds: tuple[str, ...]):
        self.cells = cells
        self.target = target
        self.map_kinds = map_kinds
        self.eval = [c for c in cells if role(c) == "eval"]
        self.calib = [c for c in cells if role(c) == "calibration"]
        self.entries: list[Entry] = []
        self.skipped: list[Skipped] = []
        self.roles: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        self.inputs: dict[str, str | None] = {}

    def build(self) -> tuple[list[Entry], list[Skipped]]:
        mapped: list[tuple[str, str, str]] = []  # (estimator, declared target, note)
        for name in _estimators(self.cells):
            recs = [c.estimators[name] for c in self.eval
                    if record(c, name, self.target) is not None]
            reasons, failed = _skip_reasons(self.eval, name, self.target)
            if not recs:
                reason = reasons.most_common(1)[0][0] if reasons else "not run on any eval cell"
                self.skipped.append(Skipped(name, name, reason, sum(reasons.values())))
                continue
            note = ""
            if reasons:
                reason, count = reasons.most_common(1)[0]
                note = (f"failed in {failed} eval cells: {reason}" if failed else
                        f"skipped in {sum(reasons.values())} eval cells: {reason}")
                self.skipped.append(Skipped(name, name, reason, count))
            self.roles[name] = recs[0].role
            self.kinds[name] = recs[0].kind
            self.inputs[name] = recs[0].input
            declared = self.target
            if recs[0].kind == "direct":
                if not self._add_direct(name, declared, "direct", note):
                    self.skipped.append(Skipped(name, name, "no estimate in any eval cell", 0))
                continue
            self._add_direct(name, declared, "own", note)
            mapped.append((name, declared, note))
        self._add_maps(mapped)
        return self.entries, self.skipped

    def _add_direct(self, name: str, declared: str, kind: str, note: str) -> bool:
        estimates = {}
        for cell in self.eval:
            rec = record(cell, name, self.target)
            value = direct_estimate(rec, self.kinds[name]) if rec is not None else None
            if value is not None:
                estimates[cell.key] = value
        if not estimates:
            return False
        self.entries.append(Entry(name, name, kind, declared, role=self.roles[name],
                                  estimates={self.target: estimates}, note=note))
        return True

    def _calibration_keys(self, mapped: list[tuple[str, str, str]]) -> list[str]:
        """Calibration cells on which every mapped estimator (that has any score there) has one."""
        present = [
            name for name, _, _ in mapped
            if any(score_of(r, VALUE) is not None for c in self.calib
                   if (r := record(c, name, self.target)))
        ]
        keys = []
        for cell in self.calib:
            recs = [record(cell, name, self.target) for name in present]
            if all(r is not None and score_of(r, VALUE) is not None for r in recs):
                keys.append(cell.key)
        return keys

    def _add_maps(self, mapped: list[tuple[str, str, str]]) -> None:
        common = set(self._calibration_keys(mapped))
        calib = [c for c in self.calib if c.key in common]
        for name, declared, note in mapped:
            if not calib:
                reason = (
                    "no calibration cell carries its score: nothing to fit a map on" if self.calib
                    else "no calibration-role cells: run the suite's calibration splits to fit a map"
                )
                for kind in self.map_kinds:
                    self.skipped.append(Skipped(f"{name} ({kind})", name, reason, 0))
                continue
            for kind in self.map_kinds:
                self._add_map(f"{name} ({kind})", name, declared, VALUE, kind, calib, note)
                self._add_best(name, declared, kind, calib, note)
            if self.inputs.get(name) == STACK_INPUT:
                self._add_stack(name, declared, calib, note)

    def _add_map(
        self, entry_name: str, name: str, declared: str, score: str, kind: str,
        calib: list[Cell], note: str,
    ) -> None:
        target = self.target
        entry = Entry(entry_name, name, ENTRY_MAP.get(kind, kind), declared,
                      role=self.roles[name], input=score, note=note)
        chosen, x, y, _ = labelled_points(calib, name, score, target)
        keys = [c.key for c in chosen]
        if len(keys) < MIN_POINTS[kind]:
            self.skipped.append(Skipped(
                entry_name, name,
                f"{len(keys)} calibration cells with a score and a {target} accuracy; "
                f"a {kind} map needs at least {MIN_POINTS[kind]}",
                len(keys),
            ))
            return
        cal: Calibration | FittedMap
        try:
            if kind in POLYNOMIAL:
                cal = fit_map(
                    x, y, POLYNOMIAL[kind], estimator=name, input=score, target=target,
                    fitted_for=protocol_facts(calib, name, score, strict=False),
                    provenance=f"least squares on {len(keys)} calibration cells (leaderboard)",
                )
            else:
                cal = fit_map_kind(kind, x, y)
        except TTABenchError as err:  # e.g. a score constant on the calibration cells
            self.skipped.append(Skipped(entry_name, name, str(err), len(keys)))
            return
        entry.maps[target] = cal
        entry.calibration_keys[target] = keys
        entry.estimates[target] = {}
        for cell in self.eval:
            rec = record(cell, name, target)
            value = score_of(rec, score) if rec is not None else None
            if value is not None:
                entry.estimates[target][cell.key] = float(cal(value))
        self.entries.append(entry)

    def _named_scores(self, name: str, declared: str,
                      calib: list[Cell]) -> tuple[list[Cell], list[str]]:
        """The calibration cells with a ``declared`` truth, and the score names that every
        one of them carries (finite), sorted."""
        cells = [c for c in calib if truth(c, declared) is not None]
        candidates: set[str] | None = None
        for cell in cells:
            rec = record(cell, name, declared)
            names = ({s for s in rec.scores if score_of(rec, s) is not None}
                     if rec is not None else set())
            candidates = names if candidates is None else candidates & names
        return cells, sorted(candidates or ())

    def _add_best(self, name: str, declared: str, kind: str, calib: list[Cell],
                  note: str) -> None:
        """``<est>[best] (<kind>)``: the alternative score chosen on calibration cells only."""
        cells, candidates = self._named_scores(name, declared, calib)
        if not candidates:
            return
        entry_name = f"{name}[best] ({kind})"
        if len({c.dataset for c in cells}) < 2:
            self.skipped.append(Skipped(
                entry_name, name,
                f"calibration cells of {len({c.dataset for c in cells})} dataset(s); choosing "
                "a score by leave-one-dataset-out needs at least 2",
                len(cells),
            ))
            return
        try:
            chosen = select_score(cells, name, sorted(candidates), declared, kind)
        except TTABenchError as err:
            self.skipped.append(Skipped(entry_name, name, str(err), len(cells)))
            return
        self._add_map(entry_name, name, declared, chosen, kind, calib, note)
        if self.entries and self.entries[-1].name == entry_name:  # its error, choice inside
            y = np.array([truth(c, declared) for c in cells], dtype=np.float64)
            scores = {s: (kind, np.array([score_of(record(c, name, declared), s)  # type: ignore[arg-type]
                                          for c in cells], dtype=np.float64)) for s in candidates}
            nested = nested_choice_lodo(scores, y, [c.dataset for c in cells])
            self.entries[-1].calibration_lodo = nested if math.isfinite(nested) else None
            self.entries[-1].nested = True

    def _add_stack(self, name: str, declared: str, calib: list[Cell], note: str) -> None:
        """``<est>[stack]``: the monotone stack over the estimator's named scores, its features
        chosen by leave-one-dataset-out on the calibration cells (``ttabench.scoring.stack``)."""
        entry_name = f"{name}[stack]"
        cells, features = self._named_scores(name, declared, calib)
        if not features or len({c.dataset for c in cells}) < 2:
            self.skipped.append(Skipped(
                entry_name, name,
                f"{len(features)} named scores on calibration cells of "
                f"{len({c.dataset for c in cells})} dataset(s); a stack needs scores and at "
                "least 2 datasets", len(cells)))
            return
        x = np.array([[score_of(record(c, name, declared), f) for f in features]  # type: ignore[arg-type]
                      for c in cells], dtype=np.float64)
        y = np.array([truth(c, declared) for c in cells], dtype=np.float64)
        datasets = [c.dataset for c in cells]
        chosen, _ = select_features(x, y, datasets, features, MAX_FEATURES)
        columns = [features.index(f) for f in chosen]
        try:
            stack = fit_stack(x[:, columns], y, chosen)
        except TTABenchError as err:
            self.skipped.append(Skipped(entry_name, name, str(err), len(cells)))
            return
        nested = nested_lodo(x, y, datasets, features, MAX_FEATURES)
        entry = Entry(entry_name, name, "stack", declared, role=self.roles[name],
                      input="+".join(chosen) or "(constant)", note=note,
                      calibration_lodo=nested if math.isfinite(nested) else None, nested=True)
        entry.maps[declared] = stack
        entry.calibration_keys[declared] = [c.key for c in cells]
        entry.estimates[declared] = {}
        for cell in self.eval:
            rec = record(cell, name, declared)
            values = [score_of(rec, f) for f in chosen] if rec is not None else [None]
            if all(v is not None for v in values):
                entry.estimates[declared][cell.key] = float(
                    stack.predict(np.array([values], dtype=np.float64))[0])
        self.entries.append(entry)


def select_score(
    calib: list[Cell], estimator: str, candidates: list[str], target: str, kind: str
) -> str:
    """The candidate score with the lowest leave-one-dataset-out MAE of a ``kind`` map
    against ``target`` on ``calib``.

    Only calibration cells are read; ties go to the first name in sorted order.
    """
    best: tuple[float, str] | None = None
    for score in sorted(candidates):
        _, x, y, datasets = labelled_points(calib, estimator, score, target)
        mae = kind_lodo_mae(kind, x, y, datasets)
        if math.isfinite(mae) and (best is None or mae < best[0]):
            best = (mae, score)
    if best is None:
        raise TTABenchError(f"no score of {estimator!r} has enough calibration cells to choose from")
    return best[1]


def build_entries(cells: list[Cell], target: str,
                  map_kinds: tuple[str, ...] = ScoringSpec.map_kinds,
                  ) -> tuple[list[Entry], list[Skipped]]:
    """Entries and skipped entries of ``target``'s table for one group of finished cells, with
    a map of every kind of ``map_kinds`` per score estimator (see the module docstring)."""
    return _Builder(cells, target, check_map_kinds(map_kinds)).build()
