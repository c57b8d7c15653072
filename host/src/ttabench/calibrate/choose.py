"""The entries of a model calibration and the choice among them, made on the calibration
meta-set's cells only.

Entries, from the finished calibration cells of one model against one target accuracy:

- ``<est>``: a direct estimator's own estimate (map ``direct``), or a score estimator's own
  calibrated estimate when its cells carry one (map ``own``); nothing is fitted;
- ``<est> (<kind>)``: for every score estimator, a map of each kind of ``map_kinds``
  (``ttabench.scoring.map_kinds``) from its ``value`` to the target accuracy, fitted on the
  cells.

Fairness: every entry is fitted and scored on the same cells, those where the target accuracy
is known and every kept estimator has a result; an estimator without a result in more than half
of the cells is left out (``skipped``, with why) rather than shrinking the others' cells.

Calibration error, by leave-one-dataset-out (a dataset is a family of the meta-set, all its
sets): each cell predicted by the entry's map fitted on the other families alone,

    lodo_mae = 100 / D * sum_d (1 / n_d * sum_{i in d} |f_{-d}(x_i) - y_i|),

and ``error_q95``, the 95% quantile of the ``|f_{-d}(x_i) - y_i|``
(``ttabench.calibrate.interval.conformal_quantile``); an entry that fits nothing is scored on
its plain errors. The chosen entry has the lowest ``lodo_mae`` (ties: the first name).

The choice's own calibration error is nested (``nested_choice``): the choice is made on the
meta-set too, so the chosen entry's ``lodo_mae`` is the lowest of many and flatters it. For
each family d, the entry with the lowest LODO MAE over the other families alone (each of its
maps fitted without d as well) predicts d with its map fitted without d; the MAE and the 95%
quantile of those predictions' errors are the choice's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ttabench.calibrate.interval import conformal_quantile
from ttabench.calibrate.record import CalibratedEntry, StoredMap
from ttabench.errors import TTABenchError
from ttabench.records import Cell
from ttabench.scoring.lodo import fold_errors, lodo_predictions
from ttabench.scoring.map_kinds import fit_map_kind
from ttabench.scoring.maps import VALUE, direct_estimate, record, score_of, truth
from ttabench.scoring.metrics import mae_by_dataset


@dataclass(frozen=True)
class Scored:
    """An entry, its leave-one-dataset-out predictions on the common cells and the values its
    map reads there (None: it fits nothing)."""

    entry: CalibratedEntry
    predictions: np.ndarray
    x: np.ndarray | None = None


def _why_missing(cells: list[Cell], name: str, target: str) -> str:
    reasons: Counter[str] = Counter()
    for cell in cells:
        if _reading(cell, name, target) is not None:
            continue
        rec = cell.estimators.get(name)
        if rec is None:
            reasons["not run"] += 1
        elif rec.skipped is not None:
            reasons[str(rec.skipped)] += 1
        elif (failed := rec.failure(target)) is not None:
            reasons[f"failed: {failed}"] += 1
        else:
            reasons["no finite score"] += 1
    reason, _ = reasons.most_common(1)[0]
    return f"no result in {sum(reasons.values())} of {len(cells)} calibration cells ({reason})"


def _reading(cell: Cell, name: str, target: str) -> float | None:
    """What entries of ``name`` read in this cell: its ``value`` (a finite number)."""
    rec = record(cell, name, target)
    return None if rec is None else score_of(rec, VALUE)


def common_cells(cells: list[Cell], target: str) -> tuple[list[Cell], list[str], dict[str, str]]:
    """(the cells every kept estimator is scored on, the kept estimators, the skipped ones
    with why): see the module docstring."""
    labelled = [c for c in cells if c.status == "ok" and c.role == "calibration"
                and truth(c, target) is not None]
    if not labelled:
        raise TTABenchError(f"no finished calibration cell with a {target} accuracy")
    names = sorted({n for c in labelled for n in c.estimators})
    kept, skipped = [], {}
    for name in names:
        present = sum(_reading(c, name, target) is not None for c in labelled)
        if 2 * present > len(labelled):
            kept.append(name)
        else:
            skipped[name] = _why_missing(labelled, name, target)
    common = [c for c in labelled if all(_reading(c, n, target) is not None for n in kept)]
    return common, kept, skipped


def _scored(name: str, estimator: str, stored: StoredMap, predictions: np.ndarray,
            y: np.ndarray, datasets: list[str], x: np.ndarray | None = None) -> Scored:
    errors = predictions - y
    entry = CalibratedEntry(name, estimator, stored, mae_by_dataset(predictions, y, datasets),
                            conformal_quantile(errors), len(y), len(set(datasets)))
    return Scored(entry, predictions, x)


def score_entries(cells: list[Cell], target: str, map_kinds: tuple[str, ...]
                  ) -> tuple[list[Scored], dict[str, str], list[Cell]]:
    """Every entry (module docstring) with its calibration error, the estimators and entries
    left out with why, and the common cells they were scored on."""
    common, kept, skipped = common_cells(cells, target)
    datasets = [c.dataset for c in common]
    if len(set(datasets)) < 2:
        raise TTABenchError(f"the calibration cells hold {len(set(datasets))} dataset; "
                            "leave-one-dataset-out needs at least 2 families")
    y = np.array([truth(c, target) for c in common], dtype=np.float64)
    out: list[Scored] = []
    for name in kept:
        recs = [record(c, name, target) for c in common]
        kind = common[0].estimators[name].kind
        own = [direct_estimate(r, kind) if r is not None else None for r in recs]
        if all(v is not None for v in own):
            stored = StoredMap("direct" if kind == "direct" else "own")
            out.append(_scored(name, name, stored, np.array(own, dtype=np.float64), y,
                               datasets))
        if kind == "direct":
            continue
        x = np.array([score_of(r, VALUE) for r in recs if r is not None], dtype=np.float64)
        for map_kind in map_kinds:
            entry_name = f"{name} ({map_kind})"
            try:
                with np.errstate(all="ignore"):
                    fitted = fit_map_kind(map_kind, x, y)
                predictions = lodo_predictions(map_kind, x, y, datasets)
            except (TTABenchError, np.linalg.LinAlgError) as err:
                skipped[entry_name] = " ".join(str(err).split())
                continue
            out.append(_scored(entry_name, name, StoredMap.fitted(fitted, VALUE), predictions,
                               y, datasets, x))
    if not out:
        raise TTABenchError("no estimator could be calibrated: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(skipped.items())))
    return out, skipped, common


def lowest(scored: list[Scored]) -> Scored:
    """The entry with the lowest leave-one-dataset-out MAE (ties: the first name)."""
    return min(scored, key=lambda s: (round(s.entry.lodo_mae, 9), s.entry.name))


def nested_choice(scored: list[Scored], y: np.ndarray,
                  datasets: list[str]) -> tuple[float, np.ndarray] | None:
    """The choice's nested leave-one-dataset-out MAE (pp) and predictions (module docstring);
    None with fewer than three families (nothing is left to choose on without two)."""
    groups = np.asarray([str(d) for d in datasets])
    names = np.unique(groups)
    if len(names) < 3:
        return None
    inner = np.full((len(scored), len(names)), np.inf)
    for i, s in enumerate(scored):
        if s.x is None:  # nothing fitted: its error on each family, whatever is left out
            per = np.array([np.abs(s.predictions - y)[groups == g].mean() for g in names])
            pair = np.tile(per, (len(names), 1))
        else:
            _, pair = fold_errors(s.entry.map.kind, s.x, y, groups)
        for d in range(len(names)):
            inner[i, d] = np.mean(np.delete(pair[d], d))
    predictions = np.empty(len(y))
    for d, group in enumerate(names):
        best = min(range(len(scored)),
                   key=lambda i: (round(float(inner[i, d]), 12), scored[i].entry.name))
        held = groups == group
        predictions[held] = scored[best].predictions[held]
    return mae_by_dataset(predictions, y, list(groups)), predictions


__all__ = ["Scored", "common_cells", "lowest", "nested_choice", "score_entries"]
