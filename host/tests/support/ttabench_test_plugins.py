"""Plugins used only by the runner tests: they count, record, break and fail on purpose."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ttabench.api import (
    Adapter,
    EstimateResult,
    LoadedModel,
    Outputs,
    StaticEstimator,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
)
from ttabench.models.tiny import load_tiny_cnn
from ttabench.suites.tiny import TinySuite

RECORD: dict[str, list] = {"static": [], "snapshots": [], "steps": []}


class RecordingStatic(StaticEstimator):
    """Direct estimator returning the mean max-softmax; remembers every Outputs it saw."""

    name = "recording-static"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        RECORD["static"].append(target)
        value = float(target.logits.softmax(1).max(1).values.mean())
        return EstimateResult(value=value, estimate=value)


class DrawingStatic(StaticEstimator):
    """Direct estimator that draws from torch's global generator (as a bootstrap would)."""

    name = "drawing-static"

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        value = float(torch.rand(1))
        return EstimateResult(value=value, estimate=value)


class AdaptedRecorder(StaticEstimator):
    """Direct, computed in the ``adapted`` view only (features and source val asked for);
    remembers every ``(target, source_val)`` it was given in ``RECORD["adapted"]``."""

    name = "adapted-recorder"
    view = "adapted"
    needs = frozenset({"features", "source_val"})

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        RECORD.setdefault("adapted", []).append((target, source_val))
        return EstimateResult(value=0.5, estimate=0.5)


class FailsOffFrozen(StaticEstimator):
    """Direct: 0.5 on the frozen model's own outputs; NaN on more than ``nan_above`` rows (the
    adapted view's stream); else raises when the logits are not the frozen ones (bn view)."""

    name = "fails-off-frozen"

    def __init__(self, nan_above: int = 10**9) -> None:
        self.nan_above = nan_above

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        if target.logits.shape[0] > self.nan_above:
            return EstimateResult(value=float("nan"))
        if not torch.equal(target.frozen_logits, target.logits):
            raise RuntimeError("not the frozen model")
        return EstimateResult(value=0.5, estimate=0.5)


class SleepyStatic(StaticEstimator):
    """Direct estimator that sleeps ``seconds`` per call (a measurable estimation time)."""

    name = "sleepy-static"

    def __init__(self, seconds: float = 0.2) -> None:
        self.seconds = seconds

    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        time.sleep(self.seconds)
        return EstimateResult(value=0.5, estimate=0.5)


class RecordingTrajectory(TrajectoryEstimator):
    """Flip count between step 0 and the last checkpoint; remembers the snapshot steps."""

    name = "recording-trajectory"
    target = "bn"
    kind = "score"

    def __init__(self, probe_size: int = 64, checkpoints: tuple[int, ...] = (0, 5),
                 small_probe: str = "error") -> None:
        self.probe_size, self.checkpoints, self.small_probe = probe_size, tuple(checkpoints), small_probe
        self.snaps: dict[int, torch.Tensor] = {}

    def params(self) -> dict[str, Any]:
        return {"probe_size": self.probe_size, "checkpoints": list(self.checkpoints)}

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(self.probe_size, self.checkpoints, chunk=32)

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        RECORD["snapshots"].append(step)
        self.snaps[step] = probe_logits.argmax(1)

    def on_step(self, step, x, logits, adapter) -> None:
        RECORD["steps"].append(step)

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        last = max(self.snaps)
        flips = float((self.snaps[0] != self.snaps[last]).sum())
        return EstimateResult(value=flips, extras={"probe_size": context.probe_size,
                                                   "steps_run": context.steps_run})

    def reset(self) -> None:
        self.snaps = {}


class NoisyAdapter(Adapter):
    """Updates the classifier bias with seeded noise at every step (a deterministic stand-in
    for a real adapter, so flips happen)."""

    name = "noisy"

    def __init__(self, model: nn.Module, scale: float = 0.5) -> None:
        super().__init__(model.eval())
        self.scale = scale
        self.start = {k: v.clone() for k, v in model.state_dict().items()}
        self.generator = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.model(x)
            bias = self.model.net.fc.bias
            bias.add_(self.scale * torch.randn(bias.shape, generator=self.generator))
        return logits

    def reset(self) -> None:
        self.model.load_state_dict(self.start)

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}


class FailingTiny(TinySuite):
    """The tiny suite, with one split that kills its worker process on the first attempt
    (``crash_split``, while the ``marker`` file does not exist yet) and one that always raises
    (``fail_split``)."""

    name = "failing-tiny"

    def __init__(self, data_dir=None, crash_split: str = "", fail_split: str = "",
                 marker: str = "", n_examples: int = 256) -> None:
        super().__init__(data_dir, n_examples=n_examples)
        self.crash_split, self.fail_split, self.marker = crash_split, fail_split, marker

    def dataset(self, split):
        if split.name == self.crash_split and not Path(self.marker).exists():
            Path(self.marker).write_text("killed once")
            os._exit(1)
        if split.name == self.fail_split:
            raise RuntimeError("injected failure")
        return super().dataset(split)


def nan_model(arg: str | None = None, *, cache_dir=None, num_classes=None) -> LoadedModel:
    """tiny-cnn whose classifier outputs NaN."""
    loaded = load_tiny_cnn()
    with torch.no_grad():
        loaded.module.net.fc.bias.fill_(float("nan"))
    loaded.model_id = "nan-model"
    return loaded


def ten_class_model(arg: str | None = None, *, cache_dir=None, num_classes=None) -> LoadedModel:
    """tiny-cnn with a 10-way head: does not fit the 4-class tiny suite."""
    loaded = load_tiny_cnn()
    loaded.module.net.fc = nn.Linear(16, 10)
    loaded.num_classes = 10
    loaded.model_id = "ten-class"
    return loaded


class IndexReader(nn.Module):
    """A 1000-class BatchNorm net for fabricated ImageNet-style trees: a small conv path plus
    a fixed read-out that decodes the class an image's flat colour encodes (R, G: the label in
    base 32), so predictions are mostly right and adaptation has something to move."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                      nn.Flatten())
        self.fc = nn.Linear(8, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, g = x[:, 0].mean((1, 2)) * 255, x[:, 1].mean((1, 2)) * 255
        code = ((r - 4) / 8).round() + 32 * ((g - 4) / 8).round()
        prior = -0.5 * (torch.arange(1000, device=x.device)[None] - code[:, None]).abs()
        return self.fc(self.features(x)) + prior


def fake_rn50(arg: str | None = None, *, cache_dir=None, num_classes=None) -> LoadedModel:
    """``IndexReader`` under the id of the torchvision ResNet-50 V1, so that the calibrations
    shipped for that model are checked against it (class count, steps, probe size)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = IndexReader().eval()
    return LoadedModel(module=net, num_classes=1000,
                       model_id="torchvision:resnet50/IMAGENET1K_V1", weights_hash="fake-rn50",
                       preprocessing={"input_size": 16}, classifier="fc")


class RecordingAdapter(Adapter):
    """Records the images it adapts on and the probe images it predicts (their first pixel's
    blue value encodes the item index), and never changes the model."""

    name = "recording"
    seen: dict[str, list[int]] = {"probe": [], "stream": []}

    @staticmethod
    def ids(x: torch.Tensor) -> list[int]:
        return [int(v) for v in (x[:, 2, 0, 0] * 255).round().tolist()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        RecordingAdapter.seen["stream"] += self.ids(x)
        return self.model(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        RecordingAdapter.seen["probe"] += self.ids(x)
        return self.model(x)

    def reset(self) -> None:
        pass


def thousand_class_model(arg: str | None = None, *, cache_dir=None, num_classes=None) -> LoadedModel:
    """tiny-cnn with a seeded 1000-way head: an ImageNet-sized label set at any image size."""
    loaded = load_tiny_cnn()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loaded.module.net.fc = nn.Linear(16, 1000)
    loaded.num_classes = 1000
    loaded.model_id = "thousand-class"
    return loaded


thousand_class_model.name = "thousand-class"


class BadLabelsTiny(TinySuite):
    """The tiny suite with one bad label per split: ``kind="range"`` puts a label 4 (the suite
    has classes 0..3), ``kind="float"`` makes the labels floats with a 1.5 among them."""

    name = "bad-labels-tiny"

    def __init__(self, data_dir=None, kind: str = "range", n_examples: int = 64) -> None:
        super().__init__(data_dir, n_examples=n_examples)
        self.kind = kind

    def dataset(self, split):
        images, labels = super().dataset(split).tensors
        labels = labels.clone() if self.kind == "range" else labels.double()
        labels[5] = 4 if self.kind == "range" else 1.5
        return TensorDataset(images, labels)


class NoSourceValTiny(TinySuite):
    """The tiny suite without a labelled source-validation split."""

    name = "no-source-val-tiny"

    def source_val(self):
        return None


def report_gpu(seconds: float) -> tuple[int, str | None]:
    """A pool task: the worker that ran it and the GPUs it sees (``CUDA_VISIBLE_DEVICES``),
    after ``seconds`` (so that every worker of a pool gets a task)."""
    time.sleep(seconds)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def ray_task_view(seconds: float) -> tuple[int, str | None, str]:
    """What a Ray task sees: its process, its visible GPUs (``report_gpu``) and the device the
    runner runs a ``cuda:1`` run on there."""
    import ray

    from ttabench.runner.worker import on_own_gpu

    pid, visible = report_gpu(seconds)
    return pid, visible, on_own_gpu({"device": "cuda:1"}, bool(ray.get_gpu_ids()))["device"]


class ConstantAdapter(Adapter):
    """Predicts class 0 for every image; logs what it is called with (``LOG``): the length of
    every adaptation step's and every predict's input and the steps since its last reset, so
    a test can follow the stream (it never updates anything)."""

    name = "constant"
    LOG: dict[str, list[int]] = {"forward": [], "predict": [], "since_reset": []}

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.steps: list[int] = [0]  # steps since each reset, the current one last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.steps[-1] += 1
        self.LOG["forward"].append(len(x))
        self.LOG["since_reset"].append(self.steps[-1])
        return torch.eye(4)[torch.zeros(len(x), dtype=torch.long)]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.LOG["predict"].append(len(x))
        return torch.eye(4)[torch.zeros(len(x), dtype=torch.long)]

    def reset(self) -> None:
        self.steps.append(0)

    def counters(self) -> dict[str, Any]:
        return {"resets": len(self.steps) - 1}


class BatchStatsAdapter(Adapter):
    """No update: the model normalizing with the statistics of the batch it is given (train-mode
    batch norm without running statistics); logs the length of every call (``LOG``)."""

    name = "batch-stats"
    LOG: dict[str, list[Any]] = {"forward": [], "predict": [], "calls": []}

    def __init__(self, model: nn.Module) -> None:
        from ttabench.runner.passes import batch_statistics_copy

        super().__init__(batch_statistics_copy(model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.LOG["forward"].append(len(x))
        self.LOG["calls"].append(("forward", len(x)))
        with torch.no_grad():
            return self.model(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.LOG["predict"].append(len(x))
        self.LOG["calls"].append(("predict", len(x)))
        return self.model(x)

    def reset(self) -> None:
        """Nothing to restore."""


class ScriptedWindows(TrajectoryEstimator):
    """Per window ``w`` the estimate ``(w mod 4) / 4``; counts every hook the host calls
    (``CALLS``) and keeps, per static view of its context, the row count and the mean
    max-softmax of the target outputs (``VIEWS``)."""

    name = "scripted-windows"
    target = "adapted"
    CALLS: dict[str, int] = {"before_step": 0, "on_step": 0}
    VIEWS: dict[str, tuple[int, float]] = {}

    def plan(self) -> TrajectoryPlan:
        return TrajectoryPlan(probe_size=0, checkpoints=())

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        """No probe."""

    def before_step(self, step, x, adapter, class_subset) -> None:
        self.CALLS["before_step"] += 1

    def on_step(self, step, x, logits, adapter) -> None:
        self.CALLS["on_step"] += 1
        self.steps = step

    def window_results(self, window: int) -> list[EstimateResult]:
        return [EstimateResult(value=(w % 4) / 4, estimate=(w % 4) / 4)
                for w in range(self.steps // window)]

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        self.VIEWS.clear()
        for view, (target, _) in context.views.items():
            confidence = torch.softmax(target.logits.double(), 1).max(1).values
            self.VIEWS[view] = (len(target.logits), float(confidence.mean()))
        return EstimateResult(value=0.5, estimate=0.5)

    def reset(self) -> None:
        self.steps = 0
