"""Model views: every static estimator is computed on the outputs of the model whose accuracy
each target is, in the batches that target uses; a failure in one view counts alone."""

from __future__ import annotations

import pytest
import torch

from ttabench import registry
from ttabench.estimators import functional as fn
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.runner.stream import stream_indices
from tiny_direct import direct_logits

SPLIT = "noise-2"


@pytest.fixture(scope="module")
def cell() -> Cell:
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("estimators", "ttabench_test_plugins:FailsOffFrozen")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                   estimators=["ac", "doc", "agreement", "fails-off-frozen", "recording-trajectory"],
                   baselines=["ac", "doc", "agreement", "fails-off-frozen"],
                   suite_options={"n_examples": 192}, device="cpu", splits=[SPLIT],
                   estimator_params={"fails-off-frozen": {"nan_above": 192}})
    bench = Benchmark(spec)
    return bench.execute(bench.plan()[0])


@pytest.fixture(scope="module")
def direct() -> dict[str, torch.Tensor]:
    """Frozen and batch-statistics logits computed here, independently of the runner."""
    return direct_logits(SPLIT, 192)


def test_the_two_models_differ_here(direct):
    assert not torch.allclose(direct["frozen"][direct["order"]], direct["bn"], atol=1e-3)


def test_static_estimates_per_view_equal_direct_computations(cell, direct):
    ac = cell.estimators["ac"].views
    assert ac["source"].value == pytest.approx(fn.average_confidence(direct["frozen"]), abs=1e-6)
    assert ac["bn"].value == pytest.approx(fn.average_confidence(direct["bn"]), abs=1e-6)
    assert ac["source"].value != pytest.approx(ac["bn"].value, abs=1e-3)
    # DoC: source val through the same model as the view (bn: batches of the batch size)
    doc = cell.estimators["doc"].views
    assert doc["source"].value == pytest.approx(
        fn.doc(direct["val_frozen"], direct["val_labels"], direct["frozen"]), abs=1e-6)
    assert doc["bn"].value == pytest.approx(
        fn.doc(direct["val_bn"], direct["val_labels"], direct["bn"]), abs=1e-6)
    assert set(ac) == {"source", "bn", "adapted"}


def test_adapted_view_reads_the_online_logits(cell):
    steps = cell.adaptation["steps"]
    assert steps == 5 and set(cell.estimators["ac"].views) >= {"adapted"}
    rows = sum(len(b) for b in stream_indices(192, 0, 64, steps))
    assert rows == 5 * 64
    assert 0.0 < cell.estimators["ac"].views["adapted"].value < 1.0


def test_agreement_is_one_view_free_score_of_frozen_against_bn(cell, direct):
    record = cell.estimators["agreement"]
    assert record.views == {} and record.result is not None
    expected = fn.agreement(direct["frozen"][direct["order"]], direct["bn"])
    assert record.result.value == pytest.approx(expected)
    assert record.in_view("source") is record.in_view("adapted") is record.result


def test_a_failure_in_one_view_is_recorded_for_that_view_alone(cell):
    record = cell.estimators["fails-off-frozen"]
    assert record.views["source"].value == 0.5 and record.views["source"].failed is None
    assert "not the frozen model" in record.views["bn"].failed
    assert "non-finite" in record.views["adapted"].failed
    assert record.in_view("bn") is None and record.in_view("source") is not None
    assert cell.estimators["ac"].views["bn"].failed is None  # the others still count


def test_roles_and_schema(cell):
    assert cell.schema == "ttabench.cell/2"
    assert cell.estimators["recording-trajectory"].role == "candidate"
    assert cell.estimators["ac"].role == "baseline"
