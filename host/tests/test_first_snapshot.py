"""The step-0 snapshot from the bn pass: equal to computing every chunk, fewer forward passes."""

from __future__ import annotations

import torch
from torch import nn

from ttabench.api import first_epoch
from ttabench.runner.first_snapshot import step0_snapshot
from ttabench.runner.passes import batch_statistics_copy
from ttabench.runner.stream import batches_of


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    net[1].running_mean.uniform_(-1, 1)  # running statistics unlike any batch's
    net[1].running_var.uniform_(0.5, 2)
    return net.eval()


def _setup(n: int = 300, batch: int = 32, probe: int = 150):
    images = torch.rand(n, 3, 8, 8)
    order = first_epoch(n, 3)
    model = _model()
    bn_model = batch_statistics_copy(model)
    with torch.no_grad():  # the bn pass as the runner makes it: epoch batches, dataset order
        bn = torch.empty(n, 5)
        for idx in batches_of(order, batch):
            bn[idx] = bn_model(images[idx])
    return images, order, order[:probe], model, bn_model, bn


def _counting(net: nn.Module, images: torch.Tensor, probe_index: torch.Tensor):
    calls = []

    @torch.no_grad()
    def predict(rows: slice) -> torch.Tensor:
        calls.append(rows)
        return net(images[probe_index[rows]])
    return predict, calls


def _direct(net: nn.Module, images: torch.Tensor, probe_index: torch.Tensor, chunk: int):
    with torch.no_grad():
        return torch.cat([net(images[idx]) for idx in torch.split(probe_index, chunk)])


def test_batch_statistics_predict_reuses_every_full_chunk() -> None:
    images, order, probe_index, _, bn_model, bn = _setup()
    predict, calls = _counting(bn_model, images, probe_index)
    logits, computed = step0_snapshot(predict, probe_index, 32, order, 32, bn[probe_index])
    assert torch.equal(logits, _direct(bn_model, images, probe_index, 32))
    # 150 = 4 x 32 + 22: chunk 0 (the check) and the short last chunk are computed
    assert computed == 2 == len(calls)
    assert calls == [slice(0, 32), slice(128, 150)]


def test_another_model_in_predict_computes_every_chunk() -> None:
    images, order, probe_index, model, _, bn = _setup()
    predict, calls = _counting(model, images, probe_index)  # frozen: running statistics
    logits, computed = step0_snapshot(predict, probe_index, 32, order, 32, bn[probe_index])
    assert torch.equal(logits, _direct(model, images, probe_index, 32))
    assert computed == 5 == len(calls)


def test_chunk_other_than_the_batch_or_no_bn_pass_computes_every_chunk() -> None:
    images, order, probe_index, _, bn_model, bn = _setup()
    for chunk, batch, bn_logits, expected in ((50, 32, bn, 3), (32, 32, None, 5)):
        predict, _ = _counting(bn_model, images, probe_index)
        logits, computed = step0_snapshot(predict, probe_index, chunk, order, batch,
                                          None if bn_logits is None else bn_logits[probe_index])
        assert torch.allclose(logits, _direct(bn_model, images, probe_index, chunk), atol=1e-6)
        assert computed == expected
