"""How a cell computes: the device its batches go to, the precision and the memory format.

Every forward pass of a cell (the source and bn passes, the trajectory, its snapshots) and of
the labelled reference its views compare against (``ttabench.runner.views.reference_passes``)
runs under the same three facts, recorded in the cell's protocol (``compute``):

- ``precision``: ``fp32``, or ``bf16`` autocast (``compute_context``, a CUDA option;
  ``ttabench.spec.PRECISIONS``);
- ``channels_last``: the model's weights and every input batch in channels_last format;
- the device, which every batch reaches by ``batch_to_device``: uint8 images travel as uint8
  (a quarter of the bytes of float32), without waiting when they come from pinned host memory
  (the loader's workers pin them on CUDA), and become floats in [0, 1] on the device.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from ttabench.api import to_unit_float

def compute_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to bfloat16 when ``precision == "bf16"`` (a CUDA option, see
    preflight), else nothing.

    Without its weight cache: autocast otherwise keeps the bf16 copy of every fp32 weight that
    requires grad until the region ends, and one region spans a whole trajectory, so the
    adapter's in-place weight updates would be invisible to every later forward pass (the
    model would not adapt). Each forward pass casts the weights it uses afresh instead.
    """
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def prepare_model(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """``module`` on ``device`` (in place), in channels_last format when asked."""
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if channels_last else module


def batch_to_device(images: torch.Tensor, device: torch.device,
                    channels_last: bool = False) -> torch.Tensor:
    """A batch of images as the model takes it: float32 in [0, 1] on ``device``.

    The batch is copied in its own dtype (uint8: a quarter of float32's bytes) with
    ``non_blocking`` (no wait when the host memory is pinned) and converted on the device
    (``to_unit_float``: the same numbers as converting first); a 4-d batch becomes
    channels_last when asked.
    """
    x = to_unit_float(images.to(device, non_blocking=True))
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class HostCopies:
    """Device tensors collected on the host without waiting for each one.

    On CUDA each tensor is copied into pinned host memory with ``non_blocking``: the copy is
    queued behind the work that computes it and the host goes on (a ``.cpu()`` per step would
    wait for the GPU at every step); ``gather`` waits once, for all of them. The pinned memory
    is taken in blocks of ``block_rows`` rows (one allocation per block, not per tensor).
    Elsewhere a tensor is kept as ``.cpu()`` gives it. Tensors are kept as float32, detached.
    """

    def __init__(self, block_rows: int = 8192) -> None:
        self.block_rows = block_rows
        self.parts: list[torch.Tensor] = []
        self._block: torch.Tensor | None = None
        self._used = 0

    def add(self, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().float()
        if not tensor.is_cuda:
            self.parts.append(tensor.cpu())
            return
        rows = len(tensor)
        block = self._block
        if block is None or self._used + rows > len(block) or block.shape[1:] != tensor.shape[1:]:
            self._close_block()
            block = self._block = torch.empty((max(self.block_rows, rows), *tensor.shape[1:]),
                                              dtype=tensor.dtype, pin_memory=True)
        block[self._used:self._used + rows].copy_(tensor, non_blocking=True)
        self._used += rows

    def _close_block(self) -> None:
        if self._block is not None:
            self.parts.append(self._block[: self._used])
            self._block, self._used = None, 0

    def gather(self) -> torch.Tensor | None:
        """Every tensor added, concatenated along the first dimension (None when none was)."""
        if self._block is not None:
            self._close_block()
            torch.cuda.synchronize()
        return torch.cat(self.parts) if self.parts else None


def first_non_finite_row(values: torch.Tensor) -> int | None:
    """The first row of ``values`` holding NaN or an infinity, or None."""
    bad = ~torch.isfinite(values).flatten(1).all(dim=1)
    return int(bad.nonzero()[0]) if bool(bad.any()) else None
