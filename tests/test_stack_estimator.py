"""``enigma-stack`` / ``enigma-stack-source``: every feature against a plain computation on
the views and snapshots handed over, the host's stack asked for, the conformance kit."""

from __future__ import annotations

import pytest
import torch

from ttabench.api import STACK_INPUT, Outputs, TrajectoryContext, get_plugin
from ttabench.errors import TTABenchError
from ttabench.testing import check_estimator
from ttabench_enigma.stack import StackFeatures, StackFeaturesSource

STATIC = ("ac", "atc-mc", "doc", "nuclear")


def _setup(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    frozen = torch.randn(200, 10, generator=gen) * 3
    bn = frozen + torch.randn(200, 10, generator=gen) * 2
    val_logits = torch.randn(80, 10, generator=gen) * 3
    val_labels = torch.randint(0, 10, (80,), generator=gen)
    views = {"source": (Outputs(frozen, frozen_logits=frozen), Outputs(val_logits, val_labels)),
             "bn": (Outputs(bn, frozen_logits=frozen), Outputs(val_logits + 0.5, val_labels))}
    snaps = {0: bn[:50], 5: bn[:50] + torch.randn(50, 10, generator=gen) * 2,
             10: bn[:50] + torch.randn(50, 10, generator=gen) * 4}
    context = TrajectoryContext(num_classes=10, steps_run=10, probe_size=50,
                                probe_source_logits=frozen[:50], dataset_size=200, views=views)
    return views, snaps, context


def _fed(cls, snaps, **params):
    est = cls(probe_size=50, checkpoints=(0, 5, 10), static=STATIC, **params)
    for step, logits in snaps.items():
        est.on_snapshot(step, logits)
    return est


def _flips(snaps, step):
    """Flip rate and Weighted Flips / its maximum, image by image."""
    p0 = [int(r.argmax()) for r in snaps[0]]
    conf = [float(torch.softmax(r.double(), 0).max()) for r in snaps[0]]
    n = len(p0)
    ranks = [(sum(c < ci for c in conf) + (sum(c == ci for c in conf) + 1) / 2) for ci in conf]
    flipped = [int(r.argmax()) != p for r, p in zip(snaps[step], p0)]
    wf = sum(rank / n for rank, f in zip(ranks, flipped) if f)
    return sum(flipped) / n, wf / ((n + 1) / 2)


def test_every_feature_against_a_plain_computation():
    views, snaps, context = _setup()
    result = _fed(StackFeatures, snaps).compute(context)
    bn, frozen = views["bn"][0].logits, views["source"][0].logits
    agree = float((bn.argmax(1) == frozen.argmax(1)).double().mean())
    assert result.scores["agree"] == pytest.approx(agree)
    assert result.scores["bn:ac"] == pytest.approx(float(torch.softmax(bn, 1).max(1).values.mean()))
    for name in STATIC:  # the host's own estimator on the bn view's very objects
        expected = get_plugin("estimators", name)().estimate(*views["bn"]).value
        assert result.scores[f"bn:{name}"] == pytest.approx(expected)
    for step in (5, 10):
        u, wf = _flips(snaps, step)
        assert result.scores[f"u@{step}"] == pytest.approx(u)
        assert result.scores[f"wf@{step}"] == pytest.approx(wf)
    assert not any(k.startswith("source:") for k in result.scores)
    assert result.value == result.scores["u@10"]
    assert StackFeatures().score_input == STACK_INPUT


def test_the_source_variant_adds_the_frozen_view_and_agreement_products():
    views, snaps, context = _setup(1)
    result = _fed(StackFeaturesSource, snaps).compute(context)
    for name in STATIC:
        expected = get_plugin("estimators", name)().estimate(*views["source"]).value
        assert result.scores[f"source:{name}"] == pytest.approx(expected)
    agree = result.scores["agree"]
    assert result.scores["fa@5"] == pytest.approx((1 - result.scores["u@5"]) * agree)
    assert result.scores["agree*bn:atc-mc"] == pytest.approx(agree * result.scores["bn:atc-mc"])
    assert "agree*bn:nuclear" not in result.scores  # a score, not an accuracy
    assert result.value == result.scores["fa@10"]


def test_a_feature_that_needs_source_val_is_left_out_without_it():
    views, snaps, context = _setup(2)
    context.views = {"bn": (views["bn"][0], None)}
    scores = _fed(StackFeatures, snaps).compute(context).scores
    assert "bn:ac" in scores and "bn:doc" not in scores and "bn:atc-mc" not in scores


def test_bad_parameters_and_missing_views_are_refused():
    with pytest.raises(TTABenchError, match="static feature 'agreement' must be a static "
                                            "estimator computed in every view"):
        StackFeatures(static=["agreement"])
    _, snaps, context = _setup()
    context.views = {}
    with pytest.raises(TTABenchError, match="no 'bn' view outputs"):
        _fed(StackFeatures, snaps).compute(context)


def test_conformance_kit():
    check_estimator(StackFeatures, checkpoints=[0, 5])
    check_estimator(StackFeaturesSource, checkpoints=[0, 5])
