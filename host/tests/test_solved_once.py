"""Work solved once: COT and COTT share one transport problem per (split, view); what the
baselines fit on source val is fitted once per view per process, not per cell; the adapted
view's estimates are timed once."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import numpy as np
import ot
import pytest
import torch

from ttabench import registry
from ttabench.api import Outputs
from ttabench.estimators import classic, functional, scores
from ttabench.runner.benchmark import Benchmark, RunSpec
from tiny_direct import direct_logits

N_EXAMPLES, VAL_SIZE, SPLITS = 192, 128, ["noise-1", "noise-2", "noise-3"]
COUNTED_FITS = ("cott_threshold", "atc_threshold", "doc_reference", "fit_temperature",
                "mano_criterion")


# --------------------------------------------------------------------------- by hand


def hand_costs(logits: torch.Tensor, marginal: np.ndarray) -> torch.Tensor:
    """Per-sample transport costs solved here with POT, as the authors' code does."""
    p = logits.double().softmax(dim=1).numpy()
    n = p.shape[0]
    cost = 1.0 - p
    plan = ot.emd(np.full(n, 1.0 / n), marginal, cost, numItermax=10**8)
    return torch.from_numpy(n * (plan * cost).sum(axis=1))


def hand_cott(val: torch.Tensor, labels: torch.Tensor, target: torch.Tensor) -> float:
    """COTT (authors' code): val to its own label marginal, threshold sort(-cost)[e - 1]."""
    k = val.shape[1]
    label_share = np.bincount(labels.numpy(), minlength=k) / len(labels)
    errors = int((val.argmax(dim=1) != labels).sum())
    ranked = (-hand_costs(val, label_share)).sort().values
    threshold = -math.inf if errors == 0 else ranked[errors - 1].item()
    uniform = np.full(k, 1.0 / k)
    return (-hand_costs(target, uniform) >= threshold).double().mean().item()


def test_cot_and_cott_equal_a_hand_computation_exactly_and_on_a_second_call():
    gen = torch.Generator().manual_seed(3)
    val = Outputs(torch.randn(90, 5, generator=gen) * 2, torch.randint(0, 5, (90,), generator=gen))
    target = Outputs(torch.randn(70, 5, generator=gen) * 2)
    uniform = np.full(5, 0.2)
    cot, cott = classic.COT(), classic.COTT()
    for _ in range(2):  # the second call reads what the first derived
        assert cot.estimate(target, val).value == 1.0 - hand_costs(target.logits, uniform).mean().item()
        assert cott.estimate(target, val).value == hand_cott(val.logits, val.labels, target.logits)
    t = functional.fit_temperature(val.logits, val.labels)
    assert classic.COTTS().estimate(target, val).value == \
        1.0 - hand_costs(target.logits / t, uniform).mean().item()


def test_the_other_source_val_fits_give_the_numbers_of_the_direct_functions():
    gen = torch.Generator().manual_seed(4)
    val = Outputs(torch.randn(80, 4, generator=gen) * 3, torch.randint(0, 4, (80,), generator=gen))
    target = Outputs(torch.randn(60, 4, generator=gen) * 3)
    t = functional.fit_temperature(val.logits, val.labels)
    expected = {
        "doc": functional.doc(val.logits, val.labels, target.logits),
        "atc-ne": functional.atc(val.logits, val.labels, target.logits, "negentropy"),
        "atc-mc+ts": functional.atc(val.logits / t, val.labels, target.logits / t, "maxconf"),
        "doc+ts": functional.doc(val.logits / t, val.labels, target.logits / t),
        "mano": functional.mano_score(target.logits, branch=functional.mano_branch(
            functional.mano_criterion(val.logits))),
    }
    estimators = {"doc": classic.DifferenceOfConfidences(), "atc-ne": classic.ATCNegEntropy(),
                  "atc-mc+ts": classic.ATCMaxConfTS(), "doc+ts": classic.DifferenceOfConfidencesTS(),
                  "mano": scores.MaNo()}
    for _ in range(2):
        assert {name: est.estimate(target, val).value for name, est in estimators.items()} == expected


def test_a_mismatched_class_count_is_still_refused():
    val = Outputs(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(Exception, match="3 classes but logits have 2"):
        classic.COTT().estimate(Outputs(torch.zeros(5, 2)), val)


# --------------------------------------------------------------------------- in a run


@pytest.fixture(scope="module")
def counted_run():
    """Three cells in one process with COT, COTT and the source-val baselines; every transport
    problem and every source-val fit is counted."""
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    problems: list[tuple[int, bytes]] = []
    fits: Counter[str] = Counter()
    patch = pytest.MonkeyPatch()
    solve = ot.emd

    def counting_emd(a, b, cost, **kwargs):
        problems.append((len(a), cost.tobytes() + np.asarray(b).tobytes()))
        return solve(a, b, cost, **kwargs)

    def counting(name):
        fit = getattr(functional, name)

        def counted(*args, **kwargs):
            fits[name] += 1
            return fit(*args, **kwargs)
        return counted

    patch.setattr(ot, "emd", counting_emd)
    for name in COUNTED_FITS:
        patch.setattr(functional, name, counting(name))
    roster = ["cot", "cott", "cot+ts", "atc-mc", "doc", "mano"]
    spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                   estimators=[*roster, "recording-trajectory"], baselines=roster,
                   suite_options={"n_examples": N_EXAMPLES}, device="cpu", splits=SPLITS)
    try:
        bench = Benchmark(spec)
        cells = [bench.execute(plan) for plan in bench.plan()]
    finally:
        patch.undo()
    return cells, problems, fits


def test_each_transport_problem_is_solved_once(counted_run):
    cells, problems, _ = counted_run
    assert len(cells) == 3 and all(set(c.estimators["cot"].views) == {"source", "bn", "adapted"}
                                   for c in cells)
    assert len(problems) == len(set(problems))  # no problem solved twice
    sizes = Counter(size for size, _ in problems)
    # source val: once per view's val outputs (frozen, shared by source and adapted: the noisy
    # adapter starts as the frozen model; batch statistics), for the three cells together
    assert sizes[VAL_SIZE] == 2
    # targets: one per (split, view) shared by COT and COTT, one more for cot+ts's scaled logits
    assert sizes[N_EXAMPLES] + sizes[5 * 64] == 3 * 3 * 2


def test_source_val_fits_run_once_per_view_not_per_cell(counted_run):
    _, _, fits = counted_run
    assert {name: fits[name] for name in COUNTED_FITS} == {name: 2 for name in COUNTED_FITS}


def test_cot_and_cott_per_view_equal_direct_computations(counted_run):
    cells, _, _ = counted_run
    cell = next(c for c in cells if c.split["name"] == "noise-2")
    direct = direct_logits("noise-2", N_EXAMPLES)
    for view, logits, val in (("source", direct["frozen"], direct["val_frozen"]),
                              ("bn", direct["bn"], direct["val_bn"])):
        assert cell.estimators["cot"].views[view].value == pytest.approx(functional.cot(logits),
                                                                          abs=1e-6)
        assert cell.estimators["cott"].views[view].value == pytest.approx(
            hand_cott(val, direct["val_labels"], logits), abs=1e-6)
    assert cell.estimators["cot"].views["source"].value != pytest.approx(
        cell.estimators["cot"].views["bn"].value, abs=1e-3)


def test_the_adapted_view_is_not_timed_twice():
    registry.add_plugin("estimators", "ttabench_test_plugins:SleepyStatic")
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    spec = RunSpec(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                   estimators=["sleepy-static", "recording-trajectory"], baselines=["sleepy-static"],
                   suite_options={"n_examples": N_EXAMPLES}, device="cpu", splits=["noise-1"],
                   estimator_params={"sleepy-static": {"seconds": 0.25}})
    bench = Benchmark(spec)
    timings = bench.execute(bench.plan()[0]).timings
    assert timings["static_estimators"] >= 3 * 0.25  # three views, one sleep each
    phases = timings["source_and_bn_pass"] + timings["static_estimators"] + timings["adaptation"]
    assert phases <= timings["total"]


def test_a_replaced_copy_derives_afresh():
    first = Outputs(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    cot = classic.COT()
    before = cot.estimate(first, None).value
    other = dataclasses.replace(first, logits=torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert cot.estimate(other, None).value == functional.cot(other.logits) != before
