"""Entropy-minimization adapters: ``Tent``, ``EATA``, ``ETA`` and ``RDumb``.

Calling an adapter on a batch of float images in [0, 1] performs one adaptation step of the
normalization affine parameters (see ``ttabench_enigma.norm``) and returns the logits of that
forward pass, computed before the update. ``reset()`` restores the pretrained parameters, the
optimizer state and the filter state. Move the model to its device before wrapping it.

Per step, with E_i the entropy of sample i's softmax p_i (``softmax_entropy``):

- Tent: loss = mean_i E_i over the whole batch (Wang et al., ICLR 2021).
- ETA: keep i if E_i < E0 (reliable) and |cos(m, p_i)| < d (not redundant), where m is an EMA
  of the mean probability of kept samples; loss = mean over kept i of E_i * exp(-(E_i - E0))
  (the coefficient is a constant); step only if a sample is kept (Niu et al., ICML 2022).
- EATA: ETA + fisher_alpha * sum_j F_j (theta_j - theta0_j)^2 with a Fisher estimate F from
  clean source images (``fisher_information``; the host hands EATA 2000 images of the suite's
  source-validation split, as EATA's authors use 2000 clean validation images).
- RDumb: ETA with a full reset (parameters, optimizer state, m) every ``reset_every`` steps,
  including step 0 (Press et al., NeurIPS 2023; the Entropy Enigma's adapter).

The optimizer of every one of them is ``optimizer="SGD"`` (lr, ``momentum``; the ImageNet
setting of tent, EATA and RDumb) or ``optimizer="Adam"`` (lr, betas ``(beta, 0.999)``, no
weight decay: tent's CIFAR-10-C setting, DequanWang/tent ``cfgs/tent.yaml`` built by
``cifar10c.py`` ``setup_optimizer``).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections import Counter
from collections.abc import Iterable
from copy import deepcopy
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ttabench.api import Adapter, OptimizerSetting, TTABenchError, to_unit_float
from ttabench_enigma.norm import (
    DEFAULT_NORMS,
    collect_params,
    configure_model,
    norm_kind,
    norm_layers,
    resolve_norms,
    restore_params,
    snapshot_params,
)

#: SGD settings of tent's, EATA's and RDumb's ImageNet runs (batch 64).
DEFAULT_LR = 2.5e-4
DEFAULT_MOMENTUM = 0.9
#: The optimizers an entropy-minimization adapter steps with (tent's ``OPTIM.METHOD`` choices).
OPTIMIZERS: tuple[str, ...] = ("SGD", "Adam")
#: Adam's first beta in tent's CIFAR-10-C config (the second is torch's 0.999, as tent's).
DEFAULT_BETA = 0.9
Optimizer = Literal["SGD", "Adam"]
#: EATA's redundancy margin at 1,000 classes and its EMA weight of the old mean.
REFERENCE_D_MARGIN = 0.05
REFERENCE_CLASSES = 1000
EMA_MOMENTUM = 0.9
E_MARGIN_RULE = "0.4*ln(num_classes)"
D_MARGIN_RULE = "min(1, 0.05*sqrt(1000/num_classes))"


# --------------------------------------------------------------------------- pure functions


def softmax_entropy(logits: Tensor) -> Tensor:
    """Per-sample entropy of the softmax: E_i = -sum_k p_ik log p_ik, shape (N,)."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


def default_e_margin(num_classes: int) -> float:
    """EATA's reliability threshold E0 = 0.4 * ln(K)."""
    return 0.4 * math.log(num_classes)


def scaled_d_margin(num_classes: int) -> float:
    """Class-count-aware redundancy margin d(K) = min(1, 0.05 * sqrt(1000 / K)).

    Geometry: for a confident (near one-hot) p and a near-uniform running mean m over K
    classes, cos(m, p) is about 1/sqrt(K). EATA's margin 0.05 at K = 1000 sits at
    0.05 * sqrt(1000) = 1.58 times that typical cosine, so it keeps confident samples whose
    class is not over-represented in m. Keeping that ratio gives d(K) = 1.58 / sqrt(K):
    0.05 at K = 1000 (the reference, exactly), 0.158 at 100, 0.5 at 10 (EATA's own CIFAR-10
    setting is 0.4), 0.79 at 4. With the fixed 0.05 at K = 10 the typical cosine 0.32 is far
    above the margin, no sample passes after the first step and the model never updates.
    """
    return min(1.0, REFERENCE_D_MARGIN * math.sqrt(REFERENCE_CLASSES / num_classes))


def eata_filter(
    entropy: Tensor,
    probs: Tensor,
    e_margin: float,
    d_margin: float,
    ema: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Boolean masks ``(reliable, kept)`` of EATA's two sample filters.

    reliable_i = E_i < E0; kept_i = reliable_i and |cos(m, p_i)| < d. With no running mean
    yet (``ema is None``, the first step after a reset) the redundancy filter is skipped.
    """
    reliable = entropy < e_margin
    if ema is None:
        return reliable, reliable
    cosine = F.cosine_similarity(ema.unsqueeze(0), probs, dim=1)
    return reliable, reliable & (cosine.abs() < d_margin)


def eata_loss(entropy: Tensor, kept: Tensor, e_margin: float, n_kept: int) -> Tensor:
    """Weighted entropy over kept samples: (1/n) sum_{i kept} E_i * exp(-(E_i - E0)).

    The weight exp(-(E_i - E0)) is treated as a constant (no gradient flows through it).
    """
    weight = torch.exp(e_margin - entropy.detach())
    return (entropy * weight * kept).sum() / n_kept


def update_ema(
    ema: Tensor | None, probs: Tensor, kept: Tensor, n_kept: int
) -> Tensor | None:
    """m <- mean_{i kept} p_i if m is None, else 0.9 m + 0.1 mean_{i kept} p_i.

    m is unchanged when no sample is kept.
    """
    if n_kept == 0:
        return ema
    mean = (probs * kept.unsqueeze(1)).sum(0) / n_kept
    return mean if ema is None else EMA_MOMENTUM * ema + (1 - EMA_MOMENTUM) * mean


def fisher_information(
    model: nn.Module, params: list[nn.Parameter], data: Iterable[Any]
) -> tuple[list[Tensor], int]:
    """EATA's diagonal Fisher: F_j = (1/B) sum_b (d CE(f(x_b), argmax f(x_b)) / d theta_j)^2.

    One squared gradient per batch b of ``data`` (image tensors, or tuples whose first item is
    the images; uint8 or float in [0, 1]), cross-entropy against the model's own predictions,
    averaged over the B batches. Gradients are cleared afterwards; parameters are unchanged.
    """
    device = params[0].device
    fisher = [torch.zeros_like(p) for p in params]
    batches = 0
    for item in data:
        images = item[0] if isinstance(item, (tuple, list)) else item
        with torch.enable_grad():  # also under a caller's torch.no_grad()
            logits = model(to_unit_float(images).to(device))
            loss = F.cross_entropy(logits, logits.argmax(1))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
        for total, grad in zip(fisher, grads, strict=True):
            if grad is not None:
                total.add_(grad.square())
        batches += 1
    if batches == 0:
        raise TTABenchError(
            "fisher_data yielded no batch; pass a non-empty DataLoader of source images"
        )
    return [total / batches for total in fisher], batches


# --------------------------------------------------------------------------- adapters


def _positive(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TTABenchError(f"{name} must be a number, got {value!r}") from None
    if not number > 0 or not math.isfinite(number):
        raise TTABenchError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _positive_int(name: str, value: Any) -> int:
    number = _positive(name, value)
    if number != int(number):
        raise TTABenchError(f"{name} must be a positive integer, got {value!r}")
    return int(number)


def optimizer_setting(optimizer: Any, lr: Any, momentum: Any, beta: Any) -> OptimizerSetting:
    """The optimizer an entropy-minimization adapter steps with, checked: SGD with ``lr`` and
    ``momentum`` (no dampening, no Nesterov, no weight decay), or Adam with ``lr`` and betas
    ``(beta, 0.999)`` (no weight decay)."""
    if optimizer not in OPTIMIZERS:
        raise TTABenchError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                            f"{optimizer!r}")
    rate = _positive("lr", lr)
    for name, value in (("momentum", momentum), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0.0 <= value < 1.0:
            raise TTABenchError(f"{name} must be in [0, 1), got {value!r}")
    if optimizer == "Adam":
        return OptimizerSetting("Adam", lr=rate, beta=float(beta))
    return OptimizerSetting("SGD", lr=rate, momentum=float(momentum))


class EntropyMinimization(Adapter):
    """Shared machinery: configured model, the optimizer (``optimizer_setting``) on the
    normalization affine parameters, reset snapshots, the non-finite check and the counters.

    Subclasses define ``select`` (which samples a step uses) and ``loss``. One step syncs the
    device once (finiteness and the kept counts).
    """

    feature_call = 0  # one forward pass per step (a wrapper's passes come after it)
    source_val_reference = "bn"  # batch statistics from the first step

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = DEFAULT_LR,
        momentum: float = DEFAULT_MOMENTUM,
        norms: str | Iterable[str] = DEFAULT_NORMS,
        optimizer: Optimizer = "SGD",
        beta: float = DEFAULT_BETA,
    ) -> None:
        self.setting = optimizer_setting(optimizer, lr, momentum, beta)
        self.norms = resolve_norms(norms)
        super().__init__(configure_model(model, self.norms))
        self.lr = self.setting.lr
        self.adapted_params, self.param_names = collect_params(self.model, self.norms)
        layers = norm_layers(self.model, self.norms)
        self.layer_kinds = dict(Counter(norm_kind(module) for _, module in layers))
        self.optimizer = self.setting.build(self.adapted_params)
        self._param_snapshot = snapshot_params(self.adapted_params)
        self._optimizer_snapshot = deepcopy(self.optimizer.state_dict())
        self.total_steps = 0
        self.steps_since_reset = 0
        self.resets = 0
        self.updates = 0
        self.last_reliable = 0
        self.last_kept = 0
        self.total_reliable = 0
        self.total_kept = 0

    # -- hooks for subclasses
    def select(self, logits: Tensor, entropy: Tensor) -> tuple[Tensor, Tensor]:
        """Masks ``(reliable, kept)`` of the samples the step uses (default: all of them)."""
        everything = torch.ones_like(entropy, dtype=torch.bool)
        return everything, everything

    @abstractmethod
    def loss(self, logits: Tensor, entropy: Tensor, kept: Tensor, n_kept: int) -> Tensor:
        """The loss minimized at this step (called only when ``n_kept > 0``)."""

    def after_step(self, logits: Tensor, kept: Tensor, n_kept: int) -> None:
        """Update filter state after the step (default: nothing)."""

    def before_step(self) -> None:
        """Called at the start of every step (RDumb resets here)."""

    # -- the step
    def forward(self, x: Tensor) -> Tensor:
        """One adaptation step; returns the logits computed before the update (detached).

        Gradients are enabled inside the step, so it also works when the caller evaluates
        under ``torch.no_grad()`` (as tent's, EATA's and RDumb's own steps do).
        """
        with torch.enable_grad():
            return self._step(x)

    def _step(self, x: Tensor) -> Tensor:
        self.before_step()
        logits = self.model(x)
        entropy = softmax_entropy(logits)
        reliable, kept = self.select(logits, entropy)
        finite, n_reliable, n_kept = torch.stack(
            (torch.isfinite(logits).all().long(), reliable.sum(), kept.sum())
        ).tolist()
        if not finite:
            raise TTABenchError(
                f"{self.name}: the model produced NaN or infinite logits at step "
                f"{self.total_steps}; "
                "adaptation stopped before the update (check the inputs, or lower lr)"
            )
        if n_kept > 0:
            self.loss(logits, entropy, kept, n_kept).backward()
            self.optimizer.step()
            self.updates += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.after_step(logits, kept, n_kept)
        self.last_reliable, self.last_kept = n_reliable, n_kept
        self.total_reliable += n_reliable
        self.total_kept += n_kept
        self.total_steps += 1
        self.steps_since_reset += 1
        return logits.detach()

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Logits of the current weights, eval mode (batch statistics still), no update."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(x)
        finally:
            self.model.train(was_training)

    def reset(self) -> None:
        """Restore the pretrained affine parameters, the optimizer state and the filter state."""
        restore_params(self.adapted_params, self._param_snapshot)
        self.optimizer.load_state_dict(deepcopy(self._optimizer_snapshot))
        self.optimizer.zero_grad(set_to_none=True)
        self.reset_filter_state()
        self.steps_since_reset = 0
        self.resets += 1

    def reset_filter_state(self) -> None:
        """Forget any running filter state (default: none)."""

    def optimizer_params(self) -> dict[str, Any]:
        """The optimizer as recorded: ``lr``, ``optimizer`` and ``momentum`` (SGD) or ``beta``
        (Adam; its second beta 0.999 and no weight decay are fixed)."""
        if self.setting.method == "Adam":
            return {"lr": self.lr, "optimizer": "Adam", "beta": self.setting.beta}
        return {"lr": self.lr, "momentum": self.setting.momentum, "optimizer": "SGD"}

    def params(self) -> dict[str, Any]:
        return {
            **self.optimizer_params(),
            "norms": list(self.norms),
            "adapted_layers": sum(self.layer_kinds.values()),
            "adapted_layer_kinds": dict(self.layer_kinds),
            "adapted_tensors": len(self.adapted_params),
        }

    def counters(self) -> dict[str, Any]:
        """Kept samples (reliability filter / both filters) at the last step and in total, steps
        since the last reset, total steps, optimizer updates and resets (every restore counts,
        RDumb's scheduled one at step 0 included)."""
        return {
            "last_reliable": self.last_reliable,
            "last_kept": self.last_kept,
            "total_reliable": self.total_reliable,
            "total_kept": self.total_kept,
            "steps_since_reset": self.steps_since_reset,
            "total_steps": self.total_steps,
            "updates": self.updates,
            "resets": self.resets,
        }


class Tent(EntropyMinimization):
    """Tent: minimize the mean softmax entropy of every sample of the batch.

    Defaults follow tent's ImageNet setting (SGD, lr 0.00025, momentum 0.9, batch 64);
    ``optimizer="Adam", lr=1e-3`` is its CIFAR-10-C setting (DequanWang/tent ``cfgs/tent.yaml``:
    Adam, betas (0.9, 0.999), weight decay 0, batch 200).
    """

    name = "tent"

    def loss(self, logits: Tensor, entropy: Tensor, kept: Tensor, n_kept: int) -> Tensor:
        """loss = (1/N) sum_i E_i."""
        return entropy.mean(0)


class EATA(EntropyMinimization):
    """EATA: reliable, non-redundant samples, entropy reweighting, optional Fisher regularizer.

    ``e_margin=None`` means E0 = 0.4 * ln(K), K the number of classes (``num_classes`` if
    given, otherwise the width of the first batch's logits); 0.4 * ln(1000) reproduces the
    reference. ``d_margin=None`` means ``scaled_d_margin(K)`` (equal to the reference 0.05 at
    K = 1000, and usable with few classes); ``d_margin="reference"`` is 0.05; a number is used
    as given. ``fisher_data`` (source images) enables the regularizer with weight
    ``fisher_alpha`` (EATA's 2000).
    """

    name = "eata"
    #: The host hands EATA its Fisher data: 2000 clean source-validation images (EATA's
    #: ``fisher_size``), in batches of the stream's batch size.
    source_data_param = "fisher_data"
    source_data_samples = 2000

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = DEFAULT_LR,
        momentum: float = DEFAULT_MOMENTUM,
        e_margin: float | None = None,
        d_margin: float | str | None = None,
        num_classes: int | None = None,
        fisher_data: Iterable[Any] | None = None,
        fisher_alpha: float = 2000.0,
        norms: str | Iterable[str] = DEFAULT_NORMS,
        optimizer: Optimizer = "SGD",
        beta: float = DEFAULT_BETA,
    ) -> None:
        super().__init__(model, lr=lr, momentum=momentum, norms=norms, optimizer=optimizer,
                         beta=beta)
        self._e_margin_given = None if e_margin is None else _positive("e_margin", e_margin)
        if d_margin is None:
            self.d_margin_rule, self._d_margin_given = D_MARGIN_RULE, None
        elif d_margin == "reference":
            self.d_margin_rule, self._d_margin_given = "reference", REFERENCE_D_MARGIN
        else:
            self.d_margin_rule, self._d_margin_given = "given", _positive("d_margin", d_margin)
        self.num_classes: int | None = None
        self.e_margin: float | None = None
        self.d_margin: float | None = None
        if num_classes is not None:
            self._resolve(_positive_int("num_classes", num_classes))
        self.ema: Tensor | None = None
        self.fisher_alpha = float(fisher_alpha)
        self.fisher: list[Tensor] | None = None
        self.fisher_batches = 0
        if fisher_data is not None:
            self.fisher, self.fisher_batches = fisher_information(
                self.model, self.adapted_params, fisher_data
            )

    def _resolve(self, num_classes: int) -> None:
        if num_classes < 2:
            raise TTABenchError(
                f"{self.name} needs at least 2 classes, the model outputs {num_classes}"
            )
        self.num_classes = num_classes
        self.e_margin = (
            default_e_margin(num_classes) if self._e_margin_given is None else self._e_margin_given
        )
        self.d_margin = (
            scaled_d_margin(num_classes) if self._d_margin_given is None else self._d_margin_given
        )

    def select(self, logits: Tensor, entropy: Tensor) -> tuple[Tensor, Tensor]:
        if self.num_classes is None:
            self._resolve(logits.shape[1])
        elif logits.shape[1] != self.num_classes:
            raise TTABenchError(
                f"{self.name}: the model outputs {logits.shape[1]} classes, "
                f"expected {self.num_classes}"
            )
        probs = logits.detach().softmax(1)
        return eata_filter(entropy, probs, self.e_margin, self.d_margin, self.ema)

    def loss(self, logits: Tensor, entropy: Tensor, kept: Tensor, n_kept: int) -> Tensor:
        """eata_loss, plus fisher_alpha * sum_j F_j (theta_j - theta0_j)^2 with Fisher data."""
        loss = eata_loss(entropy, kept, self.e_margin, n_kept)
        if self.fisher is not None:
            for fisher, param, anchor in zip(
                self.fisher, self.adapted_params, self._param_snapshot, strict=True
            ):
                loss = loss + self.fisher_alpha * (fisher * (param - anchor).square()).sum()
        return loss

    def after_step(self, logits: Tensor, kept: Tensor, n_kept: int) -> None:
        self.ema = update_ema(self.ema, logits.detach().softmax(1), kept, n_kept)

    def reset_filter_state(self) -> None:
        self.ema = None

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.update(
            num_classes=self.num_classes,
            e_margin=self.e_margin,
            e_margin_rule="given" if self._e_margin_given is not None else E_MARGIN_RULE,
            d_margin=self.d_margin,
            d_margin_rule=self.d_margin_rule,
            ema_momentum=EMA_MOMENTUM,
            fisher=self.fisher is not None,
        )
        if self.fisher is not None:
            out.update(fisher_alpha=self.fisher_alpha, fisher_batches=self.fisher_batches)
        return out


class ETA(EATA):
    """ETA: EATA's sample filtering and reweighting without the Fisher regularizer."""

    name = "eta"
    source_data_param = None
    source_data_samples = 0

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = DEFAULT_LR,
        momentum: float = DEFAULT_MOMENTUM,
        e_margin: float | None = None,
        d_margin: float | str | None = None,
        num_classes: int | None = None,
        norms: str | Iterable[str] = DEFAULT_NORMS,
        optimizer: Optimizer = "SGD",
        beta: float = DEFAULT_BETA,
    ) -> None:
        super().__init__(
            model,
            lr=lr,
            momentum=momentum,
            e_margin=e_margin,
            d_margin=d_margin,
            num_classes=num_classes,
            norms=norms,
            optimizer=optimizer,
            beta=beta,
        )


class RDumb(ETA):
    """RDumb: ETA with a full reset to the pretrained state every ``reset_every`` steps.

    The reset (affine parameters, optimizer state, running mean m) happens at the start of the
    step, at step 0 and whenever ``reset_every`` steps have run since the last reset.
    """

    name = "rdumb"

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float = DEFAULT_LR,
        momentum: float = DEFAULT_MOMENTUM,
        e_margin: float | None = None,
        d_margin: float | str | None = None,
        num_classes: int | None = None,
        reset_every: int = 1000,
        norms: str | Iterable[str] = DEFAULT_NORMS,
        optimizer: Optimizer = "SGD",
        beta: float = DEFAULT_BETA,
    ) -> None:
        super().__init__(
            model,
            lr=lr,
            momentum=momentum,
            e_margin=e_margin,
            d_margin=d_margin,
            num_classes=num_classes,
            norms=norms,
            optimizer=optimizer,
            beta=beta,
        )
        self.reset_every = _positive_int("reset_every", reset_every)

    def before_step(self) -> None:
        if self.total_steps == 0 or self.steps_since_reset >= self.reset_every:
            self.reset()

    def params(self) -> dict[str, Any]:
        return {**super().params(), "reset_every": self.reset_every}


__all__ = [
    "EATA",
    "ETA",
    "EntropyMinimization",
    "RDumb",
    "Tent",
    "default_e_margin",
    "eata_filter",
    "eata_loss",
    "fisher_information",
    "optimizer_setting",
    "scaled_d_margin",
    "softmax_entropy",
    "update_ema",
]
