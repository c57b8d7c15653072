"""The model calibration file that ``ttabench calibrate`` writes and ``ttabench estimate
--calibration`` reads.

One JSON file (``schema: "ttabench.model-calibration/1"``, checked by
``ttabench.schemas.ModelCalibrationSchema``: strict types, unknown fields refused, nothing in
it is code) holds

- ``model``: the identity of the model it was made for (spec, id, weights hash, classes); an
  estimate with another model is refused;
- ``protocol``: how every estimate is made (target, adapter, every plugin's parameters, batch
  size, steps, stream, preprocessing, precision), repeated exactly by ``estimate``;
- ``entries``: per estimator and map kind the stored map (coefficients or knots; ``direct``
  and ``own`` for accuracies the estimator gives itself) and its calibration error on the
  meta-set (``lodo_mae`` in pp, ``error_q95`` a fraction), and ``chosen``: the entry with the
  lowest ``lodo_mae``, with the choice's own nested error (``choice_lodo_mae``,
  ``choice_error_q95``: the choice redone without each family, ``ttabench.calibrate.choose``);
- ``skipped`` (estimators that could not be calibrated, with why), ``labelled`` (the labelled
  images: content digest, count, classes, where they were), ``meta_set`` (its recipe, seed, set
  size and content key), ``created`` and ``provenance``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttabench.api import LoadedModel
from ttabench.errors import TTABenchError
from ttabench.records import ViewResult
from ttabench.scoring.map_kinds import FittedMap
from ttabench.scoring.maps import direct_estimate, score_of

SCHEMA = "ttabench.model-calibration/1"


@dataclass(frozen=True)
class StoredMap:
    """How an entry turns an estimator's result into an accuracy (module docstring)."""

    kind: str
    input: str | None = None
    coefficients: tuple[float, ...] = ()
    knots: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())

    @classmethod
    def fitted(cls, fitted: FittedMap, input: str) -> StoredMap:
        return cls(fitted.kind, input, tuple(fitted.coefficients),
                   (tuple(fitted.knots[0]), tuple(fitted.knots[1])))

    def accuracy(self, result: ViewResult) -> float | None:
        """The accuracy (fraction) this map gives for ``result``; None when the result lacks
        what it reads."""
        if self.kind in ("direct", "own"):
            return direct_estimate(result, "direct" if self.kind == "direct" else "score")
        score = score_of(result, str(self.input))
        if score is None:
            return None
        return float(FittedMap(self.kind, self.coefficients, self.knots)(score))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "input": self.input, "coefficients": list(self.coefficients),
                "knots_x": list(self.knots[0]), "knots_y": list(self.knots[1])}


@dataclass(frozen=True)
class CalibratedEntry:
    """An estimator with one stored map and its calibration error on the meta-set."""

    name: str
    estimator: str
    map: StoredMap
    lodo_mae: float
    error_q95: float
    n_cells: int
    n_datasets: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "estimator": self.estimator, "map": self.map.to_json(),
                "lodo_mae": self.lodo_mae, "error_q95": self.error_q95,
                "n_cells": self.n_cells, "n_datasets": self.n_datasets}


@dataclass(frozen=True)
class ModelIdentity:
    """The model a calibration is for."""

    spec: str
    id: str
    weights_hash: str
    num_classes: int

    @classmethod
    def of(cls, model: LoadedModel, spec: str) -> ModelIdentity:
        return cls(spec, model.model_id, model.weights_hash, model.num_classes)

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "id": self.id, "weights_hash": self.weights_hash,
                "num_classes": self.num_classes}


@dataclass(frozen=True)
class CalibrationProtocol:
    """How every estimate of the calibration is made."""

    target: str
    adapter: str
    adapter_params: dict[str, Any]
    estimator_params: dict[str, dict[str, Any]]
    batch_size: int
    steps: int
    stream: str
    image_size: int
    resize: int | None
    precision: str = "fp32"
    channels_last: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "adapter": self.adapter,
                "adapter_params": self.adapter_params,
                "estimator_params": self.estimator_params, "batch_size": self.batch_size,
                "steps": self.steps, "stream": self.stream, "image_size": self.image_size,
                "resize": self.resize, "precision": self.precision,
                "channels_last": self.channels_last}


@dataclass
class ModelCalibration:
    """A model calibration (module docstring)."""

    model: ModelIdentity
    protocol: CalibrationProtocol
    entries: list[CalibratedEntry]
    chosen: str
    choice_lodo_mae: float | None = None
    choice_error_q95: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    labelled: dict[str, Any] = field(default_factory=dict)
    meta_set: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    provenance: str = ""

    def entry(self, name: str) -> CalibratedEntry:
        return next(e for e in self.entries if e.name == name)

    def best_of(self, estimator: str) -> CalibratedEntry:
        """The estimator's entry with the lowest calibration error; a TTABenchError naming
        the calibrated estimators when it has none."""
        mine = [e for e in self.entries if e.estimator == estimator]
        if not mine:
            known = ", ".join(sorted({e.estimator for e in self.entries}))
            why = f" ({self.skipped[estimator]})" if estimator in self.skipped else ""
            raise TTABenchError(f"estimator {estimator!r} is not calibrated in this calibration"
                                f"{why}; calibrated: {known}")
        return min(mine, key=lambda e: (e.lodo_mae, e.name))

    def error_q95(self, entry: CalibratedEntry) -> float:
        """The calibration error an estimate with ``entry`` carries: the choice's nested one
        for the chosen entry when known (the choice flatters it), else the entry's own."""
        if entry.name == self.chosen and self.choice_error_q95 is not None:
            return max(self.choice_error_q95, entry.error_q95)
        return entry.error_q95

    def per_estimator(self) -> list[CalibratedEntry]:
        """Each calibrated estimator's best entry, lowest calibration error first."""
        best = [self.best_of(name) for name in sorted({e.estimator for e in self.entries})]
        return sorted(best, key=lambda e: (e.lodo_mae, e.name))

    def check_model(self, model: LoadedModel, where: str) -> None:
        """Refuse a model other than the one this calibration was made for."""
        mine = self.model
        if (model.model_id, model.weights_hash, model.num_classes) != (
                mine.id, mine.weights_hash, mine.num_classes):
            raise TTABenchError(
                f"{where} was made for model {mine.id} (weights {mine.weights_hash[:12]}, "
                f"{mine.num_classes} classes), not {model.model_id} (weights "
                f"{model.weights_hash[:12]}, {model.num_classes} classes): calibrate this model "
                "with `ttabench calibrate`")

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "model": self.model.to_json(),
                "protocol": self.protocol.to_json(),
                "entries": [e.to_json() for e in self.entries], "chosen": self.chosen,
                "choice_lodo_mae": self.choice_lodo_mae,
                "choice_error_q95": self.choice_error_q95,
                "skipped": self.skipped, "labelled": self.labelled, "meta_set": self.meta_set,
                "created": self.created, "provenance": self.provenance}

    def save(self, path: Path) -> None:
        """Check the record against its schema, then write it atomically."""
        from ttabench.schemas import ModelCalibrationSchema, parse
        from ttabench.store import write_json_atomic

        data = self.to_json()
        parse(ModelCalibrationSchema, json.loads(json.dumps(data)), f"calibration {path}")
        write_json_atomic(Path(path), data)

    @classmethod
    def from_json(cls, data: Any, where: str) -> ModelCalibration:
        from ttabench.schemas import ModelCalibrationSchema, parse

        checked = parse(ModelCalibrationSchema, data, where)
        entries = [CalibratedEntry(
            e.name, e.estimator,
            StoredMap(e.map.kind, e.map.input, tuple(e.map.coefficients),
                      (tuple(e.map.knots_x), tuple(e.map.knots_y))),
            e.lodo_mae, e.error_q95, e.n_cells, e.n_datasets) for e in checked.entries]
        p = checked.protocol
        return cls(
            model=ModelIdentity(**checked.model.model_dump()),
            protocol=CalibrationProtocol(p.target, p.adapter, dict(p.adapter_params),
                                         {k: dict(v) for k, v in p.estimator_params.items()},
                                         p.batch_size, p.steps, p.stream, p.image_size,
                                         p.resize, p.precision, p.channels_last),
            entries=entries, chosen=checked.chosen, choice_lodo_mae=checked.choice_lodo_mae,
            choice_error_q95=checked.choice_error_q95, skipped=dict(checked.skipped),
            labelled=dict(checked.labelled), meta_set=dict(checked.meta_set),
            created=checked.created, provenance=checked.provenance)


def read_json_file(path: str | Path, what: str) -> Any:
    """A JSON file's content; a missing or unreadable file is one TTABenchError line."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise TTABenchError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise TTABenchError(f"{what} {path} is not valid JSON: "
                            f"{' '.join(str(err).split())}") from None


def model_calibration_of(path: str | Path) -> ModelCalibration | None:
    """The model calibration in the JSON file ``path``, or None when the file is another kind
    of calibration (a single map, ``ttabench.calibration``) or a shipped calibration id."""
    if not str(path).endswith(".json") and not Path(path).is_file():
        return None
    data = read_json_file(path, "calibration file")
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return None
    return ModelCalibration.from_json(data, f"calibration file {path}")


__all__ = ["CalibratedEntry", "CalibrationProtocol", "ModelCalibration", "ModelIdentity",
           "SCHEMA", "StoredMap", "model_calibration_of", "read_json_file"]
