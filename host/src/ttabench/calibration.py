"""Score-to-accuracy maps: polynomials fitted on labelled calibration splits, stored as JSON.

A calibration is fitted state, not a constant: it is tied to the model, the score it maps and
the protocol that produced the score (steps, probe size...). ``Calibration.check`` refuses a
calibration used outside what it was fitted for unless forced.

File schema (``schema: "ttabench.calibration/1"``)::

    {"schema": ..., "id": "rn50-v1-wf-quadratic", "estimator": "wf",
     "input": "weighted_flips", "degree": 2,
     "coefficients": [a2, a1, a0],          # highest power first, as numpy.poly1d
     "output": "percent" | "fraction",      # unit of f's output
     "target": "source",
     "fitted_for": {"model": ..., "steps": 990, "probe_size": 1000,
                    "precision": "fp32", ...},
     "provenance": "where the numbers come from"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.optimize import minimize

from ttabench.errors import TTABenchError

SCHEMA = "ttabench.calibration/1"


@dataclass
class Calibration:
    """A polynomial map f from a score to an accuracy, with what it was fitted for."""

    id: str
    estimator: str
    input: str
    coefficients: list[float]
    output: Literal["percent", "fraction"] = "fraction"
    target: str = "source"
    fitted_for: dict[str, Any] = field(default_factory=dict)
    provenance: str = ""

    @property
    def degree(self) -> int:
        return len(self.coefficients) - 1

    def __call__(self, score: float | np.ndarray) -> float | np.ndarray:
        """Accuracy as a fraction in [0, 1]: ``clip(poly1d(coefficients)(score) / unit, 0, 1)``."""
        raw = np.polyval(np.asarray(self.coefficients, dtype=np.float64), score)
        if self.output == "percent":
            raw = raw / 100.0
        clipped = np.clip(raw, 0.0, 1.0)
        return float(clipped) if np.ndim(clipped) == 0 else clipped

    def check(self, protocol: dict[str, Any], force: bool = False) -> None:
        """Refuse use under a protocol that differs from ``fitted_for`` on any shared key.

        ``protocol`` holds the facts of the run (model id, steps, probe size, precision...).
        Keys absent from either side are not compared. ``force=True`` skips the check.
        """
        if force:
            return
        for key, fitted in self.fitted_for.items():
            if key in protocol and protocol[key] is not None and protocol[key] != fitted:
                raise TTABenchError(
                    f"calibration {self.id!r} was fitted for {key}={fitted!r} but this run has "
                    f"{key}={protocol[key]!r}; refit it with `ttabench fit` or force its use"
                )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA
        data["degree"] = self.degree
        return data

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename)."""
        from ttabench.store import write_json_atomic

        write_json_atomic(Path(path), self.to_json())

    @classmethod
    def from_json(cls, data: Any, where: str = "calibration") -> Calibration:
        """A calibration from its JSON form, checked against
        ``ttabench.schemas.CalibrationSchema`` (finite numeric coefficients, 2 to 4 of them...);
        one TTABenchError line naming ``where`` and the field otherwise."""
        from ttabench.schemas import CalibrationSchema, parse

        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise TTABenchError(f"{where} is not a ttabench calibration (schema {found!r}, "
                                f"expected {SCHEMA})")
        checked = parse(CalibrationSchema, data, where).model_dump()
        return cls(**{k: checked[k] for k in cls.__dataclass_fields__})

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TTABenchError(f"calibration file not found: {path}") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise TTABenchError(f"calibration file {path} is not valid JSON: "
                                f"{' '.join(str(err).split())}") from None
        return cls.from_json(data, where=f"calibration file {path}")


def fit_polynomial(
    x: np.ndarray, y: np.ndarray, degree: int, monotone_decreasing: bool = False
) -> list[float]:
    """Least-squares polynomial coefficients (highest power first) of y on x.

    Minimises ``sum_i (p(x_i) - y_i)^2``. With ``monotone_decreasing`` the fit is constrained so
    that ``p'(t) <= 0`` on ``[min(x), max(x)]`` (checked on a 101-point grid), solved with SLSQP
    from the unconstrained solution.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if degree < 1 or degree > 3:
        raise TTABenchError(f"polynomial degree must be 1, 2 or 3, got {degree}")
    if len(x) <= degree:
        raise TTABenchError(
            f"a degree-{degree} fit needs at least {degree + 1} calibration points, got {len(x)}"
        )
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise TTABenchError("calibration points contain NaN or infinite values")
    if len(np.unique(x)) <= degree:
        raise TTABenchError(
            f"a degree-{degree} fit needs at least {degree + 1} distinct scores; the score takes "
            f"{len(np.unique(x))} distinct value(s) on the calibration splits"
        )
    coef = np.polyfit(x, y, degree)
    if not monotone_decreasing:
        return [float(c) for c in coef]
    grid = np.linspace(x.min(), x.max(), 101)

    def slope(c: np.ndarray) -> np.ndarray:
        return -np.polyval(np.polyder(c), grid)

    if np.all(slope(coef) >= 0):
        return [float(c) for c in coef]

    def loss(c: np.ndarray) -> float:
        return float(np.sum((np.polyval(c, x) - y) ** 2))

    start = np.zeros(degree + 1)
    start[-1] = y.mean()
    result = minimize(loss, start, method="SLSQP", constraints=[{"type": "ineq", "fun": slope}])
    return [float(c) for c in result.x]
