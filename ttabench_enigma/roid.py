"""``roid``: weight ensembling, diversity weighting and prior correction (Marsden et al.,
WACV 2024, "Universal test-time adaptation").

Follows mariodoebler/test-time-adaptation ``methods/roid.py`` (``ROID.loss_calculation``,
``forward_and_adapt``, ``configure_model``, ``collect_params``, ``update_model_probs``) with
``utils/losses.py`` (``SoftLikelihoodRatio``, ``SymmetricCrossEntropy``), ``utils/misc.py``
(``ema_update_model``) and ``conf.py``'s ``ROID`` defaults. The model stays in eval mode with
BatchNorm2d on batch statistics (BatchNorm1d in train mode); the weight and bias of every
BatchNorm, LayerNorm and GroupNorm layer are adapted. Per step on a batch x of B images,
p = softmax(f(x)), m the running class-probability mean (uniform after a reset):

1. diversity weight d_i = 1 - cos(m, p_i), certainty c_i = -H(p_i), each min-max normalized
   over the batch; w_i = exp(d_i c_i / T) (T = 1/3), 0 for the samples with d_i below the
   batch mean of d (left out); then m <- 0.9 m + (1 - 0.9) mean_i p_i;
2. loss = sum over the kept samples of w_i SLR(p_i) / B, SLR(p) = -sum_k p'_k log(p'_k /
   (1 - p'_k) + 1e-5), p' = clamp(p, 0, 0.99); plus the consistency term sum over the kept of
   w_i SCE(f(aug(x_i)), f(x_i)) / B, SCE the symmetric cross-entropy 0.5/0.5 and aug the
   test-time augmentation without blur and noise, reflect padding
   (``augmentations/transforms_cotta.py`` with ``cotta_augs=False``), one draw per batch;
3. one optimizer step, then weight ensembling: theta <- 0.99 theta + 0.01 theta_source for
   the adapted parameters;
4. prior correction of the returned outputs: prior = mean_i p_i, s = max(1/B, 1/K) / max(prior),
   prior' = (prior + s) / (1 + s K); their code multiplies the *logits* by prior'
   (``prior_correction="logits"``, the default); ``"probabilities"`` applies it to the
   probabilities instead (the paper's description), returning log p + log prior'.

Hyper-parameters per family: cifar10/cifar100: Adam lr 0.001 (``cfgs/cifar10_c/roid.yaml``);
imagenet: SGD lr 0.00025, momentum 0.9, Nesterov (``cfgs/imagenet_c/roid.yaml``, ``conf.py``).
The loss is normalized by the step's batch size (their code: the configured batch size, the
same for full batches). ``predict`` applies the prior correction to the current model's logits
(eval mode, nothing updated).
"""

from __future__ import annotations

from collections import Counter
from copy import deepcopy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ttabench.api import (
    CIFAR_ADAM,
    OptimizerSetting,
    ResettableAdapter,
    TTABenchError,
    TTAugment,
    blend_parameters,
    check_choice,
    check_fraction,
    check_positive,
    use_batch_statistics,
)
from ttabench_enigma.adapters import softmax_entropy

ADAPTED_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)
IMAGENET_SGD = OptimizerSetting("SGD", lr=0.00025, momentum=0.9, nesterov=True)


def configure_like_roid(model: nn.Module) -> nn.Module:
    """Eval mode, BatchNorm2d on batch statistics, BatchNorm1d in train mode, gradients for
    the normalization layers (in place)."""
    model.eval()
    model.requires_grad_(False)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            use_batch_statistics(layer)
        elif isinstance(layer, nn.BatchNorm1d):
            layer.train()
        if isinstance(layer, ADAPTED_TYPES):
            layer.requires_grad_(True)
    return model


def soft_likelihood_ratio(logits: Tensor, clip: float = 0.99, eps: float = 1e-5) -> Tensor:
    """Per sample -sum_k p'_k log(p'_k / (1 - p'_k) + eps), p' = clamp(softmax, 0, clip)."""
    probs = torch.clamp(logits.softmax(1), min=0.0, max=clip)
    return -(probs * torch.log((probs / (torch.ones_like(probs) - probs)) + eps)).sum(1)


def symmetric_cross_entropy(x: Tensor, x_ema: Tensor, alpha: float = 0.5) -> Tensor:
    """Per sample -(1 - alpha) sum softmax(x_ema) log softmax(x) - alpha sum softmax(x) log
    softmax(x_ema)."""
    return (-(1 - alpha) * (x_ema.softmax(1) * x.log_softmax(1)).sum(1)
            - alpha * (x.softmax(1) * x_ema.log_softmax(1)).sum(1))


def min_max(values: Tensor) -> Tensor:
    return (values - values.min()) / (values.max() - values.min())


class ROID(ResettableAdapter):
    """ROID: weight ensembling, diversity weighting, prior correction.

    ``lr`` overrides the family's value; ``use_weighting``, ``use_consistency``,
    ``use_prior_correction``, ``momentum_src``, ``momentum_probs`` and ``temperature`` are
    conf.py's ``ROID`` options (without weighting every sample is kept with weight 1)."""

    name = "roid"
    feature_call = 0  # the pass on the batch (the augmented pass follows it)

    def __init__(self, model: nn.Module, *, family: str | None = None,
                 num_classes: int | None = None, lr: float | None = None,
                 use_weighting: bool = True, use_prior_correction: bool = True,
                 use_consistency: bool = True, momentum_src: float = 0.99,
                 momentum_probs: float = 0.9, temperature: float = 1 / 3,
                 prior_correction: str = "logits", seed: int | None = None) -> None:
        super().__init__(configure_like_roid(model), num_classes=num_classes, family=family,
                         seed=seed)
        self.source = deepcopy(self.model).requires_grad_(False)
        adapted = [(type(layer).__name__, p) for layer in self.model.modules()
                   if isinstance(layer, ADAPTED_TYPES)
                   for name, p in layer.named_parameters(recurse=False)
                   if name in ("weight", "bias") and p.requires_grad]
        self.adapted_params = [p for _, p in adapted]
        self.adapted_kinds = dict(Counter(kind for kind, _ in adapted))
        if not self.adapted_params:
            raise TTABenchError("roid: the model has no BatchNorm, LayerNorm or GroupNorm weight "
                                "or bias to adapt")
        self.given_lr = None if lr is None else check_positive("lr", lr)
        self.use_weighting = bool(use_weighting)
        self.use_prior_correction = bool(use_prior_correction)
        self.use_consistency = bool(use_consistency)
        self.momentum_src = check_fraction("momentum_src", momentum_src)
        self.momentum_probs = check_fraction("momentum_probs", momentum_probs)
        self.temperature = check_positive("temperature", temperature)
        self.prior_correction = check_choice("prior_correction", prior_correction,
                                             ("logits", "probabilities"))
        self.augment = TTAugment(padding_mode="reflect", blur_and_noise=False)
        self.class_probs: Tensor | None = None
        self.last_kept = 0
        self.save_initial_state()

    def setting(self) -> OptimizerSetting:
        return (IMAGENET_SGD if self.family == "imagenet" else CIFAR_ADAM).with_lr(self.given_lr)

    def forward(self, x: Tensor) -> Tensor:
        with torch.enable_grad():  # also under a caller's no_grad, as forward_and_adapt
            outputs = self._step(x)
        self.count_step()
        return outputs

    def _step(self, x: Tensor) -> Tensor:
        if x.shape[0] < 2:
            raise TTABenchError("roid needs at least 2 images per batch: its weights are "
                                "min-max normalized over the batch; use a larger --batch-size")
        outputs = self.model(x)
        self.resolve_classes(outputs.shape[1])
        assert self.num_classes is not None
        optimizer = self.optimizer_for(self.setting(), self.adapted_params)
        if self.class_probs is None:
            self.class_probs = torch.ones(self.num_classes, device=x.device) / self.num_classes
        batch = x.shape[0]
        kept = torch.ones(batch, dtype=torch.bool, device=x.device)
        weights = torch.ones(batch, device=x.device)
        if self.use_weighting:
            with torch.no_grad():
                probs = outputs.softmax(1)
                diversity = min_max(1 - F.cosine_similarity(self.class_probs.unsqueeze(0), probs,
                                                            dim=1))
                kept = ~(diversity < diversity.mean())
                certainty = min_max(-softmax_entropy(outputs))
                weights = torch.exp(diversity * certainty / self.temperature)
                weights[~kept] = 0.0
                self.class_probs = (self.momentum_probs * self.class_probs
                                    + (1 - self.momentum_probs) * probs.mean(0))
        loss = (soft_likelihood_ratio(outputs) * weights)[kept].sum() / batch
        if self.use_consistency:
            augmented = self.model(self.augment(x[kept], self.generator))
            loss = loss + (symmetric_cross_entropy(augmented, outputs[kept])
                           * weights[kept]).sum() / batch
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        blend_parameters(self.model, self.source, self.momentum_src, trainable_only=True)
        self.last_kept = int(kept.sum())
        return self.corrected(outputs.detach())

    def corrected(self, logits: Tensor) -> Tensor:
        """The prior correction of step 4 (or the logits as they are when it is off)."""
        if not self.use_prior_correction:
            return logits
        prior = logits.softmax(1).mean(0)
        smooth = max(1 / logits.shape[0], 1 / logits.shape[1]) / torch.max(prior)
        smoothed = (prior + smooth) / (1 + smooth * logits.shape[1])
        if self.prior_correction == "logits":
            return logits * smoothed
        return logits.log_softmax(1) + smoothed.log()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self.corrected(super().predict(x))

    def forget(self) -> None:
        self.class_probs = None

    def params(self) -> dict[str, Any]:
        return {**self.family_record(),
                "optimizer": None if self.family is None else self.setting().record(),
                "use_weighting": self.use_weighting, "use_consistency": self.use_consistency,
                "use_prior_correction": self.use_prior_correction,
                "prior_correction": self.prior_correction, "momentum_src": self.momentum_src,
                "momentum_probs": self.momentum_probs, "temperature": self.temperature,
                "augmentation": self.augment.record(), "loss_normalizer": "step batch size",
                "adapted_tensors": len(self.adapted_params),
                "adapted_tensors_by_kind": self.adapted_kinds, "seed": self.seed,
                "hyperparameters_from": self.per_family(
                    "mariodoebler/test-time-adaptation cfgs/imagenet_c/roid.yaml",
                    "mariodoebler/test-time-adaptation cfgs/cifar10_c/roid.yaml")}

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "last_kept": self.last_kept}
