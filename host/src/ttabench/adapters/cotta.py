"""``cotta``: continual test-time adaptation with a mean teacher (Wang et al., CVPR 2022).

Follows qinenergy/cotta ``cifar/cotta.py`` (CIFAR-scale families) and ``imagenet/cotta.py``
(ImageNet-scale): ``configure_model``, ``collect_params``, ``CoTTA.forward_and_adapt``,
``update_ema_variables``, ``softmax_entropy``, with their configs. The model passed in becomes
the student: train mode, BatchNorm2d on batch statistics (running statistics removed), every
weight and bias of every layer trainable. The teacher (``self.model``, whose logits the adapter
returns) and the anchor are copies of it. Per step on a batch x:

- student logits s = f(x); anchor confidence c = mean_i max_k softmax(anchor(x))_ik;
- teacher logits t = teacher(x), or, when c < ap, t = the mean over ``n_augmentations`` (32)
  augmented copies aug(x) of teacher(aug(x)) (``ttabench.adaptation.augment``; the CIFAR code
  computes the 32 augmented passes at every step, used or not, the ImageNet code only when
  c < ap: the random draws follow that);
- loss: CIFAR mean_i -sum_k softmax(t)_ik log softmax(s)_ik; ImageNet the symmetric
  0.5 (that + the same with s and t swapped), t held constant; one optimizer step;
- teacher <- mt * teacher + (1 - mt) * student, every parameter;
- stochastic restore: every student weight and bias entry goes back to its source value with
  probability rst (a CPU uniform draw per entry, layer by layer in module order).

Hyper-parameters per family (``ttabench.adaptation.family``): cifar10: Adam lr 1e-3, mt 0.999,
rst 0.01, ap 0.92 (``cifar/cfgs/cifar10/cotta.yaml``); cifar100: the same with ap 0.72
(``cifar/cfgs/cifar100/cotta.yaml``); imagenet: SGD lr 0.01, momentum 0.9, Nesterov, mt
0.999, rst 0.001, ap 0.1 (``imagenet/cfgs/10orders/cotta/*.yaml``, ``imagenet/conf.py`` and
the constants of ``imagenet/cotta.py``). ``predict`` gives the teacher's logits on x (eval
mode, no augmentation, nothing updated).
"""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ttabench.adaptation.augment import TTAugment
from ttabench.adaptation.checks import check_fraction, check_positive, check_positive_int
from ttabench.adaptation.ema import blend_parameters
from ttabench.adaptation.modes import use_batch_statistics
from ttabench.adaptation.optimizer import CIFAR_ADAM, OptimizerSetting
from ttabench.api import ResettableAdapter


@dataclass(frozen=True)
class CoTTASetting:
    """One family's setting; ``symmetric_loss`` and ``augment_always`` tell the ImageNet code
    from the CIFAR code."""

    optimizer: OptimizerSetting
    mt: float
    rst: float
    ap: float
    symmetric_loss: bool
    augment_always: bool
    source: str


SETTINGS = {
    "cifar10": CoTTASetting(CIFAR_ADAM, mt=0.999, rst=0.01, ap=0.92, symmetric_loss=False,
                            augment_always=True,
                            source="qinenergy/cotta cifar/cotta.py, cifar/cfgs/cifar10/cotta.yaml"),
    "cifar100": CoTTASetting(CIFAR_ADAM, mt=0.999, rst=0.01, ap=0.72, symmetric_loss=False,
                             augment_always=True, source="qinenergy/cotta cifar/cotta.py, "
                             "cifar/cfgs/cifar100/cotta.yaml"),
    "imagenet": CoTTASetting(OptimizerSetting("SGD", lr=0.01, momentum=0.9, nesterov=True),
                             mt=0.999, rst=0.001, ap=0.1, symmetric_loss=True,
                             augment_always=False, source="qinenergy/cotta imagenet/cotta.py, "
                             "imagenet/cfgs/10orders/cotta/cotta0.yaml"),
}


def own_weights_and_biases(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(state-dict key, parameter) of each trainable ``weight`` and ``bias`` a layer holds
    itself, layers in module order (``collect_params`` and the restore loop of cotta.py)."""
    for layer_name, layer in model.named_modules():
        for name, param in layer.named_parameters(recurse=False):
            if name in ("weight", "bias") and param.requires_grad:
                yield (f"{layer_name}.{name}" if layer_name else name), param


def configure_student(model: nn.Module) -> nn.Module:
    """Train mode; BatchNorm2d on batch statistics only; every parameter trainable."""
    model.train()
    model.requires_grad_(True)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            use_batch_statistics(layer)
    return model


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per sample -sum_k softmax(teacher)_k log softmax(student)_k."""
    return -(teacher.softmax(1) * student.log_softmax(1)).sum(1)


class CoTTA(ResettableAdapter):
    """CoTTA: mean teacher, augmentation-averaged pseudo-labels, stochastic restore.

    ``lr``, ``mt``, ``rst``, ``ap`` override the family's values; ``seed`` (default: torch's
    initial seed) seeds the augmentation and restore draws."""

    name = "cotta"
    #: The teacher's pass on the batch itself (the augmented passes follow it); its features go
    #: with the step's logits also when these are the augmentation average.
    feature_call = 0
    source_val_reference = "bn"  # the teacher normalizes with batch statistics

    def __init__(self, model: nn.Module, *, family: str | None = None,
                 num_classes: int | None = None, lr: float | None = None,
                 mt: float | None = None, rst: float | None = None, ap: float | None = None,
                 n_augmentations: int = 32, seed: int | None = None) -> None:
        student = configure_student(model)
        teacher = deepcopy(student).requires_grad_(False)
        anchor = deepcopy(student).requires_grad_(False)
        super().__init__(teacher, num_classes=num_classes, family=family, seed=seed)
        self.student = student
        self.anchor = anchor
        self.overrides = {
            "lr": None if lr is None else check_positive("lr", lr),
            "mt": None if mt is None else check_fraction("mt", mt),
            "rst": None if rst is None else check_fraction("rst", rst),
            "ap": None if ap is None else check_fraction("ap", ap),
        }
        self.n_augmentations = check_positive_int("n_augmentations", n_augmentations)
        self.augment = TTAugment(padding_mode="edge", blur_and_noise=True)
        self.trainable = [param for _, param in own_weights_and_biases(self.student)]
        self.augmented_steps = 0
        self.last_anchor_confidence: float | None = None
        self.save_initial_state()

    def setting(self) -> CoTTASetting:
        assert self.family is not None
        return SETTINGS[self.family]

    def value(self, name: str) -> float:
        given = self.overrides[name]
        return float(getattr(self.setting(), name)) if given is None else given

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():  # also under a caller's no_grad, as forward_and_adapt
            return self._step(x)

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        student_logits = self.student(x)
        self.resolve_classes(student_logits.shape[1])
        setting = self.setting()
        optimizer = self.optimizer_for(setting.optimizer.with_lr(self.overrides["lr"]),
                                       self.trainable)
        with torch.no_grad():
            confidence = self.anchor(x).softmax(1).max(1).values.mean(0)
            standard = self.model(x)
            low = bool(confidence < self.value("ap"))
            augmented = [self.model(self.augment(x, self.generator))
                         for _ in range(self.n_augmentations)] \
                if low or setting.augment_always else []
        teacher_logits = torch.stack(augmented).mean(0) if low else standard
        loss = soft_cross_entropy(student_logits, teacher_logits)
        if setting.symmetric_loss:
            loss = 0.5 * loss + 0.5 * soft_cross_entropy(teacher_logits, student_logits)
        loss.mean(0).backward()
        optimizer.step()
        optimizer.zero_grad()
        blend_parameters(self.model, self.student, self.value("mt"))
        self.stochastic_restore(self.value("rst"))
        self.augmented_steps += int(low)
        self.last_anchor_confidence = float(confidence)
        self.count_step()
        return teacher_logits

    @torch.no_grad()
    def stochastic_restore(self, probability: float) -> None:
        """Each student weight/bias entry back to its source value with ``probability``."""
        source = self._initial["student"]
        for key, param in own_weights_and_biases(self.student):
            mask = (torch.rand(param.shape, generator=self.generator) < probability).float()
            mask = mask.to(param.device)
            param.copy_(source[key] * mask + param * (1.0 - mask))

    def forget(self) -> None:
        self.last_anchor_confidence = None

    def params(self) -> dict[str, Any]:
        out = self.family_record()
        if self.family is not None:
            setting = self.setting()
            out.update(optimizer=setting.optimizer.with_lr(self.overrides["lr"]).record(),
                       mt=self.value("mt"), rst=self.value("rst"), ap=self.value("ap"),
                       loss="symmetric cross-entropy" if setting.symmetric_loss
                       else "cross-entropy to the teacher",
                       augmented_passes="every step" if setting.augment_always
                       else "only when the anchor's confidence is below ap",
                       hyperparameters_from=setting.source)
        out.update(overrides={k: v for k, v in self.overrides.items() if v is not None},
                   n_augmentations=self.n_augmentations, augmentation=self.augment.record(),
                   trainable_tensors=len(self.trainable), seed=self.seed)
        return out

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "augmented_steps": self.augmented_steps,
                "last_anchor_confidence": self.last_anchor_confidence}
