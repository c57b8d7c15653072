"""The cell record: one finished (or failed) cell as typed data, and its one reader.

A cell file is JSON with ``schema == CELL_SCHEMA``. A cell is one stream (``ttabench.runner.streams``):
one split, the adapter reset before it, or a continual, gradual or mixed stream through several;
its protocol's ``stream`` record says which. Each estimator's record holds either one
result per model view (``views``: a static estimator, computed once per view, see
``ttabench.runner.views``) or one view-free ``result`` (a trajectory estimator, or a static one
that compares models, e.g. ``agreement``), and its ``role`` (``candidate``: named by
``--estimator``; ``baseline``: the configuration's baselines). A result that failed in a view
carries ``failed`` (the one-line error) and no value; the other views and estimators still count.

Cells of schema ``ttabench.cell/1`` (one result per estimator, computed on the frozen model
only) are refused with advice to rerun: their baselines never saw the ``bn`` or ``adapted``
models, so they cannot fill the per-target tables. Torch-free, so scoring stays light.

``windows`` (``WindowRecord``): the stream's online accuracy per window of ``W`` steps and the
per-step counts it is made of; each estimator's ``windows`` holds its result per window (a
static estimator's on the window's online outputs, a trajectory estimator's from
``window_results``), scored against that window's accuracy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ttabench.errors import TTABenchError

CELL_SCHEMA = "ttabench.cell/2"
OLD_SCHEMAS = ("ttabench.cell/1",)
VIEWS: tuple[str, ...] = ("source", "bn", "adapted")
ROLES: tuple[str, ...] = ("candidate", "baseline")


@dataclass
class ViewResult:
    """An estimator's output in one view (or its view-free output); ``failed`` when it raised
    or gave a non-finite value there."""

    value: float | None = None
    estimate: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None


@dataclass
class EstimatorRecord:
    """One estimator in one cell: what it is, and its results."""

    target: str
    kind: str
    role: str = "baseline"
    params: dict[str, Any] = field(default_factory=dict)
    plugin: dict[str, Any] = field(default_factory=dict)
    trajectory: bool = False
    input: str | None = None
    views: dict[str, ViewResult] = field(default_factory=dict)
    result: ViewResult | None = None
    skipped: str | None = None
    #: One result per complete window of the stream (empty: it gives none).
    windows: list[ViewResult] = field(default_factory=list)

    def in_view(self, view: str) -> ViewResult | None:
        """The result that view ``view``'s table scores: the view-free result, else the
        view's own; None when skipped, absent or failed."""
        if self.skipped is not None:
            return None
        found = self.result if self.result is not None else self.views.get(view)
        return None if found is None or found.failed is not None else found

    def failure(self, view: str) -> str | None:
        """The one-line error of this estimator in ``view``'s table, if it failed there."""
        found = self.result if self.result is not None else self.views.get(view)
        return None if found is None else found.failed


@dataclass
class WindowRecord:
    """A cell's stream, step by step and per window of ``window`` steps.

    ``accuracy[w] = sum(correct[wW:(w+1)W]) / sum(images[wW:(w+1)W])``, complete windows only;
    ``segment_per_step``: the split (index into the protocol's ``stream.order``) each step is
    in; ``reset_steps``: the 0-based steps after which the adapter's ``resets`` counter grew."""

    window: int
    accuracy: list[float] = field(default_factory=list)
    correct_per_step: list[int] = field(default_factory=list)
    images_per_step: list[int] = field(default_factory=list)
    segment_per_step: list[int] = field(default_factory=list)
    reset_steps: list[int] = field(default_factory=list)


@dataclass
class Cell:
    """One cell's record (see the module docstring)."""

    key: str
    status: str
    suite: str | None = None
    model: str | None = None
    adapter: str | None = None
    seed: int | None = None
    split: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1
    protocol: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    #: Where the data and the weights were read from (absolute paths): beside the key, not in it.
    location: dict[str, Any] = field(default_factory=dict)
    n_examples: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, float | None] = field(default_factory=dict)
    estimators: dict[str, EstimatorRecord] = field(default_factory=dict)
    adaptation: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    windows: WindowRecord | None = None
    #: The logit-cache entries of this cell's view outputs and its model's source-val outputs
    #: (view or ``source_val:VIEW`` -> digest; ``ttabench.runner.logit_cache``); empty when
    #: the run kept none.
    outputs: dict[str, str] = field(default_factory=dict)
    schema: str = CELL_SCHEMA

    @property
    def dataset(self) -> str:
        return str(self.split.get("dataset"))

    @property
    def role(self) -> str:
        """``"calibration"`` or ``"eval"`` (any other split role is scored as eval)."""
        return "calibration" if self.split.get("role") == "calibration" else "eval"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "cell") -> Cell:
        """A Cell from its JSON form, checked against ``ttabench.schemas.CellSchema`` (types,
        ranges, a finished cell whole); one TTABenchError line naming ``where`` and the field
        otherwise, or the old schema with advice to rerun."""
        from ttabench.schemas import CellSchema, parse

        schema = data.get("schema") if isinstance(data, dict) else None
        if schema in OLD_SCHEMAS:
            raise TTABenchError(
                f"{where} has schema {schema}, from before per-view scoring (its baselines saw "
                f"only the frozen model); rerun `ttabench run` into a new output folder"
            )
        if schema != CELL_SCHEMA:
            raise TTABenchError(f"{where} is not a ttabench cell (schema {schema!r}, expected "
                                f"{CELL_SCHEMA})")
        body = parse(CellSchema, data, where).model_dump(by_alias=True)
        body["split"] = body["split"] or {}
        records = {}
        for name, rec in body.pop("estimators").items():
            views = {v: ViewResult(**r) for v, r in rec.pop("views").items()}
            result = rec.pop("result")
            windows = [ViewResult(**r) for r in rec.pop("windows")]
            records[name] = EstimatorRecord(**rec, views=views, windows=windows,
                                            result=None if result is None else ViewResult(**result))
        steps = body.pop("windows")
        return cls(**body, estimators=records,
                   windows=None if steps is None else WindowRecord(**steps))


def _json(path: Path | str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise TTABenchError(f"cannot read cell file {path}: {str(err).splitlines()[0]}; delete "
                            "it and re-run that cell") from None


def _named(cell: Cell, path: Path | str) -> Cell:
    if cell.key != Path(path).stem:
        raise TTABenchError(f"cell file {path}: key {cell.key!r} is not the file's name; the "
                            "file holds another cell's result")
    return cell


def read_cell(path: Path | str, named_by_key: bool = True) -> Cell:
    """The cell in ``path``, the one reader of cell files: checked (see ``Cell.from_dict``)
    and, with ``named_by_key`` (a file of a run folder's ``cells/``), its key equal to the
    file's name; a one-line TTABenchError naming the file otherwise."""
    cell = Cell.from_dict(_json(path), where=f"cell file {path}")
    return _named(cell, path) if named_by_key else cell


def finished_cell(path: Path | str) -> Cell | None:
    """The cell in ``path`` when it is a readable finished (``ok``) cell of this schema whose
    key is its file's name; None when it is missing, half-written, damaged, failing the cell
    schema, failed or older: such a cell is unfinished, so a rerun computes it again."""
    try:
        cell = read_cell(path)
    except TTABenchError:
        return None
    return cell if cell.status == "ok" else None
