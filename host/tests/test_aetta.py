"""AETTA: stage detection, untouched adapter state, the p -> 0 limit, the moving average."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from ttabench.adapters import SourceAdapter
from ttabench.api import Adapter, TrajectoryContext, TrajectoryPlan
from ttabench.errors import TTABenchError
from ttabench.estimators import aetta as aetta_module
from ttabench.estimators.aetta import AETTA, default_dropout, find_stages
from ttabench.models.base import NormalizedModel
from ttabench.models.tiny import TinyCNN


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class StagedNet(nn.Module):
    """A stem conv, two composite stages, a pooled linear head."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stage1 = _stage(4, 8)
        self.stage2 = _stage(8, 8)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stage2(self.stage1(self.stem(x)))))


class TrainModeAdapter(Adapter):
    """Keeps the model in train mode, so a plain forward would update BatchNorm statistics."""

    name = "train-mode"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def reset(self) -> None:
        """Nothing to restore in this test adapter."""


def _model(seed: int = 0) -> nn.Module:
    """Untrained, with an unbiased, scaled-up head so that predictions vary across images."""
    torch.manual_seed(seed)
    net = StagedNet()
    with torch.no_grad():
        net.fc.bias.zero_()
        net.fc.weight.mul_(10.0)
    return NormalizedModel(net, mean=(0.5,) * 3, std=(0.25,) * 3)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def _context() -> TrajectoryContext:
    return TrajectoryContext(
        num_classes=5, steps_run=3, probe_size=0, probe_source_logits=torch.zeros(0, 5), dataset_size=24
    )


def _run(estimator: AETTA, adapter: Adapter, steps: int = 3,
         class_subset: list[int] | None = None) -> float:
    """As the host does: ``before_step`` on each batch, then the step, then ``on_step``."""
    estimator.reset()
    for step in range(1, steps + 1):
        x = _images(8, seed=step)
        estimator.before_step(step, x, adapter, class_subset)
        estimator.on_step(step, x, adapter(x), adapter)
    return estimator.compute(_context()).value


def test_declarations_and_plan() -> None:
    assert (AETTA.target, AETTA.kind, AETTA.needs) == ("adapted", "direct", frozenset())
    assert AETTA().plan() == TrajectoryPlan(probe_size=0, checkpoints=())
    # the authors' code: CIFAR-10 0.4, CIFAR-100 and ImageNet-R (200) 0.3, ImageNet 0.2
    assert [default_dropout(k) for k in (10, 100, 200, 1000)] == [0.4, 0.3, 0.3, 0.2]


def test_find_stages_rule() -> None:
    model = _model()
    assert find_stages(model, lambda: model(_images(2, 0))) == ["net.stage1", "net.stage2"]
    resnet = resnet18(num_classes=3).eval()
    stages = find_stages(resnet, lambda: resnet(torch.rand(1, 3, 32, 32)))
    assert stages == ["layer1", "layer2", "layer3", "layer4"]
    tiny = TinyCNN().eval()  # no composite 4-D module: fall back to the conv layers
    assert find_stages(tiny, lambda: tiny(torch.rand(2, 3, 16, 16))) == ["features.0", "features.4"]


def test_dropout_passes_leave_adapter_state_and_rng_untouched() -> None:
    adapter = TrainModeAdapter(_model().train())
    x = _images(8, seed=1)
    adapter(x)  # the step itself may update BN statistics; before_step must not
    before = {k: v.clone() for k, v in adapter.state_dict().items()}
    rng = torch.get_rng_state()
    estimator = AETTA()
    estimator.before_step(1, x, adapter, None)
    assert estimator.stages == ["net.stage1", "net.stage2"]
    after = adapter.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(rng, torch.get_rng_state())
    assert not any(module._forward_hooks for module in adapter.modules())  # hooks removed


def test_dropout_hook_rate_and_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    out = aetta_module._dropout_hook(0.4, generator)(nn.Identity(), (), torch.ones(20000))
    assert (out == 0).double().mean().item() == pytest.approx(0.4, abs=0.02)
    assert torch.allclose(out[out != 0], torch.tensor(1 / 0.6))


@pytest.mark.parametrize("p", [0.0, 1e-12])
def test_vanishing_dropout_gives_zero_error(p: float) -> None:
    estimator = AETTA(dropout=p)
    assert _run(estimator, SourceAdapter(_model())) == 1.0
    assert estimator.errors == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("start", ["err0", "first"])
def test_ema_matches_hand_computation(monkeypatch: pytest.MonkeyPatch, start: str) -> None:
    """The authors' code seeds the average with the first batch's uncorrected err0 (0.2
    here): ``ema_1 = 0.6 * 0.2 + 0.4 * 0.5``; ``ema_start="first"`` seeds it with err_1."""
    batch_errors = iter([0.5, 0.1, 0.3])
    monkeypatch.setattr(aetta_module, "aetta_batch_error", lambda preds, drop: next(batch_errors))
    monkeypatch.setattr(aetta_module, "dropout_disagreement", lambda preds, drop: 0.2)
    estimator = AETTA(ema_start=start)
    value = _run(estimator, SourceAdapter(_model()))
    first = 0.6 * 0.2 + 0.4 * 0.5 if start == "err0" else 0.5
    ema = [first, 0.6 * first + 0.4 * 0.1, 0.6 * (0.6 * first + 0.4 * 0.1) + 0.4 * 0.3]
    assert estimator.errors == pytest.approx(ema)
    assert value == pytest.approx(1 - sum(ema) / 3)
    assert estimator.params()["ema_start"] == start


class ShiftingAdapter(Adapter):
    """Each step adds 1 to the head's bias of class 0: predictions move with every update."""

    name = "shifting"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.model.net.fc.bias[0] += 1.0
        return self.model(x)

    def reset(self) -> None:
        """Nothing to restore in this test adapter."""


def test_estimate_is_taken_before_the_update_on_logits_of_the_class_subset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = aetta_module.aetta_batch_error
    monkeypatch.setattr(aetta_module, "aetta_batch_error",
                        lambda p, d: seen.append((p, d)) or real(p, d))
    adapter = ShiftingAdapter(_model())
    reference = _model()  # the same weights, never updated
    estimator = AETTA(n_dropouts=2)
    _run(estimator, adapter, steps=2, class_subset=[1, 2, 4])
    with torch.no_grad():
        for step, (predictions, dropout_logits) in enumerate(seen, start=1):
            reference.net.fc.bias[0] = step - 1.0  # the state before step `step`'s update
            expected = reference(_images(8, seed=step))[:, [1, 2, 4]].argmax(dim=1)
            assert torch.equal(predictions, expected)
            assert dropout_logits.shape == (2, 8, 3)
    assert estimator.rate == 0.4  # default_dropout of the 3 classes it sees


def test_batch_errors_come_from_the_dropout_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = aetta_module.aetta_batch_error
    monkeypatch.setattr(
        aetta_module, "aetta_batch_error", lambda p, d: seen.append((p, d)) or real(p, d)
    )
    adapter = SourceAdapter(_model())
    estimator = AETTA(n_dropouts=4)
    _run(estimator, adapter, steps=1)
    predictions, dropout_logits = seen[0]
    assert dropout_logits.shape == (4, 8, 5)
    assert torch.equal(predictions, adapter.predict(_images(8, seed=1)).argmax(dim=1))
    assert not torch.equal(dropout_logits[0], dropout_logits[1])  # fresh masks per inference


def test_seeded_reset_and_range() -> None:
    adapter = SourceAdapter(_model())
    estimator = AETTA(dropout=0.5, seed=3)
    first = _run(estimator, adapter)
    assert 0.0 <= first <= 1.0 and first < 1.0
    assert _run(estimator, adapter) == first  # reset() reseeds the masks
    assert _run(AETTA(dropout=0.5, seed=4), adapter) != first


def test_errors_are_clear() -> None:
    with pytest.raises(TTABenchError, match="no adaptation step"):
        AETTA().compute(_context())
    with pytest.raises(TTABenchError, match="dropout"):
        AETTA(dropout=1.0)
    flat = SourceAdapter(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)))
    with pytest.raises(TTABenchError, match="4-D"):
        AETTA().before_step(1, _images(4, 0), flat, None)
    with pytest.raises(TTABenchError, match="ema_start"):
        AETTA(ema_start="zero")
