"""Estimators computed from the logit cache: each view of a cell with its own source val, a pool
estimator with the peers of its slot only (same split, stream, seed, adapter: other models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttabench.api import Outputs, Peers
from ttabench.estimators.classic import AverageConfidence
from ttabench.estimators.pool import GDE, ALineS, TTALine
from ttabench.records import Cell
from ttabench.runner.logit_cache import LogitCache, source_val_record, view_record
from ttabench.runner.rescore import score_from_cache, slot_of

VIEWS = ("source", "bn", "adapted")


def noisy(labels: torch.Tensor, accuracy: float, seed: int) -> torch.Tensor:
    """One-hot-ish logits right on about ``accuracy`` of the rows."""
    g = torch.Generator().manual_seed(seed)
    wrong = (labels + torch.randint(1, 5, labels.shape, generator=g)) % 5
    pred = torch.where(torch.rand(labels.shape, generator=g) < accuracy, labels, wrong)
    return torch.nn.functional.one_hot(pred, 5).double() + 0.01 * torch.rand(
        len(labels), 5, generator=g, dtype=torch.float64)


def make_cells(cache: LogitCache) -> list[Cell]:
    """Models m0..m3 on one split with seed 0 (one slot), and m0, m1 with seed 1 (another)."""
    g = torch.Generator().manual_seed(0)
    val_labels = torch.randint(0, 5, (300,), generator=g)
    target_labels = torch.randint(0, 5, (200,), generator=g)
    cells = []
    for seed, models in ((0, range(4)), (1, range(2))):
        for m in models:
            protocol = {"split": {"name": "s"}, "seed": seed, "model": {"id": f"m{m}"},
                        "adapter": {"name": "tent"}, "estimators": {}}
            outputs = {}
            for v, view in enumerate(VIEWS):
                out = Outputs(noisy(target_labels, 0.8 - 0.1 * m - 0.05 * v, 10 * m + v + seed))
                frozen = outputs.get("source")
                rows = torch.arange(200)
                outputs[view] = (cache.put(view_record(protocol, view, [], False), out)
                                 if view == "source" else
                                 cache.put(view_record(protocol, view, [], False), out,
                                           frozen=frozen, frozen_rows=rows))
            for k, view in enumerate(("source", "bn", "adapted")):
                val = Outputs(noisy(val_labels, 0.95 - 0.04 * m - 0.02 * k, 100 + m),
                              labels=val_labels)
                outputs[f"source_val:{view}"] = cache.put(
                    source_val_record(protocol, view, 32, False), val)
            cells.append(Cell(key=f"{seed:08x}{m:08x}", status="ok", model=f"m{m}", seed=seed,
                              split={"name": "s", "dataset": "s", "severity": 1,
                                     "role": "eval"},
                              protocol=protocol, targets={"source": 0.5}, outputs=outputs))
    return cells


@pytest.fixture()
def scored(tmp_path: Path) -> tuple[list[Cell], LogitCache]:
    cache = LogitCache(tmp_path)
    cells = make_cells(cache)
    estimators = {"gde": GDE(), "aline-s": ALineS(), "ttaline": TTALine(), "ac": AverageConfidence()}
    out = score_from_cache(cells, estimators, {"ac": "baseline"}, cache,
                           lambda name: {"name": name})
    return out, LogitCache(tmp_path)


def inputs(cache: LogitCache, cell: Cell, view: str) -> tuple[Outputs, Outputs]:
    return cache.load(cell.outputs[view]), cache.load(cell.outputs[f"source_val:{view}"])


def test_slots_group_the_models_of_one_split_stream_and_seed(scored) -> None:
    cells, _ = scored
    slots = {slot_of(c) for c in cells}
    assert len(slots) == 2
    assert {c.model for c in cells if c.seed == 0} == {"m0", "m1", "m2", "m3"}


def test_pool_estimators_read_the_same_view_of_every_peer_of_the_slot(scored) -> None:
    cells, cache = scored
    for cell in cells:
        peers = [c for c in cells if c.seed == cell.seed and c.model != cell.model]
        for view in VIEWS:
            target, val = inputs(cache, cell, view)
            peer_set = Peers(tuple(p.model for p in peers),
                             tuple(inputs(cache, p, view)[0] for p in peers),
                             tuple(inputs(cache, p, view)[1] for p in peers))
            gde = cell.estimators["gde"].views[view]
            assert gde.value == GDE().estimate(target, val, peer_set).value
            if cell.seed == 0:  # four models: a line through six pairs
                expected = ALineS().estimate(target, val, peer_set).value
                assert cell.estimators["aline-s"].views[view].value == expected
        if cell.seed == 1:  # two models: one pair, no line
            assert cell.estimators["aline-s"].skipped.startswith("compares models: needs 2")
    ttaline = [c.estimators["ttaline"] for c in cells if c.seed == 0]
    assert all(r.result is not None and r.result.value is not None and r.views == {}
               for r in ttaline)


def test_static_estimators_are_computed_in_each_stored_view(scored) -> None:
    cells, cache = scored
    for cell in cells:
        record = cell.estimators["ac"]
        assert record.role == "baseline" and cell.estimators["gde"].role == "candidate"
        for view in VIEWS:
            expected = AverageConfidence().estimate(*inputs(cache, cell, view)).value
            assert record.views[view].value == pytest.approx(expected, abs=1e-12)


def test_views_differ_here(scored) -> None:
    """The check above could not pass by reading one view for all: the views differ."""
    cells, _ = scored
    values = {v: cells[0].estimators["gde"].views[v].value for v in VIEWS}
    assert len(set(values.values())) == 3


def test_cells_stored_before_the_adapted_reference_read_the_batch_statistics_one(
        tmp_path: Path) -> None:
    cache = LogitCache(tmp_path)
    cells = [c for c in make_cells(cache) if c.seed == 0]
    for cell in cells:
        del cell.outputs["source_val:adapted"]
    score_from_cache(cells, {"aline-s": ALineS()}, {}, cache, lambda name: {})
    cell = cells[0]
    peers = cells[1:]
    val = cache.load(cell.outputs["source_val:bn"])
    expected = ALineS().estimate(cache.load(cell.outputs["adapted"]), val, Peers(
        tuple(p.model for p in peers), tuple(cache.load(p.outputs["adapted"]) for p in peers),
        tuple(cache.load(p.outputs["source_val:bn"]) for p in peers))).value
    assert cell.estimators["aline-s"].views["adapted"].value == expected
