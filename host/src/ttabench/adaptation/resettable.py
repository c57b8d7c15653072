"""The base of the adapters whose state changes: its snapshot, the reset, the counters.

``ResettableAdapter.reset`` restores every child module's state saved by
``save_initial_state`` (the model, and a teacher, an anchor or a source copy an adapter keeps
beside it), drops the optimizer (``optimizer_for`` builds a fresh one, its state empty, at the
next step), re-seeds the private generator, and calls ``forget`` for the method's own state
(memory banks, running means). The number of classes, and with it the dataset family of the
authors' hyper-parameters, is resolved from the first batch's logits unless given.
"""

from __future__ import annotations

from collections.abc import Iterable
from copy import deepcopy
from typing import Any

import torch
from torch import nn

from ttabench.adaptation.family import FAMILY_RULE, check_family, dataset_family
from ttabench.adaptation.modes import eval_mode
from ttabench.adaptation.optimizer import OptimizerSetting
from ttabench.adaptation.rng import adapter_seed, seeded_generator
from ttabench.api import Adapter
from ttabench.errors import TTABenchError


class ResettableAdapter(Adapter):
    """Subclasses call ``save_initial_state()`` at the end of ``__init__``."""

    def __init__(self, model: nn.Module, *, num_classes: int | None = None,
                 family: str | None = None, seed: int | None = None) -> None:
        super().__init__(model)
        self.given_family = check_family(family)
        self.num_classes: int | None = None
        self.family: str | None = self.given_family
        if num_classes is not None:
            self.resolve_classes(num_classes)
        self.seed = adapter_seed(seed)
        self.generator = seeded_generator(self.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps = 0
        self.steps_since_reset = 0
        self.resets = 0
        self._initial: dict[str, dict[str, torch.Tensor]] = {}

    # -- classes and family
    def resolve_classes(self, width: int) -> None:
        """Fix the number of classes (and the family) from the first logits' width; later
        batches must have the same width."""
        if self.num_classes is None:
            if isinstance(width, bool) or not isinstance(width, int) or width < 2:
                raise TTABenchError(f"{self.name} needs a model with at least 2 classes, got "
                                    f"{width!r}")
            self.num_classes = width
            self.family = dataset_family(width, self.given_family)
        elif width != self.num_classes:
            raise TTABenchError(f"{self.name}: the model outputs {width} classes, expected "
                                f"{self.num_classes}")

    def per_family(self, imagenet: str, cifar: str) -> str | None:
        """``imagenet`` or ``cifar`` by the resolved family (None before it is known)."""
        if self.family is None:
            return None
        return imagenet if self.family == "imagenet" else cifar

    def family_record(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "family": self.family,
                "family_rule": "given" if self.given_family else FAMILY_RULE}

    # -- optimizer and state
    def optimizer_for(self, setting: OptimizerSetting,
                      params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The current optimizer; a fresh one from ``setting`` after construction or reset."""
        if self.optimizer is None:
            self.optimizer = setting.build(params)
        return self.optimizer

    def save_initial_state(self) -> None:
        """Snapshot the state of every child module, restored by ``reset``."""
        self._initial = {name: deepcopy(child.state_dict())
                         for name, child in self.named_children()}

    def restore_initial_state(self) -> None:
        for name, child in self.named_children():
            child.load_state_dict(self._initial[name])

    def reset(self) -> None:
        """Restore the modules, drop the optimizer state, re-seed, forget the method's state."""
        self.restore_initial_state()
        self.optimizer = None
        self.generator.manual_seed(self.seed)
        self.forget()
        self.steps_since_reset = 0
        self.resets += 1

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``self.model``'s logits (the model whose outputs the adapter returns: the adapted
        model, or a mean teacher), every layer in eval mode for the call, nothing updated."""
        with eval_mode(self.model):
            logits: torch.Tensor = self.model(x)
        return logits

    def forget(self) -> None:
        """Clear the method's own running state (default: none)."""

    def count_step(self) -> None:
        self.steps += 1
        self.steps_since_reset += 1

    def counters(self) -> dict[str, Any]:
        return {"steps": self.steps, "steps_since_reset": self.steps_since_reset,
                "resets": self.resets}
