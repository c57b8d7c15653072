"""Fitted settings of the guard and of the online estimate, shipped as JSON in ``guards/``.

A settings file (schema ``ttabench_enigma.guard/1``) holds what was fitted on calibration
streams only (built from a suite's calibration splits), and how:

- ``guard``: ``threshold`` on the drift signal's ``collapse``, ``patience`` (consecutive checks
  above it before a reset), ``check_every`` (steps between checks), ``probe_batches`` (size of
  the rolling probe), ``min_steps`` (steps after a reset before the next may happen);
- ``online``: ``coefficients`` ``[c0, c_conf, c_flips, c_collapse]`` of the windowed estimate
  ``clip(c0 + c_conf * conf + c_flips * flips + c_collapse * collapse, 0, 1)``;
- ``model`` (the model id it was fitted for) and ``fitted_on`` (the streams, adapters,
  learning rates and seeds).

Files are read with ``json`` (no code runs when one is loaded); a file path or a shipped id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from ttabench.api import Count, Finite, Record, Size, TTABenchError, parse_record

SCHEMA = "ttabench_enigma.guard/1"
DEFAULT_ID = "mnist-cnn"


@dataclass(frozen=True)
class GuardSettings:
    """The guard's decision rule and the online estimate's map (see the module docstring)."""

    threshold: float
    patience: int = 2
    check_every: int = 5
    probe_batches: int = 2
    min_steps: int = 10
    coefficients: tuple[float, ...] = (0.0, 1.0, 0.0, 0.0)
    model: str | None = None
    fitted_on: dict[str, Any] = field(default_factory=dict)
    id: str = "given"

    def record(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "id": self.id, "model": self.model,
                "guard": {"threshold": self.threshold, "patience": self.patience,
                          "check_every": self.check_every, "probe_batches": self.probe_batches,
                          "min_steps": self.min_steps},
                "online": {"coefficients": list(self.coefficients)},
                "fitted_on": self.fitted_on}


def _directory() -> Path:
    return Path(str(resources.files("ttabench_enigma") / "guards"))


class GuardRule(Record):
    """The guard's decision rule (``guard`` of a settings file, or the constructor's overrides)."""

    threshold: Finite
    patience: Count
    check_every: Count
    probe_batches: Count
    min_steps: Size


class _OnlinePart(Record):
    coefficients: Annotated[list[Finite], Field(min_length=4, max_length=4)]


class SettingsRecord(Record):
    """A settings file (see the module docstring), checked by the host's record schema:
    finite numbers, positive bounded counts, exactly 4 coefficients, nothing else."""

    schema_: Literal["ttabench_enigma.guard/1"] = Field(alias="schema")
    id: str | None = None
    model: str | None = None
    guard: GuardRule
    online: _OnlinePart
    fitted_on: dict[str, Any] = Field(default_factory=dict)


def settings_from_record(data: Any, origin: str) -> GuardSettings:
    """Check a parsed settings record; a wrong shape is one line naming ``origin`` and the
    field."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise TTABenchError(f"{origin}: not a guard settings file (schema {SCHEMA})")
    record = parse_record(SettingsRecord, data, origin)
    return GuardSettings(
        threshold=record.guard.threshold, patience=record.guard.patience,
        check_every=record.guard.check_every, probe_batches=record.guard.probe_batches,
        min_steps=record.guard.min_steps, coefficients=tuple(record.online.coefficients),
        model=record.model, fitted_on=dict(record.fitted_on), id=record.id or origin)


def load_settings(id_or_path: str | Path = DEFAULT_ID) -> GuardSettings:
    """Shipped settings by id (``guards/<id>.json``), or a settings JSON file by path."""
    shipped = _directory() / f"{id_or_path}.json"
    path = shipped if isinstance(id_or_path, str) and shipped.is_file() else Path(id_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in _directory().glob("*.json"))
        raise TTABenchError(f"unknown guard settings {str(id_or_path)!r}: not a file and not "
                            f"a shipped id; shipped: {', '.join(known) or 'none'}")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise TTABenchError(f"{path}: not JSON ({' '.join(str(err).split())})") from None
    return settings_from_record(data, str(path))

