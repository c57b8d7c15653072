"""One typed, range-checked schema for every record read from disk.

Cells, calibrations and checkpoint metadata (and a plugin's own files, e.g. an adapter's fitted
settings, through ``ttabench.api``) are parsed by ``parse``: a pydantic model in strict mode,
so a number given as a string is refused instead of read digit by digit, a float must be
finite, a fraction lies in [0, 1], an integer is positive and bounded where it counts
something, and a list has the length its meaning needs. A record that fails is one
TTABenchError line naming the file and the field (``cell file X: targets.source: ...``); the
cell reader treats such a cell as unfinished (a rerun recomputes it, the leaderboard says it
ignored it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ttabench.errors import TTABenchError

#: A finite float (NaN and infinities refused).
Finite = Annotated[float, Field(allow_inf_nan=False)]
#: A finite float in [0, 1] (an accuracy or an estimate of one).
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
#: The largest count a record may hold (classes, steps, images...): far above any real one.
MAX_COUNT = 10**9
#: A positive integer, bounded.
Count = Annotated[int, Field(ge=1, le=MAX_COUNT)]
#: A non-negative integer, bounded.
Size = Annotated[int, Field(ge=0, le=MAX_COUNT)]
#: A seed of torch's generators (64 bits).
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class Record(BaseModel):
    """A record read from disk: strict types, unknown fields refused."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


R = TypeVar("R", bound=BaseModel)


def _field(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def parse(schema: type[R], data: Any, where: str) -> R:
    """``data`` checked against ``schema``; the first problem is one TTABenchError line
    ``<where>: <field>: <problem> (got <value>)``."""
    try:
        return schema.model_validate(data, strict=True)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        got = repr(first.get("input"))
        shown = got if len(got) <= 60 else got[:57] + "..."
        message = first["msg"][0].lower() + first["msg"][1:]
        raise TTABenchError(f"{where}: {_field(first['loc'])}: {message} (got {shown})") from None
    except RecursionError:
        raise TTABenchError(f"{where}: nested too deeply to be a record") from None


# ----------------------------------------------------------------------------- cells


class ViewResultSchema(Record):
    value: Finite | None = None
    estimate: Fraction | None = None
    scores: dict[str, Finite] = Field(default_factory=dict)
    extras: dict[str, Any] = Field(default_factory=dict)
    failed: str | None = None


class EstimatorRecordSchema(Record):
    target: Literal["source", "bn", "adapted"]
    kind: str
    role: Literal["candidate", "baseline"] = "baseline"
    params: dict[str, Any] = Field(default_factory=dict)
    plugin: dict[str, Any] = Field(default_factory=dict)
    trajectory: bool = False
    input: str | None = None
    views: dict[Literal["source", "bn", "adapted"], ViewResultSchema] = Field(default_factory=dict)
    result: ViewResultSchema | None = None
    skipped: str | None = None
    windows: list[ViewResultSchema] = Field(default_factory=list)


class WindowRecordSchema(Record):
    """A cell's stream step by step (``ttabench.records.WindowRecord``): one entry per step in
    each per-step list, one accuracy per complete window."""

    window: Count
    accuracy: list[Fraction] = Field(default_factory=list)
    correct_per_step: list[Size] = Field(default_factory=list)
    images_per_step: list[Count] = Field(default_factory=list)
    segment_per_step: list[Size] = Field(default_factory=list)
    reset_steps: list[Size] = Field(default_factory=list)

    @model_validator(mode="after")
    def _steps_agree(self) -> WindowRecordSchema:
        steps = len(self.images_per_step)
        if len(self.correct_per_step) != steps or len(self.segment_per_step) != steps:
            raise ValueError("correct_per_step, images_per_step and segment_per_step must have "
                             "one entry per step")
        if len(self.accuracy) > steps // self.window:
            raise ValueError(f"{len(self.accuracy)} window accuracies for {steps} steps of "
                             f"windows of {self.window}")
        if any(c > n for c, n in zip(self.correct_per_step, self.images_per_step)):
            raise ValueError("a step has more correct predictions than images")
        return self


class SplitSchema(Record):
    name: str = Field(min_length=1)
    dataset: str = Field(min_length=1)
    severity: Size | None = None
    role: Literal["eval", "calibration"]


class CellSchema(Record):
    """A cell file (``ttabench.records.Cell``). A finished (``ok``) cell must hold its split,
    its targets (accuracies in [0, 1], at least one) and its estimators."""

    schema_: Literal["ttabench.cell/2"] = Field(alias="schema")
    key: str = Field(pattern=r"^[0-9a-f]{16}$")
    status: Literal["ok", "failed"]
    suite: str | None = None
    model: str | None = None
    adapter: str | None = None
    seed: Seed | None = None
    split: SplitSchema | None = None
    error: str | None = None
    attempts: Count = 1
    protocol: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    location: dict[str, Any] = Field(default_factory=dict)
    n_examples: Size | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    targets: dict[Literal["source", "bn", "adapted"], Fraction | None] = Field(
        default_factory=dict)
    estimators: dict[str, EstimatorRecordSchema] = Field(default_factory=dict)
    adaptation: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]] = Field(
        default_factory=dict)
    windows: WindowRecordSchema | None = None
    outputs: dict[Literal["source", "bn", "adapted", "source_val:source", "source_val:bn",
                          "source_val:adapted"],
                  Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _finished_cell_is_whole(self) -> CellSchema:
        if self.status == "ok":
            for name in ("split", "targets", "estimators"):
                if name not in self.model_fields_set:
                    raise ValueError(f"a finished cell must hold '{name}'")
            if not any(v is not None for v in self.targets.values()):
                raise ValueError("a finished cell must hold at least one target accuracy")
        return self


# ----------------------------------------------------------------------------- run.json


class InvocationSchema(Record):
    """One invocation of a run folder's ``run.json`` (``ttabench.runner.run_folder``)."""

    started: str
    command: list[str]
    ran: dict[str, Size]
    shard: str | None = None
    phases_seconds: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]


class RunRecordSchema(Record):
    """A run folder's ``run.json``: the latest invocation's facts at the top level (kept as
    written) and every invocation under ``invocations``."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    ran: dict[str, Size]
    phases_seconds: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]
    invocations: list[InvocationSchema]


# ----------------------------------------------------------------------------- calibrations


class CalibrationSchema(Record):
    """A calibration file (``ttabench.calibration.Calibration``): 2 to 4 finite coefficients
    (a polynomial of degree 1 to 3), ``degree`` (when given) matching them."""

    schema_: Literal["ttabench.calibration/1"] = Field(alias="schema")
    id: str = Field(min_length=1)
    estimator: str
    input: str
    coefficients: list[Finite] = Field(min_length=2, max_length=4)
    degree: Annotated[int, Field(ge=1, le=3)] | None = None
    output: Literal["percent", "fraction"] = "fraction"
    target: Literal["source", "bn", "adapted"] = "source"
    fitted_for: dict[str, Any] = Field(default_factory=dict)
    provenance: str = ""

    @model_validator(mode="after")
    def _degree_matches(self) -> CalibrationSchema:
        if self.degree is not None and self.degree != len(self.coefficients) - 1:
            raise ValueError(f"degree {self.degree} does not match "
                             f"{len(self.coefficients)} coefficients")
        return self


# ----------------------------------------------------------------------------- model calibrations

#: What a stored map is: an estimator's own accuracy (``direct``: a direct estimator; ``own``: a
#: score estimator's own calibration), or a fitted map of ``ttabench.scoring.map_kinds``.
STORED_MAP_KINDS = ("direct", "own", "lin", "quad", "iso", "logit-lin", "logit-quad")
_POLYNOMIAL_TERMS = {"lin": 2, "quad": 3, "logit-lin": 2, "logit-quad": 3}


class StoredMapSchema(Record):
    """One entry's way from an estimator's result to an accuracy: ``input`` names the score a
    fitted map reads (``value`` or a named score); a polynomial kind holds its coefficients
    (highest power first), ``iso`` its knots (increasing scores, accuracies in [0, 1])."""

    kind: Literal["direct", "own", "lin", "quad", "iso", "logit-lin", "logit-quad"]
    input: str | None = None
    coefficients: list[Finite] = Field(default_factory=list)
    knots_x: list[Finite] = Field(default_factory=list)
    knots_y: list[Fraction] = Field(default_factory=list)

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> StoredMapSchema:
        fitted = self.kind not in ("direct", "own")
        if fitted != (self.input is not None):
            raise ValueError(f"a {self.kind} map {'needs' if fitted else 'takes no'} 'input'")
        terms = _POLYNOMIAL_TERMS.get(self.kind, 0)
        if len(self.coefficients) != terms:
            raise ValueError(f"a {self.kind} map has {terms} coefficients, got "
                             f"{len(self.coefficients)}")
        knots = 1 if self.kind == "iso" else 0
        if len(self.knots_x) != len(self.knots_y) or (knots and not self.knots_x) or (
                not knots and self.knots_x):
            raise ValueError("an iso map has as many knots_x as knots_y (at least one); other "
                             "kinds have none")
        if any(b <= a for a, b in zip(self.knots_x, self.knots_x[1:])):
            raise ValueError("knots_x must increase")
        return self


class CalibratedEntrySchema(Record):
    """An estimator with one stored map, and its calibration error on the meta-set: the
    leave-one-dataset-out MAE (pp, per-dataset averaged) and the 95% quantile of the absolute
    leave-one-dataset-out errors (a fraction)."""

    name: str = Field(min_length=1)
    estimator: str = Field(min_length=1)
    map: StoredMapSchema
    lodo_mae: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)]
    error_q95: Fraction
    n_cells: Count
    n_datasets: Count


class ModelIdentitySchema(Record):
    """The model a calibration was made for: the spec it was loaded by, its id, the hash of its
    weights and its class count."""

    spec: str = Field(min_length=1)
    id: str = Field(min_length=1)
    weights_hash: str = Field(min_length=1)
    num_classes: Count


class CalibrationProtocolSchema(Record):
    """How every estimate of a calibration is made (an estimate repeats it exactly): the
    adapter and every plugin's parameters, the stream's batch size, steps and kind, the
    preprocessing, the compute precision and memory format, and the target accuracy the maps
    were fitted against."""

    target: Literal["source", "bn", "adapted"]
    adapter: str = Field(min_length=1)
    adapter_params: dict[str, Any] = Field(default_factory=dict)
    estimator_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    batch_size: Count
    steps: Size
    stream: str
    image_size: Count
    resize: Count | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False


class ModelCalibrationSchema(Record):
    """A model calibration file (``ttabench.calibrate.record.ModelCalibration``): entries with
    distinct names, the chosen one among them, and the choice's own (nested) calibration error
    when it could be computed."""

    schema_: Literal["ttabench.model-calibration/1"] = Field(alias="schema")
    model: ModelIdentitySchema
    protocol: CalibrationProtocolSchema
    entries: list[CalibratedEntrySchema] = Field(min_length=1)
    chosen: str
    choice_lodo_mae: Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] | None = None
    choice_error_q95: Fraction | None = None
    skipped: dict[str, str] = Field(default_factory=dict)
    labelled: dict[str, Any] = Field(default_factory=dict)
    meta_set: dict[str, Any] = Field(default_factory=dict)
    created: str = ""
    provenance: str = ""

    @model_validator(mode="after")
    def _chosen_is_an_entry(self) -> ModelCalibrationSchema:
        names = [e.name for e in self.entries]
        if len(set(names)) != len(names):
            raise ValueError("entry names must be distinct")
        if self.chosen not in names:
            raise ValueError(f"chosen entry {self.chosen!r} is not among the entries")
        return self


# ----------------------------------------------------------------------------- checkpoints


class CheckpointMetaSchema(Record):
    """The metadata of a checkpoint dict or safetensors file: ``arch`` (``timm:<name>`` or
    ``torchvision:<name>``), and optionally the class count and 3-channel mean and std."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    arch: str = Field(pattern=r"^(timm|torchvision):\S+$")
    num_classes: Annotated[int, Field(ge=1, le=100_000)] | None = None
    mean: list[Finite] | None = Field(default=None, min_length=3, max_length=3)
    std: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] | None = Field(
        default=None, min_length=3, max_length=3)


__all__ = ["CalibratedEntrySchema", "CalibrationProtocolSchema", "ModelCalibrationSchema",
           "ModelIdentitySchema", "STORED_MAP_KINDS", "StoredMapSchema", "CalibrationSchema", "CellSchema", "WindowRecordSchema", "RunRecordSchema", "CheckpointMetaSchema", "Count", "Finite",
           "Fraction", "MAX_COUNT", "Record", "Seed", "Size", "parse"]
