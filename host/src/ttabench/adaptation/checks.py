"""Validation of adapter parameters: a bad value is one TTABenchError line naming the parameter."""

from __future__ import annotations

import math

from ttabench.errors import TTABenchError


def check_positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1; TTABenchError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value != int(value) or value < 1:
        raise TTABenchError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_fraction(name: str, value: object, *, low: float = 0.0, high: float = 1.0) -> float:
    """``value`` as a float in [low, high]; TTABenchError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise TTABenchError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite float > 0; TTABenchError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise TTABenchError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, options: tuple[str, ...]) -> str:
    """``value`` if it is one of ``options``; TTABenchError naming ``name`` otherwise."""
    if value not in options:
        raise TTABenchError(f"{name} must be one of {', '.join(options)}, got {value!r}")
    return str(value)
