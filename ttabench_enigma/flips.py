"""Weighted Flips (WF): how many probe predictions entropy minimization changes.

Press et al., "The Entropy Enigma" (ICML 2024). For a probe of ``n`` images with step-0
predictions ``pred0``, step-0 confidences ``conf0`` (max softmax probability) and predictions
``pred1`` after adaptation::

    WF = sum_i [pred0_i != pred1_i] * rank(conf0)_i / n

``rank`` is the ascending rank with ties given their average rank (the most confident image
gets rank n, so weight 1). WF lies in [0, (n + 1) / 2]; the unweighted count
``U = sum_i [pred0_i != pred1_i]`` lies in [0, n].

Temperature: the weights depend on the ordering of the confidences only, so any strictly
increasing transform applied to every confidence leaves WF unchanged, and so does a
temperature with two classes. With more than two classes a temperature can reorder max-softmax
confidences across images (images with different logit gaps), so WF is computed at
temperature 1, as in the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

import numpy as np
import torch
from scipy.stats import rankdata

from ttabench.api import TTABenchError

ArrayLike = Union[torch.Tensor, np.ndarray]


def _as_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """A 1-D numpy copy of a tensor or array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1:
        raise TTABenchError(f"{name} must be one-dimensional, got shape {tuple(x.shape)}")
    return x


def weighted_flips(
    pred0: ArrayLike, conf0: ArrayLike, pred1: ArrayLike, weighted: bool = True
) -> float:
    """WF = sum_i [pred0_i != pred1_i] * rank(conf0)_i / n, or the flip count if not weighted.

    Ranks are ascending with average ranks for ties (``scipy.stats.rankdata(method="average")``,
    the same as pandas ``Series.rank()``). The result lies in [0, (n + 1) / 2] (weighted) or
    [0, n] (unweighted).

    >>> weighted_flips([3, 1, 2, 0], [0.9, 0.5, 0.7, 0.5], [3, 2, 2, 1])
    0.75
    >>> weighted_flips([3, 1, 2, 0], [0.9, 0.5, 0.7, 0.5], [3, 2, 2, 1], weighted=False)
    2.0

    (Ranks of the confidences: 4, 1.5, 3, 1.5; images 1 and 3 flip: (1.5 + 1.5) / 4.)
    """
    p0 = _as_numpy(pred0, "pred0")
    c0 = _as_numpy(conf0, "conf0").astype(np.float64)
    p1 = _as_numpy(pred1, "pred1")
    n = len(p0)
    if n < 1:
        raise TTABenchError("weighted flips need at least one probe image, got 0")
    if len(c0) != n or len(p1) != n:
        raise TTABenchError(
            f"pred0, conf0 and pred1 must have equal lengths, got {n}, {len(c0)}, {len(p1)}"
        )
    if not np.all(np.isfinite(c0)):
        raise TTABenchError("conf0 holds NaN or infinite confidences; check the model's logits")
    flipped = p0 != p1
    if not weighted:
        return float(np.sum(flipped))
    weights = rankdata(c0, method="average") / n
    return float(np.sum(weights[flipped]))


def flip_curve(
    pred0: ArrayLike, conf0: ArrayLike, preds_by_step: Mapping[int, ArrayLike]
) -> dict[int, dict[str, float]]:
    """Weighted (``"wf"``) and unweighted (``"u"``) flips of each checkpoint against step 0.

    Returns ``{step: {"wf": WF, "u": U}}`` in ascending step order.
    """
    return {
        step: {
            "wf": weighted_flips(pred0, conf0, preds_by_step[step], weighted=True),
            "u": weighted_flips(pred0, conf0, preds_by_step[step], weighted=False),
        }
        for step in sorted(preds_by_step)
    }


__all__ = ["flip_curve", "weighted_flips"]
