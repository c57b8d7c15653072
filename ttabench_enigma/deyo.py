"""``deyo``: destroy your object, entropy plus pseudo-label probability difference
(Lee et al., ICLR 2024).

Follows Jhyun17/DeYO ``methods/deyo.py`` (``forward_and_adapt_deyo``) with ``config.py``'s
defaults and ``main.py``'s set-up (``ttabench_enigma.sar_setup``: DeYO's ``configure_model``
and ``collect_params`` are SAR's). Per step on a batch x, E_i the softmax entropy, K classes:

1. samples with E_i < ``margin`` ln K (0.5 ln K) are kept (set R); none: no update;
2. x' = their images with the object's structure destroyed: ``patch`` (default) cuts each
   image into ``patch_len`` x ``patch_len`` (4 x 4) patches and shuffles them (an independent
   permutation per image, argsort of CPU uniforms; an image side not divisible by
   ``patch_len`` is resized to the next multiple down and back, bilinear without antialias as
   in their torchvision 0.11); ``pixel`` shuffles all pixel positions (one permutation);
   ``occ`` paints a ``occlusion_size`` square at (``row_start``, ``column_start``) with each
   image's channel means;
3. PLPD_i = p_i[c_i] - p'_i[c_i], c_i = argmax p_i, p' from a no-grad train-mode pass on x'
   (its own batch statistics); samples of R with PLPD_i > ``plpd_threshold`` (0.2) are kept;
   none: no update;
4. loss = mean over them of E_i * (1 / exp(E_i - E0) + 1 / exp(-PLPD_i)) (coefficients held
   constant; E0 = ``e_margin`` ln K, 0.4 ln K); ``reweight_ent`` / ``reweight_plpd`` False drop
   one term; one optimizer step.

Hyper-parameters per family: imagenet: SGD, momentum 0.9, lr by ``sar_setup.imagenet_lr``
(DeYO ``main.py``); cifar10/cifar100: Adam lr 0.001 (mariodoebler/test-time-adaptation
``cfgs/cifar10_c/deyo.yaml``). The logits returned are the first pass's.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ttabench.api import (
    CIFAR_ADAM,
    OptimizerSetting,
    ResettableAdapter,
    check_choice,
    check_fraction,
    check_positive,
    check_positive_int,
)
from ttabench_enigma.adapters import softmax_entropy
from ttabench_enigma.sar_setup import collect_like_sar, configure_like_sar, imagenet_lr

AUG_TYPES = ("patch", "pixel", "occ")


def _resize(x: Tensor, side: int) -> Tensor:
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def shuffle_patches(x: Tensor, patch_len: int, generator: torch.Generator) -> Tensor:
    """Each image's ``patch_len`` x ``patch_len`` grid of patches in a random order."""
    size = x.shape[-1]
    side = (size // patch_len) * patch_len
    grid = _resize(x, side)
    b, c, h = grid.shape[0], grid.shape[1], side // patch_len
    patches = grid.reshape(b, c, patch_len, h, patch_len, h).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(b, patch_len * patch_len, c, h, h)
    order = torch.argsort(torch.rand(b, patch_len * patch_len, generator=generator), dim=-1)
    patches = patches[torch.arange(b, device=x.device).unsqueeze(-1), order.to(x.device)]
    grid = patches.reshape(b, patch_len, patch_len, c, h, h).permute(0, 3, 1, 4, 2, 5)
    return _resize(grid.reshape(b, c, side, side), size)


def shuffle_pixels(x: Tensor, generator: torch.Generator) -> Tensor:
    """All images' pixel positions permuted by one random permutation."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    order = torch.randperm(flat.shape[-1], generator=generator).to(x.device)
    return flat[:, :, order].reshape(x.shape)


def occlude(x: Tensor, size: int, row: int, column: int) -> Tensor:
    """A ``size`` square at (row, column) painted with each image's channel means."""
    out = x.clone()
    means = x.reshape(x.shape[0], x.shape[1], -1).mean(dim=2)[:, :, None, None]
    window = out[:, :, row:row + size, column:column + size]
    window.copy_(means.expand_as(window))
    return out


class DeYO(ResettableAdapter):
    """DeYO: entropy and pseudo-label probability difference filters and weights.

    ``margin`` and ``e_margin`` are fractions of ln K, as DeYO's command line takes
    them; ``lr`` overrides the family's value."""

    name = "deyo"
    feature_call = 0  # the pass on the batch (the second runs on the destroyed images)
    source_val_reference = "bn"

    def __init__(self, model: nn.Module, *, family: str | None = None,
                 num_classes: int | None = None, lr: float | None = None, margin: float = 0.5,
                 e_margin: float = 0.4, plpd_threshold: float = 0.2, aug_type: str = "patch",
                 patch_len: int = 4, occlusion_size: int = 112, row_start: int = 56,
                 column_start: int = 56, reweight_ent: bool = True, reweight_plpd: bool = True,
                 seed: int | None = None) -> None:
        super().__init__(configure_like_sar(model), num_classes=num_classes, family=family,
                         seed=seed)
        self.adapted_params, self.param_names, self.layer_kinds = collect_like_sar(self.model)
        self.given_lr = None if lr is None else check_positive("lr", lr)
        self.setting: OptimizerSetting | None = None
        self.lr_rule: str | None = "given" if lr is not None else None
        self.margin = check_positive("margin", margin)
        self.e_margin = check_positive("e_margin", e_margin)
        self.plpd_threshold = check_fraction("plpd_threshold", plpd_threshold, low=-1.0)
        self.aug_type = check_choice("aug_type", aug_type, AUG_TYPES)
        self.patch_len = check_positive_int("patch_len", patch_len)
        self.occlusion = (check_positive_int("occlusion_size", occlusion_size),
                          int(row_start), int(column_start))
        self.reweight_ent = bool(reweight_ent)
        self.reweight_plpd = bool(reweight_plpd)
        self.updates = 0
        self.last_reliable = self.last_kept = 0
        self.total_reliable = self.total_kept = 0
        self.save_initial_state()

    def _setting(self, batch_size: int) -> OptimizerSetting:
        if self.setting is None:
            if self.family == "imagenet":
                lr, rule = imagenet_lr(batch_size, self.layer_kinds)
                self.setting = OptimizerSetting("SGD", lr=lr, momentum=0.9)
            else:
                self.setting, rule = CIFAR_ADAM, "0.001 (CIFAR-scale)"
            self.setting = self.setting.with_lr(self.given_lr)
            self.lr_rule = self.lr_rule or rule
        return self.setting

    def destroyed(self, x: Tensor) -> Tensor:
        if self.aug_type == "patch":
            return shuffle_patches(x, self.patch_len, self.generator)
        if self.aug_type == "pixel":
            return shuffle_pixels(x, self.generator)
        return occlude(x, *self.occlusion)

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():  # also under a caller's no_grad, as forward_and_adapt_deyo
            outputs = self._step(x)
        self.total_reliable += self.last_reliable
        self.total_kept += self.last_kept
        self.count_step()
        return outputs

    def _step(self, x: Tensor) -> Tensor:
        outputs = self.model(x)
        self.resolve_classes(outputs.shape[1])
        assert self.num_classes is not None
        optimizer = self.optimizer_for(self._setting(x.shape[0]), self.adapted_params)
        log_k = math.log(self.num_classes)
        entropy = softmax_entropy(outputs)
        reliable = torch.where(entropy < self.margin * log_k)
        entropy = entropy[reliable]
        self.last_reliable, self.last_kept = len(entropy), 0
        if len(entropy) == 0:
            return outputs.detach()
        with torch.no_grad():
            outputs_prime = self.model(self.destroyed(x[reliable].detach()))
        probs = outputs[reliable].softmax(1)
        top = probs.argmax(dim=1).reshape(-1, 1)
        plpd = (torch.gather(probs, 1, top) - torch.gather(outputs_prime.softmax(1), 1, top))
        plpd = plpd.reshape(-1)
        kept = torch.where(plpd > self.plpd_threshold)
        entropy = entropy[kept]
        self.last_kept = len(entropy)
        if len(entropy) == 0:
            return outputs.detach()
        plpd = plpd[kept]
        if self.reweight_ent or self.reweight_plpd:
            coeff = (float(self.reweight_ent)
                     * (1 / torch.exp(entropy.clone().detach() - self.e_margin * log_k))
                     + float(self.reweight_plpd) * (1 / torch.exp(-1.0 * plpd.clone().detach())))
            entropy = entropy.mul(coeff)
        entropy.mean(0).backward()
        optimizer.step()
        optimizer.zero_grad()
        self.updates += 1
        return outputs.detach()

    def params(self) -> dict[str, Any]:
        log_k = None if self.num_classes is None else math.log(self.num_classes)
        return {**self.family_record(),
                "optimizer": None if self.setting is None else self.setting.record(),
                "lr_rule": self.lr_rule, "margin": self.margin, "e_margin": self.e_margin,
                "entropy_threshold": None if log_k is None else self.margin * log_k,
                "weighting_e0": None if log_k is None else self.e_margin * log_k,
                "plpd_threshold": self.plpd_threshold, "aug_type": self.aug_type,
                "patch_len": self.patch_len, "occlusion": list(self.occlusion),
                "reweight_ent": self.reweight_ent, "reweight_plpd": self.reweight_plpd,
                "adapted_tensors": len(self.adapted_params),
                "adapted_tensors_by_kind": dict(Counter(self.layer_kinds)), "seed": self.seed,
                "hyperparameters_from": self.per_family(
                    "Jhyun17/DeYO main.py, config.py",
                    "mariodoebler/test-time-adaptation cfgs/cifar10_c/deyo.yaml")}

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "updates": self.updates,
                "last_reliable": self.last_reliable, "last_kept": self.last_kept,
                "total_reliable": self.total_reliable, "total_kept": self.total_kept}
