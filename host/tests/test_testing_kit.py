"""The conformance kit accepts the host's own plugins and rejects deliberately broken toys."""

from __future__ import annotations

import itertools

import pytest
import torch

from ttabench.adapters import SourceAdapter
from ttabench.api import (
    Adapter,
    EstimateResult,
    LoadedModel,
    Outputs,
    StaticEstimator,
    TrajectoryEstimator,
    TrajectoryPlan,
)
from ttabench.models.base import NormalizedModel, weights_hash
from ttabench.models.tiny import TinyCNN, load_tiny_cnn
from ttabench.suites.tiny import TinySuite
from ttabench.testing import (
    check_adapter,
    check_estimator,
    check_model_source,
    check_suite,
    run_all,
)

# --------------------------------------------------------------------------- toy adapters


class BiasStep(Adapter):
    """A real (if silly) adapter: each step moves the classifier bias; reset restores it."""

    name = "bias-step"

    def __init__(self, model: torch.nn.Module, step: float = 0.05) -> None:
        super().__init__(model.eval())
        self.step = step
        self.initial = {k: v.clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        self.model.net.fc.bias.add_(self.step * (logits.softmax(1).mean(0) - 0.25))
        return logits

    def reset(self) -> None:
        self.model.load_state_dict(self.initial)

    def params(self) -> dict:
        return {"step": self.step}


class NoReset(BiasStep):
    def reset(self) -> None:
        """Forgets to restore the bias."""


class PredictAdapts(BiasStep):
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)


class PredictMovesStatistics(BiasStep):
    """predict in train mode: BatchNorm running statistics move (buffers, not parameters)."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.model.train()
        try:
            return self.model(x)
        finally:
            self.model.eval()


class PredictCounts(BiasStep):
    """predict counts itself among the steps."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self.calls = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().predict(x)

    def counters(self) -> dict:
        return {"calls": self.calls}


class BatchStatisticsClaimed(BiasStep):
    source_val_reference = "bn"  # but its model keeps the running statistics


class SecondPassClaimed(BiasStep):
    feature_call = 1  # but a step calls the head once


class WrongShape(BiasStep):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[:, :2]


_instances = itertools.count()


class NotDeterministic(BiasStep):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model, step=0.05 * (1 + next(_instances)))


class BadParams(BiasStep):
    def params(self) -> dict:
        return {"device": torch.device("cpu")}


# --------------------------------------------------------------------------- toy estimators

seen: list[tuple[Outputs, Outputs | None]] = []


class MeanConfidence(StaticEstimator):
    """Average max-softmax; records what the kit handed it."""

    name = "toy-ac"
    needs = frozenset({"source_val", "features"})

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        seen.append((target, source_val))
        value = float(target.logits.softmax(1).max(1).values.mean())
        return EstimateResult(value=value, estimate=value)


class ReturnsNaN(MeanConfidence):
    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=float("nan"))


class DirectOutOfRange(MeanConfidence):
    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        return EstimateResult(value=1.7)


class ScoreOutOfRange(DirectOutOfRange):
    kind = "score"  # a raw score may be any finite number


class BadTarget(MeanConfidence):
    target = "labels"  # type: ignore[assignment]


class Agreement(TrajectoryEstimator):
    """Fraction of probe predictions unchanged between step 0 and the last checkpoint."""

    name = "toy-agreement"
    target = "adapted"

    def __init__(self, checkpoints: tuple[int, ...] = (0, 3)) -> None:
        self.checkpoints = checkpoints
        self.snapshots: dict[int, torch.Tensor] = {}

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(probe_size=40, checkpoints=self.checkpoints)

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        self.snapshots[step] = probe_logits.argmax(1)

    def compute(self, context) -> EstimateResult:
        first, last = self.snapshots[self.checkpoints[0]], self.snapshots[self.checkpoints[-1]]
        return EstimateResult(value=float((first == last).float().mean()))

    def reset(self) -> None:
        self.snapshots = {}


class RemembersFirst(Agreement):
    """reset() does not forget: a snapshot already seen is never replaced."""

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        self.snapshots.setdefault(step, probe_logits.argmax(1))

    def reset(self) -> None:
        pass


# --------------------------------------------------------------------------- tests


def test_accepts_host_builtins():
    check_adapter(SourceAdapter)
    check_suite(TinySuite, n_examples=32)
    check_model_source(load_tiny_cnn)
    results = run_all("adapters", SourceAdapter)
    assert [name for name, _, _ in results] == [
        "construct", "forward", "predict", "reset", "params/counters", "deterministic",
        "declarations"
    ]
    assert all(ok for _, ok, _ in results)


def test_accepts_a_correct_adapting_toy():
    check_adapter(BiasStep, step=0.1)


@pytest.mark.parametrize(
    ("cls", "check", "words"),
    [
        (NoReset, "reset", "reset did not restore: ['model.net.fc.bias']"),
        (PredictAdapts, "predict", "predict changed parameters"),
        (PredictMovesStatistics, "predict", "buffers: ['model.net.features.1.running_mean'"),
        (PredictCounts, "predict", "predict changed the counters"),
        (WrongShape, "forward", "logits shape (16, 2) != (16, 4)"),
        (NotDeterministic, "deterministic", "two fresh instances"),
        (BadParams, "params/counters", "not JSON-serialisable"),
        (BatchStatisticsClaimed, "declarations", "source_val_reference='bn', but a fresh"),
        (SecondPassClaimed, "declarations", "feature_call=1, but a step on 16 images called "
                                            "the classifier head with [16] rows"),
    ],
)
def test_rejects_broken_adapters(cls, check, words):
    with pytest.raises(AssertionError) as caught:
        check_adapter(cls)
    assert f"failed check '{check}'" in str(caught.value)
    assert words in str(caught.value)


def test_run_all_reports_each_check():
    results = {name: ok for name, ok, _ in run_all("adapter", NoReset)}
    assert results == {
        "construct": True, "forward": True, "predict": True, "reset": False,
        "params/counters": True, "deterministic": True, "declarations": True,
    }
    # a failed setup check stops the list
    assert [(n, ok) for n, ok, _ in run_all("adapters", WrongShape)] == [
        ("construct", True), ("forward", False)
    ]


def test_static_estimator_gets_hidden_labels_and_features():
    seen.clear()
    check_estimator(MeanConfidence)
    target, source_val = seen[0]
    assert target.labels is None
    assert source_val is not None and source_val.labels is not None
    assert len(source_val.labels) == len(source_val.logits)
    fc = load_tiny_cnn().module.net.fc  # the same seeded training as the kit's model
    assert target.features.shape == (len(target.logits), fc.in_features)
    # the features are the classifier's input: the head maps them back to the logits
    with torch.no_grad():
        assert torch.allclose(fc(target.features), target.logits, atol=1e-5)
        assert torch.allclose(fc(source_val.features), source_val.logits, atol=1e-5)


@pytest.mark.parametrize(
    ("cls", "words"),
    [
        (ReturnsNaN, "value nan is not a finite number"),
        (DirectOutOfRange, "direct estimate 1.7 is not in [0, 1]"),
        (BadTarget, "target 'labels'"),
    ],
)
def test_rejects_broken_estimators(cls, words):
    with pytest.raises(AssertionError) as caught:
        check_estimator(cls)
    assert words in str(caught.value)


def test_score_estimators_may_leave_unit_range():
    check_estimator(ScoreOutOfRange)


def test_trajectory_estimators():
    check_estimator(Agreement)
    check_estimator(Agreement, checkpoints=(0, 1, 5))
    with pytest.raises(AssertionError, match="failed check 'reset'"):
        check_estimator(RemembersFirst)
    with pytest.raises(AssertionError, match="checkpoints not increasing"):
        check_estimator(Agreement, checkpoints=(3, 0))


def test_rejects_a_suite_with_float_images():
    class FloatSuite(TinySuite):
        def dataset(self, split):
            base = super().dataset(split)
            return [(image.float(), label) for image, label in base]

    with pytest.raises(AssertionError, match="image must be a uint8 tensor"):
        check_suite(FloatSuite, n_examples=8)


def test_rejects_a_model_source_with_a_wrong_head():
    def wrong_classes(arg=None, *, cache_dir=None, num_classes=None):
        torch.manual_seed(0)
        module = NormalizedModel(TinyCNN(num_classes=4), mean=(0.5,) * 3, std=(0.25,) * 3)
        return LoadedModel(module, 10, "wrong:0", weights_hash(module), {"input_size": 16})

    with pytest.raises(AssertionError, match=r"logits shape \(2, 4\) != \(2, 10\)"):
        check_model_source(wrong_classes)
