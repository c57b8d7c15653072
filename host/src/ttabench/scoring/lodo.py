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
from ttabench.scoring.map_kinds import fit_map_kind, loo_predictions
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


def nested_choice_lodo(kind: str, scores: dict[str, np.ndarray], y: np.ndarray,
                       datasets: Sequence[str]) -> float:
    """The LODO error of a choice among several scores (a ``[best]`` entry): each dataset
    predicted by a ``kind`` map of the score chosen, and fitted, on the other datasets alone,
    the choice being the lowest LODO MAE among ``scores`` (name -> values on the same points;
    ties: the first name in sorted order). In pp; ``inf`` when some fold cannot choose or fit.
    """
    groups = np.asarray([str(d) for d in datasets])
    y = np.asarray(y, dtype=np.float64)
    errors = []
    for held in np.unique(groups):
        test = groups == held
        inner = {name: lodo_mae(kind, x[~test], y[~test], list(groups[~test]))
                 for name, x in sorted(scores.items())}
        usable = [name for name, error in inner.items() if math.isfinite(error)]
        if not usable:
            return math.inf
        best = min(usable, key=lambda name: inner[name])
        try:
            fitted = fit_map_kind(kind, scores[best][~test], y[~test])
        except TTABenchError:
            return math.inf
        errors.append(float(np.abs(fitted(scores[best][test]) - y[test]).mean()))
    return 100.0 * float(np.mean(errors))


__all__ = ["NAME", "SHORT", "lodo_mae", "lodo_predictions", "nested_choice_lodo"]
