"""Map kinds: isotonic against a slow pool-adjacent-violators, logit fits against their
closed form, leave-one-group-out against refitting by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ttabench.errors import TTABenchError
from ttabench.scoring.map_kinds import EPS, MAP_KINDS, fit_map_kind, loo_predictions


def _slow_pava(y: list[float]) -> list[float]:
    """Increasing isotonic fit of y (already ordered by x, distinct x) by merging blocks."""
    blocks = [[v] for v in y]
    merged = True
    while merged:
        merged = False
        for i in range(len(blocks) - 1):
            if np.mean(blocks[i]) > np.mean(blocks[i + 1]):
                blocks[i:i + 2] = [blocks[i] + blocks[i + 1]]
                merged = True
                break
    return [float(np.mean(b)) for b in blocks for _ in b]


def test_isotonic_matches_slow_pava_both_directions() -> None:
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 1, 25))
    y = np.clip(0.2 + 0.6 * x + rng.normal(0, 0.1, 25), 0, 1)
    up = fit_map_kind("iso", x, y)
    assert np.allclose(up(x), _slow_pava(list(y)))
    down = fit_map_kind("iso", x, y[::-1])
    assert np.allclose(down(x[::-1]), _slow_pava(list(y)))  # decreasing: mirror of increasing
    assert up(-5.0) == pytest.approx(up(x[0])) and up(5.0) == pytest.approx(up(x[-1]))


def test_logit_fits_recover_a_sigmoid() -> None:
    x = np.linspace(-1, 1, 9)
    y = 1 / (1 + np.exp(-(0.3 + 2.0 * x)))
    fitted = fit_map_kind("logit-lin", x, y)
    assert fitted.coefficients == pytest.approx((2.0, 0.3))
    quad = fit_map_kind("logit-quad", x, 1 / (1 + np.exp(-(0.5 * x**2 - x))))
    assert quad.coefficients == pytest.approx((0.5, -1.0, 0.0), abs=1e-9)
    saturated = fit_map_kind("logit-lin", [0.0, 1.0, 2.0], [0.0, 0.5, 1.0])
    logit = np.log((1 - EPS) / EPS)
    assert saturated.coefficients == pytest.approx((logit, -logit))


def test_polynomial_kinds_and_clipping() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert fit_map_kind("lin", x, 0.1 + 0.2 * x)(10.0) == 1.0
    assert fit_map_kind("quad", x, 0.5 - 0.1 * (x - 1) ** 2)(1.0) == pytest.approx(0.5)


def test_leave_one_group_out_refits_without_the_group() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, 12), rng.uniform(0, 1, 12)
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    extra = (np.array([0.5, 0.9]), np.array([0.4, 0.8]))
    for kind in MAP_KINDS:
        preds = loo_predictions(kind, x, y, groups, held_out=["a", "b"], extra=extra)
        by_hand = fit_map_kind(kind, np.r_[x[4:], extra[0]], np.r_[y[4:], extra[1]])(x[:4])
        assert np.allclose(preds[:4], by_hand)
        assert np.isnan(preds[8:]).all()


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(TTABenchError, match="unknown map kind"):
        fit_map_kind("spline", [0, 1], [0, 1])
