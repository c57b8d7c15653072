"""``sar``: sharpness-aware and reliable entropy minimization (Niu et al., ICLR 2023).

Follows mr-eggplant/SAR ``sar.py`` (``SAR.forward``, ``forward_and_adapt_sar``,
``update_ema``) and ``sam.py`` (``SAM.first_step``, ``second_step``), with the set-up of
``ttabench_enigma.sar_setup``. Per step on a batch x, E_i the softmax entropy, E0 = 0.4 ln K:

1. loss mean_{E_i < E0} E_i (the reliable samples R) is back-propagated; SAM ascent: every
   adapted parameter moves by rho g / (||g|| + 1e-12) (rho 0.05, ||g|| over all of them);
2. at the perturbed weights, E'_i over R; loss2 = mean of E'_i over those with E'_i < E0; when
   loss2 is a number, ema <- loss2 (first) or 0.9 ema + (1 - 0.9) loss2; back-propagated;
   SAM descent: the weights go back to before the ascent and the base SGD (momentum 0.9)
   steps with the gradient taken at the perturbed weights. An empty R makes the losses NaN
   with zero gradients: the SGD step still applies its momentum, as in their code;
3. model recovery: when ema < 0.2 the model's state goes back to the source state.

The logits returned are those of the first forward pass. Two things in their code change the
numbers after a recovery, followed by default and named as options:

- ``recovery_ema="restored"``: ``SAR.forward`` assigns the pre-recovery ema back after
  ``reset()`` cleared it, so the next steps start from an ema below 0.2 and recover again until
  it climbs above; ``"cleared"`` starts afresh, as ``reset()`` intends (and
  mariodoebler/test-time-adaptation ``methods/sar.py`` does);
- ``recovery_momentum="kept"``: ``SAM.state_dict`` holds no base-optimizer state, so restoring
  the optimizer in a recovery keeps SGD's momentum buffers; ``"cleared"`` empties them.

Hyper-parameters per family: imagenet: SGD with lr by ``sar_setup.imagenet_lr`` (mr-eggplant
``main.py``); cifar10/cifar100: SGD lr 0.001, momentum 0.9 under SAM
(mariodoebler/test-time-adaptation ``cfgs/cifar10_c/sar.yaml`` with ``methods/sar.py``'s SAM
optimizer). ``reset()`` restores everything: model, optimizer (momentum included), ema.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from torch import Tensor, nn

from ttabench.api import (
    OptimizerSetting,
    ResettableAdapter,
    check_choice,
    check_fraction,
    check_positive,
)
from ttabench_enigma.adapters import softmax_entropy
from ttabench_enigma.sar_setup import collect_like_sar, configure_like_sar, imagenet_lr

CIFAR_LR = 0.001
EMA_KEEP = 0.9


class SAR(ResettableAdapter):
    """SAR: reliable entropy minimization, sharpness-aware updates, model recovery.

    ``lr`` overrides the family's rule, ``e_margin`` E0 (default 0.4 ln K); ``recovery_ema``
    and ``recovery_momentum`` choose the authors' recovery or the fixed one."""

    name = "sar"
    feature_call = 0  # the first pass (the second runs at the perturbed weights)
    source_val_reference = "bn"

    def __init__(self, model: nn.Module, *, family: str | None = None,
                 num_classes: int | None = None, lr: float | None = None, rho: float = 0.05,
                 e_margin: float | None = None, reset_constant: float = 0.2,
                 recovery_ema: str = "restored", recovery_momentum: str = "kept") -> None:
        super().__init__(configure_like_sar(model), num_classes=num_classes, family=family)
        self.adapted_params, self.param_names, self.layer_kinds = collect_like_sar(self.model)
        self.given_lr = None if lr is None else check_positive("lr", lr)
        self.lr: float | None = None
        self.lr_rule = "given" if lr is not None else None
        self.rho = check_fraction("rho", rho, high=float("inf"))
        self.given_e_margin = None if e_margin is None else check_positive("e_margin", e_margin)
        self.reset_constant = check_fraction("reset_constant", reset_constant, high=float("inf"))
        self.recovery_ema = check_choice("recovery_ema", recovery_ema, ("restored", "cleared"))
        self.recovery_momentum = check_choice("recovery_momentum", recovery_momentum,
                                              ("kept", "cleared"))
        self.ema: float | None = None
        self.recoveries = 0
        self.last_reliable = self.last_kept = 0
        self.save_initial_state()

    @property
    def e_margin(self) -> float | None:
        if self.given_e_margin is not None:
            return self.given_e_margin
        return None if self.num_classes is None else 0.4 * math.log(self.num_classes)

    def _resolve_lr(self, batch_size: int) -> float:
        if self.lr is None:
            if self.given_lr is not None:
                self.lr = self.given_lr
            elif self.family == "imagenet":
                self.lr, self.lr_rule = imagenet_lr(batch_size, self.layer_kinds)
            else:
                self.lr, self.lr_rule = CIFAR_LR, "0.001 (CIFAR-scale)"
        return self.lr

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():  # also under a caller's no_grad, as forward_and_adapt_sar
            return self._step(x)

    def _step(self, x: Tensor) -> Tensor:
        outputs = self.model(x)
        self.resolve_classes(outputs.shape[1])
        setting = OptimizerSetting("SGD", lr=self._resolve_lr(x.shape[0]), momentum=0.9)
        optimizer = self.optimizer_for(setting, self.adapted_params)
        optimizer.zero_grad()
        margin = self.e_margin
        assert margin is not None
        entropy = softmax_entropy(outputs)
        reliable = torch.where(entropy < margin)
        entropy[reliable].mean(0).backward()
        saved = self._ascend()
        optimizer.zero_grad()
        second = softmax_entropy(self.model(x))[reliable]
        kept = torch.where(second < margin)
        loss = second[kept].mean(0)
        value = loss.item()
        if not math.isnan(value):
            self.ema = value if self.ema is None else EMA_KEEP * self.ema + (1 - EMA_KEEP) * value
        loss.backward()
        self._descend(saved)
        optimizer.step()
        optimizer.zero_grad()
        self.last_reliable, self.last_kept = len(reliable[0]), len(kept[0])
        self.count_step()
        if self.ema is not None and self.ema < self.reset_constant:
            self.recover()
        return outputs.detach()

    @torch.no_grad()
    def _ascend(self) -> dict[nn.Parameter, Tensor]:
        """SAM's first step: w <- w + rho g / (||g|| + 1e-12); returns the weights before."""
        with_grad = [p for p in self.adapted_params if p.grad is not None]
        norm = torch.norm(torch.stack([p.grad.norm(p=2) for p in with_grad if p.grad is not None]),
                          p=2)
        scale = self.rho / (norm + 1e-12)
        saved = {}
        for param in with_grad:
            assert param.grad is not None
            saved[param] = param.detach().clone()
            param.add_(param.grad * scale.to(param))
        return saved

    @torch.no_grad()
    def _descend(self, saved: dict[nn.Parameter, Tensor]) -> None:
        """SAM's second step, before the base step: the weights back to before the ascent."""
        for param in self.adapted_params:
            if param.grad is not None:
                param.copy_(saved[param])

    def recover(self) -> None:
        """The authors' model recovery (see the module docstring for what it keeps)."""
        self.restore_initial_state()
        if self.recovery_momentum == "cleared":
            self.optimizer = None
        if self.recovery_ema == "cleared":
            self.ema = None
        self.recoveries += 1

    def forget(self) -> None:
        self.ema = None

    def params(self) -> dict[str, Any]:
        return {**self.family_record(), "optimizer": "SAM over SGD", "lr": self.lr or
                self.given_lr, "lr_rule": self.lr_rule, "momentum": 0.9, "rho": self.rho,
                "e_margin": self.e_margin, "e_margin_rule": "given" if self.given_e_margin
                else "0.4*ln(num_classes)", "reset_constant": self.reset_constant,
                "recovery_ema": self.recovery_ema, "recovery_momentum": self.recovery_momentum,
                "adapted_tensors": len(self.adapted_params),
                "adapted_tensors_by_kind": dict(Counter(self.layer_kinds)),
                "hyperparameters_from": self.per_family(
                    "mr-eggplant/SAR main.py",
                    "mariodoebler/test-time-adaptation cfgs/cifar10_c/sar.yaml")}

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "recoveries": self.recoveries, "ema": self.ema,
                "last_reliable": self.last_reliable, "last_kept": self.last_kept}
