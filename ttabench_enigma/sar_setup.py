"""How SAR sets a model up, and DeYO with it (DeYO's ``methods/deyo.py`` repeats SAR's
``configure_model`` and ``collect_params``; its ``main.py`` SAR's learning-rate rule).

Follows mr-eggplant/SAR ``sar.py`` (``configure_model``, ``collect_params``) and ``main.py``:

- train mode; BatchNorm2d layers normalize with batch statistics only (running statistics
  removed); BatchNorm2d, LayerNorm and GroupNorm layers get gradients;
- the adapted parameters are the weight and bias of those layers except in the top of the
  network, skipped by name: ``layer4`` (a ResNet's last stage), ``blocks.9``-``blocks.11`` (a
  ViT-Base's last three blocks), ``norm.`` and a final ``norm`` (names taken inside the
  network: ttabench's models wrap theirs in a module that normalizes the input, so a model
  with a single child is read from that child);
- ImageNet-scale learning rate for batch size B: 0.00025 if B >= 32, else 0.00025 * 2B / 64
  (ResNet-50 with BatchNorm or GroupNorm); 0.001 * B / 64 for a ViT (a model whose adapted
  layers are all LayerNorm); doubled at B = 1 (their ``bs1`` runs).
"""

from __future__ import annotations

from torch import nn

from ttabench.api import TTABenchError, use_batch_statistics

SKIPPED_NAMES = ("layer4", "blocks.9", "blocks.10", "blocks.11", "norm.")
ADAPTED_TYPES = (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def configure_like_sar(model: nn.Module) -> nn.Module:
    """Train mode, batch statistics, gradients for the normalization layers (in place)."""
    model.train()
    model.requires_grad_(False)
    for layer in model.modules():
        if isinstance(layer, nn.BatchNorm2d):
            use_batch_statistics(layer)
        if isinstance(layer, ADAPTED_TYPES):
            layer.requires_grad_(True)
    return model


def collect_like_sar(model: nn.Module) -> tuple[list[nn.Parameter], list[str], list[str]]:
    """The adapted parameters, their names, and the kinds of layer they sit in."""
    params: list[nn.Parameter] = []
    names: list[str] = []
    kinds: list[str] = []
    children = [name for name, _ in model.named_children()]
    wrapper = children[0] + "." if len(children) == 1 else ""
    for layer_name, layer in model.named_modules():
        inner = layer_name.removeprefix(wrapper)
        if any(part in inner for part in SKIPPED_NAMES) or inner == "norm":
            continue
        if isinstance(layer, ADAPTED_TYPES):
            for name, param in layer.named_parameters(recurse=False):
                if name in ("weight", "bias"):
                    params.append(param)
                    names.append(f"{layer_name}.{name}")
                    kinds.append(type(layer).__name__)
    if not params:
        raise TTABenchError("the model has no BatchNorm2d, LayerNorm or GroupNorm weight or bias "
                            "outside its top layers to adapt")
    return params, names, kinds


def imagenet_lr(batch_size: int, kinds: list[str]) -> tuple[float, str]:
    """The ImageNet-scale learning rate for ``batch_size`` and the rule applied."""
    if kinds and all(kind == "LayerNorm" for kind in kinds):
        lr, rule = 0.001 / 64 * batch_size, "ViT: 0.001 * B / 64"
    elif batch_size < 32:
        lr, rule = 0.00025 / 64 * batch_size * 2, "0.00025 * 2B / 64 (B < 32)"
    else:
        lr, rule = 0.00025, "0.00025 (B >= 32)"
    if batch_size == 1:
        lr, rule = 2 * lr, rule + ", doubled at B = 1"
    return lr, rule
