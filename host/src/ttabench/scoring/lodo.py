"""Leave-one-dataset-out: how every choice made on calibration data is scored.

Calibration cells are grouped by their split's ``dataset``: a corruption family with all its
severities (``fog-1`` ... ``fog-5``), a family of the calibration meta-set
(``ttabench.suites.meta_set``). A choice (the chosen baseline of a table, the score of a
``[best]`` entry, a map kind, the features of a ``[stack]`` entry, a learning rate or a step
count in ``benchmarks/``) is judged by the error of predicting each dataset's cells from a map
fitted on the cells of every *other* dataset only::

    LODO MAE = 100 / D * sum_d (1 / n_d * sum_{i in d} |f_{-d}(x_i) - y_i|)

with ``f_{-d}`` fitted without dataset d, over the D calibration datasets. Leaving out one cell
instead lets a map fitted on the other severities of the same family predict it: those are
near-copies, so a point-wise leave-one-out rewards whatever memorises a family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ttabench.errors import TTABenchError
from ttabench.scoring.map_kinds import FittedMap, fit_map_kind, loo_predictions
from ttabench.scoring.metrics import mae_by_dataset

#: How every output names the protocol of a calibration error.
NAME = "leave-one-dataset-out"
SHORT = "LODO"


def lodo_predictions(kind: str, x: np.ndarray, y: np.ndarray,
                     datasets: Sequence[str]) -> np.ndarray:
    """Each point predicted by a ``kind`` map fitted on the points of the other datasets.

    TTABenchError when there are fewer than two datasets, or when some fit is impossible
    (too few points or distinct scores once a dataset is left out)."""
    groups = [str(d) for d in datasets]
    if len(set(groups)) < 2:
        raise TTABenchError(f"{NAME} needs calibration cells of at least two datasets, got "
                            f"{len(set(groups))}")
    try:
        with np.errstate(all="ignore"):
            preds = loo_predictions(kind, np.asarray(x, dtype=np.float64),
                                    np.asarray(y, dtype=np.float64), groups)
    except np.linalg.LinAlgError as err:
        raise TTABenchError(f"a {kind} map cannot be fitted: {err}") from None
    if not np.isfinite(preds).all():
        raise TTABenchError(f"a {kind} map gave non-finite predictions")
    return preds


def lodo_mae(kind: str, x: np.ndarray, y: np.ndarray, datasets: Sequence[str]) -> float:
    """The LODO MAE (pp, per-dataset averaged) of a ``kind`` map; ``inf`` when impossible."""
    try:
        preds = lodo_predictions(kind, x, y, datasets)
    except TTABenchError:
        return math.inf
    return mae_by_dataset(preds, y, list(datasets))


def fold_errors(kind: str, x: np.ndarray, y: np.ndarray,
                 groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per dataset d (``np.unique`` order): ``single[d]``, the mean absolute error on d of the
    ``kind`` map fitted without d; ``pair[d, e]``, the one on e of the map fitted without d and
    e (each pair fitted once, for both). ``inf`` where a fit is impossible."""
    names = np.unique(groups)
    masks = [groups == name for name in names]
    single = np.full(len(names), math.inf)
    pair = np.full((len(names), len(names)), math.inf)

    def fit(keep: np.ndarray) -> FittedMap | None:
        try:
            with np.errstate(all="ignore"):
                return fit_map_kind(kind, x[keep], y[keep])
        except (TTABenchError, np.linalg.LinAlgError):
            return None

    def error(fitted: FittedMap, mask: np.ndarray) -> float:
        value = float(np.abs(fitted(x[mask]) - y[mask]).mean())
        return value if math.isfinite(value) else math.inf

    for d, held in enumerate(masks):
        if (fitted := fit(~held)) is not None:
            single[d] = error(fitted, held)
        for e in range(d + 1, len(names)):
            if (fitted := fit(~(held | masks[e]))) is not None:
                pair[d, e], pair[e, d] = error(fitted, masks[e]), error(fitted, held)
    return single, pair


def nested_choice_lodo(candidates: dict[str, tuple[str, np.ndarray]], y: np.ndarray,
                       datasets: Sequence[str]) -> float:
    """The LODO error of a choice among candidate maps (a ``[best]`` entry: several scores,
    one map kind; or several (score, kind) pairs): each dataset predicted by the candidate
    chosen, and fitted, on the other datasets alone, the choice being the lowest LODO MAE
    there. ``candidates``: name -> (map kind, score values on the same points); ties go to the
    first name in sorted order. In pp; ``inf`` when some fold cannot choose or fit.

    Without dataset d, candidate c's LODO MAE is the mean over e != d of the error on e of
    its map fitted without d and e; the chosen candidate's map fitted without d then predicts
    d. Every map is fitted once per left-out pair (``fold_errors``).
    """
    groups = np.asarray([str(d) for d in datasets])
    y = np.asarray(y, dtype=np.float64)
    names = sorted(candidates)
    errors = {name: fold_errors(candidates[name][0], np.asarray(candidates[name][1],
                                                                 dtype=np.float64), y, groups)
              for name in names}
    n = len(np.unique(groups))
    chosen_errors = []
    for d in range(n):
        inner = {name: float(np.mean(np.delete(pair[d], d))) for name, (_, pair) in errors.items()}
        usable = [name for name in names if math.isfinite(inner[name])]
        if not usable:
            return math.inf
        chosen_errors.append(errors[min(usable, key=lambda name: inner[name])][0][d])
    return 100.0 * float(np.mean(chosen_errors))


__all__ = ["NAME", "SHORT", "lodo_mae", "lodo_predictions", "nested_choice_lodo"]
