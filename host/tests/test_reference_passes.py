"""The labelled source-val reference of the views: its batches, its precision, read once.

The bn and adapted views compare target outputs of the batch-statistics model with the same
model's outputs on labelled source val. Folder suites list that split class by class, so
batches cut in file order hold one or two classes each and their batch statistics are nothing
like a test batch's. The reference is therefore batched from a seeded shuffle (recorded in the
protocol); its estimates must not depend on the file order of the labelled images.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from ttabench import registry
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.suites.tiny import TinySuite, make_images

N_VAL = 1024


class OrderedTiny(TinySuite):
    """The tiny suite with a larger labelled source val written in a chosen file order:
    ``class`` (every image of class 0, then class 1, ... as a class-folder listing gives them)
    or ``shuffled``. The same images either way."""

    name = "ordered-tiny"

    def __init__(self, data_dir=None, n_examples: int = 256, order: str = "class") -> None:
        super().__init__(data_dir, n_examples=n_examples)
        self.order = order

    def source_val(self):
        images, labels = make_images(N_VAL, 7)
        if self.order == "class":
            order = torch.argsort(labels, stable=True)
        else:
            order = torch.randperm(N_VAL, generator=torch.Generator().manual_seed(3))
        return TensorDataset(images[order], labels[order])

    def record(self):
        return {**super().record(), "order": self.order}


@pytest.fixture(autouse=True)
def ordered_suite():
    registry.add_plugin("suites", f"{__name__}:OrderedTiny")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    yield


def estimates(order: str) -> dict[tuple[str, str], float]:
    """ATC-MC's and DoC's bn- and adapted-view estimates on one split."""
    spec = RunSpec(suite="ordered-tiny", model="tiny-cnn", adapters=["noisy"],
                   estimators=["atc-mc", "doc"], suite_options={"order": order},
                   device="cpu", splits=["noise-2"], batch_size=32, steps=6, threads=1)
    bench = Benchmark(spec)
    cell = bench.execute(bench.plan()[0])
    return {(name, view): cell.estimators[name].views[view].estimate
            for name in ("atc-mc", "doc") for view in ("bn", "adapted")}


def test_bn_and_adapted_estimates_do_not_depend_on_the_file_order_of_source_val():
    by_class, shuffled = estimates("class"), estimates("shuffled")
    for key, value in by_class.items():
        assert abs(value - shuffled[key]) <= 0.01, (key, value, shuffled[key])


def test_the_reference_shuffle_is_in_the_protocol_of_cells_that_use_source_val():
    def protocol(estimators: list[str]) -> dict:
        spec = RunSpec(suite="ordered-tiny", model="tiny-cnn", adapters=["source"],
                       estimators=estimators, device="cpu", splits=["noise-2"], threads=1)
        return Benchmark(spec).plan()[0].protocol

    assert protocol(["atc-mc"])["reference"] == {"source_val_order": "seeded shuffle", "seed": 0}
    assert "reference" not in protocol(["ac"])


def bf16_on_the_cpu(monkeypatch) -> None:
    """Let a Benchmark run bf16 (and channels_last) on the CPU: CPU autocast has the same
    semantics, and the CUDA-only preflight is not what is tested here."""
    import ttabench.runner.benchmark as benchmark

    monkeypatch.setattr(benchmark, "check_compute_options", lambda *args: None)


def test_the_reference_is_computed_under_the_runs_precision(monkeypatch):
    """Source val through the frozen and the batch-statistics model, each under bf16 autocast
    as the cells' target outputs are (computed here directly: the shuffled batches put back)."""
    from ttabench.runner.passes import batch_statistics_copy
    from ttabench.runner.stream import batches_of

    bf16_on_the_cpu(monkeypatch)
    spec = RunSpec(suite="ordered-tiny", model="tiny-cnn", adapters=["source"],
                   estimators=["doc"], device="cpu", splits=["noise-2"], batch_size=64,
                   threads=1, precision="bf16")
    bench = Benchmark(spec)
    frozen, bn = bench.source_val(), bench.source_val_bn()
    images, labels = OrderedTiny(order="class").source_val().tensors
    model = bench.model.module.eval()
    shuffle = torch.randperm(N_VAL, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False):
        want_frozen = model(images.float() / 255).float()
        bn_model = batch_statistics_copy(model)
        want_bn = torch.empty_like(want_frozen)
        want_bn[shuffle] = torch.cat([bn_model(images[idx].float() / 255).float()
                                      for idx in batches_of(shuffle, 64)])
    with torch.no_grad():
        fp32 = model(images.float() / 255)
    assert torch.equal(frozen.labels, labels) and torch.equal(bn.labels, labels)
    assert torch.allclose(frozen.logits, want_frozen, atol=1e-6)
    assert torch.allclose(bn.logits, want_bn, atol=1e-6)
    assert not torch.allclose(frozen.logits, fp32, atol=1e-3)  # bf16 is not fp32 here


def test_the_reference_is_computed_in_the_runs_memory_format(monkeypatch):
    bf16_on_the_cpu(monkeypatch)
    spec = RunSpec(suite="ordered-tiny", model="tiny-cnn", adapters=["source"],
                   estimators=["doc"], device="cpu", splits=["noise-2"], threads=1,
                   channels_last=True)
    bench = Benchmark(spec)
    first_conv = next(m for m in bench.model.module.modules() if isinstance(m, torch.nn.Conv2d))
    seen: list[bool] = []
    first_conv.register_forward_pre_hook(lambda module, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last)
        and module.weight.is_contiguous(memory_format=torch.channels_last)))
    bench.source_val()
    assert seen and all(seen)
