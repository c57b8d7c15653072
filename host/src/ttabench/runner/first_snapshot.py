"""The step-0 probe snapshot, taken from the batch-statistics pass where it is the same.

The probe is the start of the stream's first epoch, and the cell's ``bn`` pass runs over that
epoch in ``batches_of(first_epoch, batch_size)``. Before its first update a norm-layer
adapter's ``predict`` is that batch-statistics model, so when the snapshot chunk equals the
batch size, probe chunk j holds exactly the images of bn batch j and its step-0 logits are bn
batch j's rows. One chunk is always computed; only when it equals its bn rows bit for bit are
the other chunks with the same images as a bn batch taken from the pass (an adapter whose
``predict`` is another model, e.g. the frozen source model, gets every chunk computed).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ttabench.runner.stream import batches_of


def step0_snapshot(
    predict: Callable[[slice], torch.Tensor],
    probe_index: torch.Tensor,
    chunk: int,
    epoch_order: torch.Tensor,
    batch_size: int,
    bn_logits: torch.Tensor | None,
) -> tuple[torch.Tensor, int]:
    """Step-0 logits of the probe (rows = ``probe_index``, float32 on the CPU) and the number
    of chunks computed with ``predict`` (``predict(rows)``: logits of the probe's ``rows``).

    ``bn_logits``: the bn pass's logits of the probe images, row ``r`` that of
    ``probe_index[r]`` (None: compute every chunk).
    """
    rows = [slice(start, min(start + chunk, len(probe_index)))
            for start in range(0, len(probe_index), chunk)]
    chunks = [probe_index[r] for r in rows]
    first = predict(rows[0]).float().cpu()
    parts, computed = [first], 1
    bn_batches = batches_of(epoch_order, batch_size)
    same = [j < len(bn_batches) and torch.equal(idx, bn_batches[j]) for j, idx in enumerate(chunks)]
    reuse = bn_logits is not None and same[0] and torch.equal(first, bn_logits[rows[0]])
    for j in range(1, len(rows)):
        if reuse and same[j]:
            parts.append(bn_logits[rows[j]])  # type: ignore[index]
        else:
            parts.append(predict(rows[j]).float().cpu())
            computed += 1
    return torch.cat(parts), computed


__all__ = ["step0_snapshot"]
