"""Parameter averaging: the mean teacher of CoTTA and RoTTA, ROID's weight ensembling."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def blend_parameters(target: nn.Module, other: nn.Module, keep: float, *,
                     trainable_only: bool = False) -> None:
    """theta_target <- keep * theta_target + (1 - keep) * theta_other, in place, for the
    parameters of the two modules paired in ``parameters()`` order (the modules have the same
    structure); with ``trainable_only`` only where the target's parameter requires grad.

    qinenergy/cotta ``update_ema_variables`` and BIT-DA/RoTTA ``RoTTA.update_ema_variables``
    average every parameter (keep = 1 - nu for RoTTA); mariodoebler/test-time-adaptation
    ``utils/misc.py`` ``ema_update_model`` (ROID) only the trainable ones.
    """
    for mine, theirs in zip(target.parameters(), other.parameters(), strict=True):
        if trainable_only and not mine.requires_grad:
            continue
        mine.copy_(keep * mine + (1.0 - keep) * theirs)
