"""The tiny suite's frozen and batch-statistics logits computed directly, without the runner:
what the runner's ``source`` and ``bn`` views must equal."""

from __future__ import annotations

import torch

from ttabench.models.tiny import load_tiny_cnn
from ttabench.runner.passes import batch_statistics_copy
from ttabench.runner.stream import batches_of, first_epoch
from ttabench.suites.tiny import TinySuite


def direct_logits(split: str, n_examples: int, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``frozen`` (dataset order), ``bn`` (the first stream epoch of seed 0, in batches of
    ``batch_size``), their ``order``, and source val through each model (``val_frozen``,
    ``val_bn``: batches of ``batch_size`` cut from the reference shuffle, ``randperm`` seeded
    with 0, rows put back in dataset order) with ``val_labels``."""
    suite = TinySuite(n_examples=n_examples)
    images, _ = suite.dataset([s for s in suite.splits() if s.name == split][0]).tensors
    val_images, val_labels = suite.source_val().tensors
    model = load_tiny_cnn().module.eval()
    bn_model = batch_statistics_copy(model)
    order = first_epoch(len(images), 0)
    with torch.no_grad():
        frozen = model(images.float() / 255)
        bn = torch.cat([bn_model(images[idx].float() / 255) for idx in batches_of(order, batch_size)])
        val_frozen = model(val_images.float() / 255)
        shuffle = torch.randperm(len(val_labels), generator=torch.Generator().manual_seed(0))
        val_bn = torch.empty(len(val_labels), bn.shape[1])
        val_bn[shuffle] = torch.cat([bn_model(val_images[idx].float() / 255)
                                     for idx in batches_of(shuffle, batch_size)])
    return {"frozen": frozen, "bn": bn, "order": order, "val_frozen": val_frozen,
            "val_bn": val_bn, "val_labels": val_labels}
