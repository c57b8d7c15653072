"""``guard:<adapter>``: an adapter wrapper that resets when adaptation enters its failing phase.

The wrapped adapter steps as usual. Every ``check_every`` steps, once its rolling probe (the
last ``probe_batches`` batches, ``ttabench_enigma.drift``) is full, the guard measures the
drift signal's ``collapse`` (the loss of class diversity of the adapted model's predictions
against the pristine model's on the same images). Decision rule::

    alarm_t = collapse_t > threshold
    reset   if alarm at `patience` consecutive checks and >= min_steps steps since the last reset

A reset is the wrapped adapter's own ``reset()`` (pretrained parameters, optimizer and filter
state). The thresholds come from a settings file fitted on calibration streams only
(``ttabench_enigma.guard_settings``); constructor arguments override them.

The host resolves ``guard:tent`` through its ``ttabench.adapter_wrappers`` entry-point group:
``guard(Tent)`` builds the wrapped class once.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ttabench.api import Adapter, parse_record
from ttabench_enigma.drift import RollingProbe
from ttabench_enigma.guard_settings import DEFAULT_ID, GuardRule, load_settings


class Guard(Adapter):
    """The guard around ``inner_cls`` (set by ``guard``); ``inner_params`` go to it.

    ``settings``: a shipped id or a JSON file (``ttabench_enigma.guard_settings``);
    ``threshold``, ``patience``, ``check_every``, ``probe_batches``, ``min_steps`` override it.
    """

    name: ClassVar[str] = "guard"
    inner_cls: ClassVar[type[Adapter]]

    def __init__(self, model: torch.nn.Module, *, settings: str = DEFAULT_ID,
                 threshold: float | None = None, patience: int | None = None,
                 check_every: int | None = None, probe_batches: int | None = None,
                 min_steps: int | None = None, **inner_params: Any) -> None:
        fitted = load_settings(settings)
        given = {"threshold": threshold, "patience": patience, "check_every": check_every,
                 "probe_batches": probe_batches, "min_steps": min_steps}
        rule = parse_record(GuardRule, {
            **{k: getattr(fitted, k) for k in given},
            **{k: v for k, v in given.items() if v is not None}}, "guard")
        inner = self.inner_cls(model, **inner_params)
        super().__init__(inner.model)
        self.inner = inner
        self.settings_id = fitted.id
        self.threshold = float(rule.threshold)
        self.patience = rule.patience
        self.check_every = rule.check_every
        self.min_steps = rule.min_steps
        self.probe = RollingProbe(rule.probe_batches)
        self.probe.set_reference(inner)
        self.steps = 0
        self.steps_since_reset = 0
        self.alarms = 0
        self.guard_reset_steps: list[int] = []
        self.last_collapse: float | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        self.probe.add(x, self.inner)
        self.steps += 1
        self.steps_since_reset += 1
        if self.probe.full and self.steps % self.check_every == 0:
            self.last_collapse = self.probe.measure(self.inner).collapse
            self.alarms = self.alarms + 1 if self.last_collapse > self.threshold else 0
            if self.alarms >= self.patience and self.steps_since_reset >= self.min_steps:
                self.guard_reset_steps.append(self.steps - 1)
                self.reset()
        return logits

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.predict(x)

    def reset(self) -> None:
        """Reset the wrapped adapter and the alarm count (the probe keeps its images)."""
        self.inner.reset()
        self.steps_since_reset = 0
        self.alarms = 0

    def params(self) -> dict[str, Any]:
        return {**self.inner.params(), "guard": {
            "wraps": self.inner_cls.name, "settings": self.settings_id,
            "threshold": self.threshold, "patience": self.patience,
            "check_every": self.check_every, "probe_batches": self.probe.batches.maxlen,
            "min_steps": self.min_steps, "signal": "collapse"}}

    def counters(self) -> dict[str, Any]:
        """The wrapped adapter's counters (its ``resets`` include the guard's), plus the guard's
        resets and the 0-based steps they followed."""
        return {**self.inner.counters(), "guard_resets": len(self.guard_reset_steps),
                "guard_reset_steps": list(self.guard_reset_steps),
                "last_collapse": self.last_collapse}


def guard(inner_cls: type[Adapter]) -> type[Adapter]:
    """The adapter class ``guard:<inner name>`` wrapping ``inner_cls``."""
    return type(f"Guard{inner_cls.__name__}", (Guard,), {
        "__module__": __name__, "__qualname__": f"Guard{inner_cls.__name__}",
        "name": f"guard:{inner_cls.name}", "inner_cls": inner_cls,
        "source_data_param": inner_cls.source_data_param,
        "source_data_samples": inner_cls.source_data_samples,
        "source_val_reference": inner_cls.source_val_reference,
        "feature_call": inner_cls.feature_call,
        "__doc__": f"{inner_cls.name} under the guard (see ttabench_enigma.guard.Guard)."})
