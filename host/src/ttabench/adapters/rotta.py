"""``rotta``: robust test-time adaptation (Yuan et al., CVPR 2023).

Follows BIT-DA/RoTTA ``core/adapter/rotta.py`` (``RoTTA.forward_and_adapt``, ``update_model``,
``update_ema_variables``, ``configure_model``, ``timeliness_reweighting``), with
``core/utils/bn_layers.py`` (``ttabench.adapters.robust_bn``), ``core/utils/memory.py``
(``ttabench.adapters.rotta_memory``), ``core/utils/custom_transforms.py``
(``ttabench.adaptation.augment``) and ``configs/adapter/rotta.yaml``. Every BatchNorm layer of
the model becomes a robust one (alpha 0.05) whose affine weight and bias are the only trainable
parameters; the teacher (``self.model``, whose logits the adapter returns) is a copy. Per step
on a batch x:

- eval mode, no gradient: teacher logits t = teacher(x), pseudo-labels argmax t, uncertainty
  u_i = -sum_k p_ik log(p_ik + 1e-6) with p = softmax(t);
- each image in turn enters the memory bank (capacity 64), and after every
  ``update_frequency`` (64) images seen since the start or the last reset the model is updated:
  train mode; on the bank's images m with ages a (in units of the capacity), the loss
  mean_j w_j * (-sum_k softmax(teacher(m_j))_k log softmax(student(aug(m_j)))_k) with
  w_j = exp(-a_j) / (1 + exp(-a_j)), one Adam step (lr 1e-3), then teacher <- (1 - nu) teacher
  + nu student over every parameter (nu 0.001). The train-mode passes move each model's
  robust statistics.

The authors publish one setting (CIFAR-10-C and CIFAR-100-C, batch 64);
mariodoebler/test-time-adaptation ``cfgs/imagenet_c/rotta.yaml`` uses the same for ImageNet, so
the family is recorded but changes nothing. ``predict`` gives the teacher's eval-mode logits
(nothing enters the bank, no statistics move).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import torch
from torch import nn

from ttabench.adaptation.augment import TTAugment
from ttabench.adaptation.checks import check_fraction, check_positive, check_positive_int
from ttabench.adaptation.ema import blend_parameters
from ttabench.adaptation.optimizer import CIFAR_ADAM
from ttabench.api import ResettableAdapter
from ttabench.adapters.cotta import soft_cross_entropy
from ttabench.adapters.robust_bn import use_robust_bn
from ttabench.adapters.rotta_memory import BalancedMemory


def timeliness(ages: list[float], device: torch.device) -> torch.Tensor:
    """w = exp(-a) / (1 + exp(-a)) per memory item of age a (in units of the capacity)."""
    age = torch.tensor(ages).float().to(device)
    return torch.exp(-age) / (1 + torch.exp(-age))


class RoTTA(ResettableAdapter):
    """RoTTA: robust BatchNorm, category-balanced memory, timeliness weights, mean teacher.

    ``memory_size``, ``update_frequency``, ``nu``, ``alpha``, ``lambda_t``, ``lambda_u`` and
    ``lr`` default to ``configs/adapter/rotta.yaml``; ``seed`` seeds the augmentation."""

    name = "rotta"
    source_val_reference = "source"  # robust statistics start from the running ones
    feature_call = 0  # the teacher's eval pass on the batch (an update's passes follow it)

    def __init__(self, model: nn.Module, *, memory_size: int = 64, update_frequency: int = 64,
                 nu: float = 0.001, alpha: float = 0.05, lambda_t: float = 1.0,
                 lambda_u: float = 1.0, lr: float | None = None, family: str | None = None,
                 num_classes: int | None = None, seed: int | None = None) -> None:
        self.alpha = check_fraction("alpha", alpha)
        model.requires_grad_(False)
        self.adapted_layers = use_robust_bn(model, self.alpha)
        teacher = deepcopy(model).requires_grad_(False)
        super().__init__(teacher, num_classes=num_classes, family=family, seed=seed)
        self.student = model
        self.memory_size = check_positive_int("memory_size", memory_size)
        self.update_frequency = check_positive_int("update_frequency", update_frequency)
        self.nu = check_fraction("nu", nu)
        self.lambda_t = check_fraction("lambda_t", lambda_t, high=float("inf"))
        self.lambda_u = check_fraction("lambda_u", lambda_u, high=float("inf"))
        self.optimizer_setting = CIFAR_ADAM.with_lr(None if lr is None
                                                    else check_positive("lr", lr))
        self.augment = TTAugment(padding_mode="edge", blur_and_noise=True)
        self.trainable = [p for p in self.student.parameters() if p.requires_grad]
        self.memory: BalancedMemory | None = None
        self.seen = 0
        self.updates = 0
        self.save_initial_state()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self.student.eval()
            self.model.eval()
            teacher_logits: torch.Tensor = self.model(x)
            probs = teacher_logits.softmax(dim=1)
            labels = probs.argmax(dim=1).tolist()
            entropy = (-probs * torch.log(probs + 1e-6)).sum(dim=1).tolist()
        self.resolve_classes(teacher_logits.shape[1])
        assert self.num_classes is not None
        if self.memory is None:
            self.memory = BalancedMemory(self.memory_size, self.num_classes, self.lambda_t,
                                         self.lambda_u)
        for image, label, uncertainty in zip(x, labels, entropy, strict=True):
            self.memory.add(image.detach().clone(), label, uncertainty)
            self.seen += 1
            if self.seen % self.update_frequency == 0:
                with torch.enable_grad():
                    self.update()
        self.count_step()
        return teacher_logits

    def update(self) -> None:
        """One update on the memory bank, then the teacher's average."""
        assert self.memory is not None
        self.student.train()
        self.model.train()
        images, ages = self.memory.contents()
        if images:
            batch = torch.stack(images)
            strong = self.augment(batch, self.generator)
            teacher_logits = self.model(batch)
            student_logits = self.student(strong)
            weights = timeliness(ages, batch.device)
            loss = (soft_cross_entropy(student_logits, teacher_logits) * weights).mean()
            optimizer = self.optimizer_for(self.optimizer_setting, self.trainable)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self.updates += 1
        blend_parameters(self.model, self.student, 1 - self.nu)

    def forget(self) -> None:
        self.memory = None
        self.seen = 0

    def params(self) -> dict[str, Any]:
        return {**self.family_record(), "optimizer": self.optimizer_setting.record(),
                "memory_size": self.memory_size, "update_frequency": self.update_frequency,
                "nu": self.nu, "alpha": self.alpha, "lambda_t": self.lambda_t,
                "lambda_u": self.lambda_u, "augmentation": self.augment.record(),
                "adapted_layers": self.adapted_layers, "seed": self.seed,
                "hyperparameters_from": "BIT-DA/RoTTA configs/adapter/rotta.yaml (every family)"}

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "updates": self.updates, "images_seen": self.seen,
                "memory_items": 0 if self.memory is None else len(self.memory)}
