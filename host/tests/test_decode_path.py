"""The data path of a cell: how often each image is decoded, and how a run shares the machine.

Decodes are counted by a dataset wrapper that counts ``__getitem__`` calls, never timed.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

import ttabench_test_plugins as plugins
from ttabench import registry
from ttabench.runner.benchmark import Benchmark, RunSpec
from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.resources import default_threads, default_workers, resolve_jobs
from ttabench.runner.stream import first_epoch, stream_indices
from ttabench.suites.tiny import TinySuite

N, BATCH, STEPS, PROBE = 192, 16, 15, 32  # 12 batches an epoch: 15 steps read 1.25 x N


class CountingDataset(Dataset):
    """A dataset that counts its reads (each one a decode on a folder suite)."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.reads = inner, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.inner[index]


class CountingTiny(TinySuite):
    """The tiny suite whose splits count their reads (``last`` is the latest split read)."""

    name = "counting-tiny"
    last: CountingDataset | None = None

    def dataset(self, split):
        CountingTiny.last = CountingDataset(super().dataset(split))
        return CountingTiny.last


@pytest.fixture(autouse=True)
def test_plugins():
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingStatic")
    registry.add_plugin("estimators", "ttabench_test_plugins:RecordingTrajectory")
    registry.add_plugin("adapters", "ttabench_test_plugins:NoisyAdapter")
    registry.add_plugin("suites", f"{__name__}:CountingTiny")
    for values in plugins.RECORD.values():
        values.clear()
    yield


def run_split(cache_mib: int, **kw) -> tuple[dict, int]:
    spec = RunSpec(suite="counting-tiny", model="tiny-cnn", adapters=["noisy"],
                   estimators=["recording-static", "recording-trajectory"],
                   estimator_params={"recording-trajectory": {"probe_size": PROBE}},
                   suite_options={"n_examples": N}, device="cpu", splits=["noise-2"],
                   batch_size=BATCH, steps=STEPS, cache_mib=cache_mib, threads=1, **kw)
    bench = Benchmark(spec)
    cell = bench.execute(bench.plan()[0])
    return cell, CountingTiny.last.reads


def test_decodes_per_image_without_and_with_the_cache():
    uncached, reads_off = run_split(cache_mib=0)
    cached, reads_on = run_split(cache_mib=1)
    # independent count: the combined pass reads every image once; the stream then reads each
    # index it visits except the probe (first PROBE images of the first epoch, always kept)
    probe = set(first_epoch(N, 0)[:PROBE].tolist())
    stream = [i for b in stream_indices(N, 0, BATCH, STEPS) for i in b.tolist()]
    assert reads_off == N + sum(i not in probe for i in stream)
    assert reads_off / N <= 2.27
    assert reads_on == N and reads_on / N <= 1.27  # the whole split fits in 1 MiB
    assert uncached.data["decodes"] == reads_off and cached.data["decodes"] == reads_on
    # the cache changes where images come from, never the numbers
    assert cached.targets == uncached.targets
    assert cached.estimators["recording-trajectory"].result == \
        uncached.estimators["recording-trajectory"].result
    assert cached.estimators["recording-static"].views == \
        uncached.estimators["recording-static"].views
    assert cached.protocol["data_path"] == {"cache_mib": 1}


def test_a_partial_budget_serves_the_images_it_holds():
    images = torch.arange(10 * 3 * 2 * 2, dtype=torch.uint8).reshape(10, 3, 2, 2)
    labels = torch.arange(10)
    data = CountingDataset(torch.utils.data.TensorDataset(images, labels))
    per_image = 3 * 2 * 2
    reader = StreamReader(data, DecodedCache(10, budget_bytes=4 * per_image, keep_first=2),
                          LoaderOptions())
    order = torch.tensor([9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    for got, want in zip(reader.fill(list(order.split(3))), order.split(3)):
        assert torch.equal(got[0], images[want])
    assert reader.cache.cached == 4 and set(torch.nonzero(reader.cache.slot >= 0).flatten().tolist()) == {9, 8, 7, 6}
    batch = torch.tensor([0, 9, 6, 1])
    got_images, got_labels = next(reader.batches([batch]))
    assert torch.equal(got_images, images[batch]) and torch.equal(got_labels, labels[batch])
    assert data.reads == 10 + 2 and reader.decodes == 12  # only 0 and 1 decoded again


def test_threads_and_workers_follow_cores_and_jobs():
    assert default_threads(cores=2, jobs=2) == 1
    assert default_threads(cores=16, jobs=3) == 5 and default_threads(cores=2, jobs=4) == 1
    assert default_workers(cores=16, jobs=1, streams_from_disk=True) == 4
    assert default_workers(cores=2, jobs=2, streams_from_disk=True) == 1
    assert default_workers(cores=16, jobs=1, streams_from_disk=False) == 0
    assert resolve_jobs(0, "cpu", cores=2) == 2 and resolve_jobs(0, "cuda", cores=2) == 1


def test_a_jobs_2_spec_without_threads_gets_one_thread_each_on_two_cores(monkeypatch):
    import ttabench.runner.benchmark as benchmark

    monkeypatch.setattr(benchmark, "cpu_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        bench = Benchmark(RunSpec(suite="tiny", model="tiny-cnn", adapters=["noisy"],
                                  estimators=["recording-static"], device="cpu", jobs=2,
                                  suite_options={"n_examples": 64}))
        assert bench.threads == 1 and bench.plan()[0].protocol["threads"] == 1
        assert bench.loader.workers == 0  # the tiny suite is in memory
    finally:
        torch.set_num_threads(before)
