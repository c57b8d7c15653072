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
    return {(name, view): cell["estimators"][name]["views"][view]["estimate"]
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
