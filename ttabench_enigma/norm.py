"""Normalization-layer plumbing shared by the entropy-minimization adapters.

The library shape tent, EATA and SAR users know::

    model = configure_model(model)                 # train mode, batch statistics, affine grads
    params, names = collect_params(model)          # the normalization affine parameters
    optimizer = torch.optim.SGD(params, lr=2.5e-4, momentum=0.9)

``norms`` picks the layer kinds: ``"batch"`` (BatchNorm1d/2d/3d, the default), ``"layer"``
(LayerNorm) and ``"group"`` (GroupNorm), so ViT-style models can be adapted too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ttabench.api import TTABenchError, use_batch_statistics

NORM_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "batch": (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d),
    "layer": (nn.LayerNorm,),
    "group": (nn.GroupNorm,),
}
DEFAULT_NORMS: tuple[str, ...] = ("batch",)


def resolve_norms(norms: str | Iterable[str] = DEFAULT_NORMS) -> tuple[str, ...]:
    """Validate ``norms`` ("batch,layer" or a sequence of kinds) into a sorted tuple of kinds."""
    kinds = norms.split(",") if isinstance(norms, str) else list(norms)
    kinds = [kind.strip() for kind in kinds if kind.strip()]
    unknown = sorted(set(kinds) - set(NORM_KINDS))
    if unknown or not kinds:
        raise TTABenchError(
            f"unknown normalization kind(s) {unknown or kinds}; "
            f"use a subset of {sorted(NORM_KINDS)}"
        )
    return tuple(sorted(set(kinds)))


def norm_layers(
    model: nn.Module, norms: str | Iterable[str] = DEFAULT_NORMS
) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every normalization layer of the chosen kinds, in module order.

    Raises TTABenchError when there is none: entropy minimization of normalization layers
    has nothing to adapt.
    """
    kinds = resolve_norms(norms)
    types = tuple(t for kind in kinds for t in NORM_KINDS[kind])
    layers = [(name, module) for name, module in model.named_modules() if isinstance(module, types)]
    if not layers:
        present = sorted({kind for _, module in model.named_modules()
                          for kind, kind_types in NORM_KINDS.items()
                          if isinstance(module, kind_types)})
        if not present:
            raise TTABenchError(
                f"the model has no normalization layer (of kinds {', '.join(NORM_KINDS)}), so "
                "there is nothing to adapt; use an adapter that adapts no normalization layer "
                "(e.g. source) or a model with such layers"
            )
        raise TTABenchError(
            f"the model has no normalization layer of kind {', '.join(kinds)} to adapt; it has "
            f"{', '.join(present)}: pass norms={','.join(present)}"
        )
    return layers


def norm_kind(module: nn.Module) -> str:
    """The ``NORM_KINDS`` key of a normalization layer."""
    return next(kind for kind, types in NORM_KINDS.items() if isinstance(module, types))


def configure_model(model: nn.Module, norms: str | Iterable[str] = DEFAULT_NORMS) -> nn.Module:
    """Prepare ``model`` for entropy minimization, in place, and return it.

    Train mode; gradients only for the affine weight and bias of the chosen normalization
    layers; BatchNorm always normalizes with the current batch's statistics, also in eval mode
    (``track_running_stats=False`` and the running mean/var removed, so they are neither used
    nor updated nor snapshotted).
    """
    layers = norm_layers(model, norms)
    model.train()
    model.requires_grad_(False)
    for _, module in layers:
        for name in ("weight", "bias"):
            parameter = getattr(module, name, None)
            if isinstance(parameter, nn.Parameter):
                parameter.requires_grad_(True)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            use_batch_statistics(module)
    return model


def collect_params(
    model: nn.Module, norms: str | Iterable[str] = DEFAULT_NORMS
) -> tuple[list[nn.Parameter], list[str]]:
    """The affine weight and bias of the chosen normalization layers, and their names.

    Raises TTABenchError when the layers carry no affine parameter (e.g. ``affine=False``).
    """
    params: list[nn.Parameter] = []
    names: list[str] = []
    for layer_name, module in norm_layers(model, norms):
        for name in ("weight", "bias"):
            parameter = getattr(module, name, None)
            if isinstance(parameter, nn.Parameter):
                params.append(parameter)
                names.append(f"{layer_name}.{name}" if layer_name else name)
    if not params:
        raise TTABenchError(
            "the model's normalization layers have no affine weight or bias to adapt; "
            "use a model with affine normalization layers"
        )
    return params, names


def snapshot_params(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Detached copies of ``params`` (the only model state adaptation changes)."""
    return [p.detach().clone() for p in params]


@torch.no_grad()
def restore_params(params: Sequence[torch.Tensor], snapshot: Sequence[torch.Tensor]) -> None:
    """Copy ``snapshot`` back into ``params`` in place (the optimizer keeps its references)."""
    for parameter, saved in zip(params, snapshot, strict=True):
        parameter.copy_(saved)


__all__ = [
    "DEFAULT_NORMS",
    "NORM_KINDS",
    "collect_params",
    "configure_model",
    "norm_kind",
    "norm_layers",
    "resolve_norms",
    "restore_params",
    "snapshot_params",
]
