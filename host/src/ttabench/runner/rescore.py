"""Estimators computed from the logit cache: no model is loaded, no forward pass runs.

Two uses, one code path (``score_from_cache``):

- the pool phase of ``ttabench run``: once every model's cells are done, each estimator that
  compares models (``ttabench.api.PoolEstimator``) is computed for every cell, with the cell's
  peers: the cells of the other models of the same slot (``slot_of``: the same protocol apart
  from the model and the estimators, so the same split, stream, seed, adapter, batch size and
  steps; their rows align);
- ``ttabench leaderboard --rescore``: static and pool estimators added to (or recomputed in)
  a finished run.

Each view is computed as in a cell (``ttabench.runner.views``): a static estimator once per
view the cell has (``source``, ``bn``, ``adapted``) or in its own ``view``, against that view's
source-val outputs, and per window of a stream's ``adapted`` view; a pool estimator in each of
its ``views`` with every peer's outputs of the same view. The new records replace the
estimator's records in the cells, which are rewritten atomically; nothing else in a cell
changes, so its key, targets and other estimators stay as the run made them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttabench.api import Estimator, Outputs, Peers, PoolEstimator, StaticEstimator
from ttabench.errors import TTABenchError
from ttabench.records import Cell, EstimatorRecord, ViewResult
from ttabench.runner.cells import cell_path
from ttabench.runner.logit_cache import FOLDER, LogitCache
from ttabench.runner.views import View, estimate_in_view, safe_result
from ttabench.runner.windows import static_windows
from ttabench.store import write_json_atomic

VIEWS = ("source", "bn", "adapted")


def slot_of(cell: Cell) -> str:
    """Cells of one slot are each other's peers: the digest of the protocol without the model
    and the estimators."""
    facts = {k: v for k, v in cell.protocol.items() if k not in ("model", "estimators")}
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def check_rescorable(estimators: dict[str, Estimator]) -> None:
    """Refuse an estimator that needs the adaptation itself (a trajectory estimator)."""
    for name, est in estimators.items():
        if not isinstance(est, (StaticEstimator, PoolEstimator)):
            raise TTABenchError(f"estimator {name!r} follows the adaptation (a trajectory "
                                "estimator): it cannot be computed from stored outputs; "
                                "rerun `ttabench run` with it")


@dataclass
class _CellViews:
    """One cell's views read from the cache: target outputs and source-val outputs per view."""

    cell: Cell
    target: dict[str, Outputs]
    source_val: dict[str, Outputs | None]


def _views(cell: Cell, cache: LogitCache) -> _CellViews:
    target = {v: cache.load(cell.outputs[v]) for v in VIEWS if v in cell.outputs}
    val = {v: (cache.load(cell.outputs[key]) if (key := _val_key(cell, v)) in cell.outputs
               else None) for v in target}
    return _CellViews(cell, target, val)


def _val_key(cell: Cell, view: str) -> str:
    """The source-val entry a view reads, as the cell read it (``ttabench.runner.views``):
    ``source_val:VIEW``; a cell stored before the adapted view had its own reference read the
    batch-statistics one there."""
    key = f"source_val:{view}"
    return key if key in cell.outputs or view != "adapted" else "source_val:bn"


def _skip_reason(est: Estimator, views: _CellViews) -> str | None:
    if not views.target:
        return ("no stored outputs: the run kept no logit cache (it ran with "
                "--no-logit-cache); rerun it with the cache")
    if "source_val" in est.needs and all(v is None for v in views.source_val.values()):
        return "needs a labelled source-validation split; the run stored none"
    if "features" in est.needs and all(o.features is None for o in views.target.values()):
        return ("needs penultimate features; the run stored none (no estimator of the run "
                "needed them): rerun `ttabench run` with it")
    return None


def _static_record(est: StaticEstimator, views: _CellViews, record: EstimatorRecord) -> None:
    wanted = [est.view] if est.view is not None else [v for v in VIEWS if v in views.target]
    results = {v: estimate_in_view(est, View(v, views.target[v], views.source_val[v]))
               for v in wanted if v in views.target}
    if est.view is not None:
        record.result = results.get(est.view) or ViewResult(
            failed=f"the run stored no {est.view} view")
    else:
        record.views = results
    steps = views.cell.windows
    if "adapted" in views.target and steps is not None and steps.images_per_step:
        adapted = View("adapted", views.target["adapted"], views.source_val["adapted"])
        record.windows = static_windows({est.name: est}, adapted, steps).get(est.name, [])


def _pool_result(est: PoolEstimator, view: str, own: _CellViews,
                 peers: list[_CellViews]) -> ViewResult:
    def compute() -> Any:
        target = own.target[view]
        present = [p for p in peers if view in p.target]
        for peer in present:
            if len(peer.target[view].logits) != len(target.logits):
                raise TTABenchError(f"peer {peer.cell.model}'s {view} outputs have "
                                    f"{len(peer.target[view].logits)} rows, the model's "
                                    f"{len(target.logits)}: they do not align")
        return est.estimate(target, own.source_val[view], Peers(
            model_ids=tuple(str(p.cell.model) for p in present),
            target=tuple(p.target[view] for p in present),
            source_val=tuple(p.source_val[view] for p in present)))

    if view not in own.target:
        return ViewResult(failed=f"the run stored no {view} view")
    return safe_result(compute)


def _pool_record(est: PoolEstimator, views: _CellViews, peers: list[_CellViews],
                 record: EstimatorRecord) -> None:
    results = {v: _pool_result(est, v, views, peers) for v in est.views}
    if len(est.views) == 1:
        record.result = results[est.views[0]]
    else:
        record.views = {v: r for v, r in results.items() if v in views.target}


def score_from_cache(cells: list[Cell], estimators: dict[str, Estimator],
                     roles: dict[str, str], cache: LogitCache,
                     plugin: Callable[[str], dict[str, Any]]) -> list[Cell]:
    """The finished ``cells``, each of ``estimators`` (re)computed from ``cache`` and put in
    their records (module docstring); ``roles``: each estimator's role (``candidate``, the
    default, or ``baseline``); ``plugin``: an estimator's plugin record by name."""
    check_rescorable(estimators)
    ok = [c for c in cells if c.status == "ok"]
    slots: dict[str, list[Cell]] = {}
    for cell in ok:
        slots.setdefault(slot_of(cell), []).append(cell)
    for members in slots.values():
        views = {cell.key: _views(cell, cache) for cell in members}
        by_model: dict[str, _CellViews] = {}
        for cell in members:
            by_model.setdefault(str(cell.model), views[cell.key])
        for cell in members:
            peers = [v for model, v in by_model.items() if model != str(cell.model)]
            for name, est in estimators.items():
                cell.estimators[name] = _record(name, est, views[cell.key], peers,
                                                roles.get(name, "candidate"), plugin(name))
        cache.release(d for c in members for v, d in c.outputs.items() if v in VIEWS)
    return ok


def _record(name: str, est: Estimator, views: _CellViews, peers: list[_CellViews], role: str,
            plugin: dict[str, Any]) -> EstimatorRecord:
    """One estimator's record in one cell, computed from its views (and its peers')."""
    record = EstimatorRecord(target=est.target, kind=est.kind, role=role, params=est.params(),
                             plugin=plugin, input=est.score_input)
    record.skipped = _skip_reason(est, views)
    if isinstance(est, PoolEstimator) and record.skipped is None and len(peers) < est.min_peers:
        record.skipped = (f"compares models: needs {est.min_peers} other model(s) that ran "
                          f"this cell's split and stream, found {len(peers)}")
    if record.skipped is None and isinstance(est, PoolEstimator):
        _pool_record(est, views, peers, record)
    elif record.skipped is None and isinstance(est, StaticEstimator):
        _static_record(est, views, record)
    return record


def write_cells(folder: Path, cells: list[Cell]) -> None:
    """Write each cell into ``folder``'s ``cells/``, atomically."""
    for cell in cells:
        write_json_atomic(cell_path(folder, cell.key), cell.to_dict())


def folder_cache(folder: Path) -> LogitCache:
    """The logit cache of a run folder; a one-line error when the run kept none."""
    path = Path(folder) / FOLDER
    if not path.is_dir():
        raise TTABenchError(f"run folder {folder} has no logit cache ({FOLDER}/): it ran with "
                            "--no-logit-cache or before the cache existed; rerun `ttabench run` "
                            "into it to make one")
    return LogitCache(path)


def _recorded_spec(folder: Path) -> dict[str, Any]:
    """The ``spec`` a run folder's ``run.json`` records (empty when it has none)."""
    try:
        record = json.loads((Path(folder) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    spec = record.get("spec") if isinstance(record, dict) else None
    return spec if isinstance(spec, dict) else {}


def rescore_folders(folders: list[Path], named: list[str], sets: list[str]) -> None:
    """``ttabench leaderboard --rescore``: compute estimators from each run folder's logit
    cache and rewrite its cells (module docstring). ``named``: the estimators (names, comma
    lists); none: every static and pool estimator the run's ``run.json`` names. ``sets``:
    ``estimator.NAME.KEY=VALUE`` parameters over those the run recorded. Everything is checked
    (names, parameters, kinds, the caches) before any cell is rewritten."""
    from ttabench import registry
    from ttabench.runner.benchmark import _instantiate, plugin_record
    from ttabench.runner.config import names, parse_override
    from ttabench.runner.run_folder import RunFolder

    chosen = names(named)
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in sets:
        keys, value = parse_override(assignment)
        if len(keys) != 3 or keys[0] != "estimator":
            raise TTABenchError(f"--set {assignment}: --rescore takes estimator.NAME.KEY=VALUE")
        overrides.setdefault(keys[1], {})[keys[2]] = value
    work = []
    for folder in folders:
        spec = _recorded_spec(folder)
        wanted = chosen or [n for n in spec.get("estimators", [])
                            if issubclass(registry.get("estimators", n),
                                          (StaticEstimator, PoolEstimator))]
        unused = sorted(set(overrides) - set(wanted))
        if unused:
            raise TTABenchError(f"--set estimator.{unused[0]}...: {unused[0]!r} is not among "
                                f"the rescored estimators ({', '.join(wanted) or 'none'})")
        if not wanted:
            raise TTABenchError(f"run folder {folder}: nothing to rescore (its run names no "
                                "static or pool estimator); name one with --estimator")
        recorded = spec.get("estimator_params", {})
        estimators = {n: _instantiate("estimators", n, {**recorded.get(n, {}),
                                                        **overrides.get(n, {})})
                      for n in wanted}
        check_rescorable(estimators)
        roles = {n: "baseline" if n in spec.get("baselines", []) else "candidate"
                 for n in wanted}
        work.append((folder, estimators, roles, folder_cache(folder)))
    from ttabench.scoring.leaderboard import load_cells

    for folder, estimators, roles, cache in work:
        with RunFolder.claim(folder):
            cells = load_cells([folder])
            updated = score_from_cache(cells, estimators, roles, cache,
                                       lambda name: plugin_record("estimators", name))
            write_cells(folder, updated)
