"""AETTA: label-free accuracy estimation of the adapting model by dropout disagreement.

Before every adaptation step updates the model (as the authors' code, ``learner/dnn.py``,
estimates each batch before adapting on it) the estimator runs the current model on that
step's batch once without dropout and ``n_dropouts`` times with dropout, its logits restricted
to the suite's class subset (ImageNet-R's 200), and turns the disagreement into an error
estimate (``functional.aetta_batch_error``), smoothed by ``err_t = 0.6 err_{t-1} + 0.4 err``.
The average starts from the uncorrected disagreement ``err0`` of the first batch
(``ema_start="err0"``, the authors' code: ``err_1 = 0.6 err0_1 + 0.4 err_1``), or from the
first corrected error (``ema_start="first"``: ``err_1 = err``). The estimate is
``1 - mean_t err_t``: the mean estimated accuracy over the stream, comparable with the
adapted model's online accuracy.

Where the dropout goes (the rule for any model): on the output of every *stage*, the outermost
submodules that have children of their own and output a 4-D feature map (for ResNets:
``layer1``..``layer4``, as in the paper; for WideResNets: ``block1``..``block3``). A model with
no such module gets dropout after its outermost ``nn.Conv2d`` layers instead. The mask is drawn
from a generator seeded once per cell.

The undropped predictions are those of the same (updated) weights as the dropout passes, not
the step's own logits, so that a prediction change made by the update itself is not counted
as dropout disagreement. The passes use ``adapter.predict`` under ``torch.no_grad``; every
buffer (e.g. BatchNorm running statistics) and the global random state are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ttabench.api import (
    Adapter,
    EstimateResult,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
)
from ttabench.errors import TTABenchError
from ttabench.estimators.functional import aetta_batch_error, dropout_disagreement

EMA_KEEP = 0.6


EMA_STARTS = ("err0", "first")


def default_dropout(num_classes: int) -> float:
    """The authors' code's dropout rates by class count: 0.4 for CIFAR-10-scale (K < 100), 0.3
    for 100- and 200-class suites (CIFAR-100, ImageNet-R), 0.2 for ImageNet-scale (K >= 1000)."""
    if num_classes < 100:
        return 0.4
    return 0.3 if num_classes < 1000 else 0.2


def _outermost(model: nn.Module, keep: Callable[[str, nn.Module], bool]) -> list[str]:
    chosen: list[str] = []
    for name, module in model.named_modules():
        if keep(name, module) and not any(name.startswith(f"{c}.") for c in chosen):
            chosen.append(name)
    return chosen


def find_stages(model: nn.Module, forward: Callable[[], Any]) -> list[str]:
    """Names of the modules AETTA puts dropout after (see the module docstring for the rule).

    ``forward`` runs the model once; the output rank of every submodule is recorded meanwhile.
    """
    ndim: dict[str, int] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                ndim[name] = output.ndim

        return hook

    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules()]
    try:
        forward()
    finally:
        for handle in handles:
            handle.remove()
    composite = _outermost(model, lambda n, m: ndim.get(n) == 4 and len(list(m.children())) > 0)
    convolutions = _outermost(model, lambda n, m: ndim.get(n) == 4 and isinstance(m, nn.Conv2d))
    return composite or convolutions


def _dropout_hook(p: float, generator: torch.Generator) -> Callable[..., torch.Tensor]:
    def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(output.shape, generator=generator, device=output.device) >= p
        return output * keep / (1.0 - p)

    return hook


@contextmanager
def _untouched(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Run without gradients, then restore every buffer of ``module`` and the global RNG."""
    saved = {name: buffer.clone() for name, buffer in module.named_buffers()}
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        try:
            yield
        finally:
            for name, buffer in module.named_buffers():
                buffer.copy_(saved[name])


class AETTA(TrajectoryEstimator):
    """AETTA (Lee et al., CVPR 2024): dropout-disagreement estimate of the online accuracy.

    ``dropout``: the rate (None: ``default_dropout(K)``); ``n_dropouts``: inferences per batch;
    ``seed``: seeds the dropout masks; ``ema_start``: see the module docstring.
    """

    name = "aetta"
    target = "adapted"
    kind = "direct"

    def __init__(self, dropout: float | None = None, n_dropouts: int = 10, seed: int = 0,
                 ema_start: str = "err0") -> None:
        if dropout is not None and not 0.0 <= dropout < 1.0:
            raise TTABenchError(f"AETTA dropout must be in [0, 1), got {dropout}")
        if n_dropouts < 1:
            raise TTABenchError(f"AETTA n_dropouts must be at least 1, got {n_dropouts}")
        self.dropout = dropout
        self.n_dropouts = int(n_dropouts)
        self.seed = int(seed)
        if ema_start not in EMA_STARTS:
            raise TTABenchError(f"AETTA ema_start must be one of {list(EMA_STARTS)}, got {ema_start!r}")
        self.ema_start = ema_start
        self.reset()

    def reset(self) -> None:
        self.errors: list[float] = []
        self.stages: list[str] | None = None
        self.rate: float | None = None
        self._generator: torch.Generator | None = None

    def plan(self) -> TrajectoryPlan:
        """No probe and no checkpoints: everything happens in ``on_step``."""
        return TrajectoryPlan(probe_size=0, checkpoints=())

    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        """Unused: AETTA needs no probe."""

    def before_step(self, step: int, x: torch.Tensor, adapter: Adapter,
                    class_subset: list[int] | None) -> None:
        def predict() -> torch.Tensor:
            logits = adapter.predict(x)
            return logits if class_subset is None else logits[:, class_subset]

        if self._generator is None:
            self._generator = torch.Generator(device=x.device).manual_seed(self.seed)
        with _untouched(adapter, x.device):
            if self.stages is None:
                self.stages = find_stages(adapter.model, predict)
                if not self.stages:
                    raise TTABenchError(
                        "AETTA found no stage with a 4-D feature map to apply dropout to; "
                        "it needs a convolutional model"
                    )
            undropped = predict()
            self.rate = self.dropout if self.dropout is not None else default_dropout(undropped.shape[1])
            modules = dict(adapter.model.named_modules())
            hook = _dropout_hook(self.rate, self._generator)
            handles = [modules[name].register_forward_hook(hook) for name in self.stages]
            try:
                dropout_logits = torch.stack([predict() for _ in range(self.n_dropouts)])
            finally:
                for handle in handles:
                    handle.remove()
        predictions = undropped.argmax(dim=1)
        error = aetta_batch_error(predictions, dropout_logits)
        if self.errors:
            previous = self.errors[-1]
        elif self.ema_start == "err0":
            previous = dropout_disagreement(predictions, dropout_logits)
        else:
            previous = error
        self.errors.append(EMA_KEEP * previous + (1.0 - EMA_KEEP) * error)

    def window_results(self, window: int) -> list[EstimateResult]:
        """Per complete window of ``window`` steps: ``1 - mean_t err_t`` over the window's steps
        (the smoothed errors of the whole stream, so each window starts from the last one's)."""
        out = []
        for start in range(0, len(self.errors) - window + 1, window):
            accuracy = 1.0 - sum(self.errors[start:start + window]) / window
            out.append(EstimateResult(value=accuracy, estimate=accuracy))
        return out

    def compute(self, context: TrajectoryContext) -> EstimateResult:
        if not self.errors:
            raise TTABenchError(
                "AETTA observed no adaptation step; the host must call before_step for every batch"
            )
        accuracy = 1.0 - sum(self.errors) / len(self.errors)
        extras = {
            "steps": len(self.errors),
            "dropout": self.rate,
            "stages": self.stages,
            "final_error": self.errors[-1],
        }
        return EstimateResult(value=accuracy, estimate=accuracy, extras=extras)

    def params(self) -> dict[str, Any]:
        return {
            "dropout": "auto" if self.dropout is None else self.dropout,
            "n_dropouts": self.n_dropouts,
            "seed": self.seed,
            "ema": EMA_KEEP,
            "ema_start": self.ema_start,
        }
