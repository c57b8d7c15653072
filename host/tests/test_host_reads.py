"""No wait for the device per step: a cell reads none of the model's outputs back to the host
except through ``HostCopies`` (on CUDA a queued copy, one wait per pass or trajectory).

Counted, not timed, and on the CPU: the model's outputs are a tensor subclass that counts every
operation that would make the host wait for a CUDA device (``item``, ``tolist``, ``bool``,
``int``, ``float``, ``numpy``, ``cpu``, a copy to the CPU), and everything computed from them
inherits it. ``HostCopies.add`` takes its tensors as plain ones, so what it holds is not
counted; any other read, in the passes or in the trajectory's step loop, is.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from ttabench.api import Adapter
from ttabench.models.tiny import load_tiny_cnn
from ttabench.runner import compute
from ttabench.runner.execute import CellInputs, run_cell
from ttabench.suites.tiny import TinySuite

#: Tensor operations that copy a value to the host (on CUDA: wait for the device first).
HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__,
              torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
              torch.Tensor.numpy, torch.Tensor.cpu}


class Watched(torch.Tensor):
    """A tensor that counts the host reads made of it and of everything computed from it."""

    reads: list[str] = []

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        to_cpu = func is torch.Tensor.to and any(
            str(a) == "cpu" for a in [*args[1:], *(kwargs or {}).values()])
        if func in HOST_READS or to_cpu:
            cls.reads.append(getattr(func, "__name__", str(func)))
        return super().__torch_function__(func, types, args, kwargs or {})


class Watching(nn.Module):
    """The model, its logits ``Watched``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).as_subclass(Watched)


class ForwardOnly(Adapter):
    """One forward pass a step, nothing read back."""

    name = "forward-only"
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ForwardOnly.calls += 1
        with torch.no_grad():
            return self.model(x)

    def reset(self) -> None:
        """Nothing adapts."""


@pytest.fixture
def plain_host_copies(monkeypatch):
    real = compute.HostCopies.add

    def add(self: compute.HostCopies, tensor: torch.Tensor) -> None:
        real(self, tensor.as_subclass(torch.Tensor))

    monkeypatch.setattr(compute.HostCopies, "add", add)


def reads_in_a_cell(steps: int) -> list[str]:
    loaded = load_tiny_cnn()
    loaded = dataclasses.replace(loaded, module=Watching(loaded.module), classifier=None)
    suite = TinySuite(n_examples=256)
    Watched.reads, ForwardOnly.calls = [], 0
    out = run_cell(CellInputs(suite=suite, split=suite.splits()[-1], model=loaded,
                              adapter_cls=ForwardOnly, adapter_params={}, estimators={}, seed=0,
                              batch_size=16, steps=steps, device=torch.device("cpu")))
    assert ForwardOnly.calls == steps and out.adaptation["steps"] == steps
    assert out.targets["adapted"] is not None and len(out.steps.correct_per_step) == steps
    return Watched.reads


def test_the_counter_sees_a_host_read():
    x = torch.ones(3).as_subclass(Watched)
    Watched.reads = []
    int((x * 2).sum())
    bool(torch.isfinite(x).all())
    x.to("cpu")
    assert len(Watched.reads) == 3


def test_a_cell_reads_no_model_output_back_but_through_host_copies(plain_host_copies):
    assert reads_in_a_cell(3) == []
    assert reads_in_a_cell(12) == []
