"""Every stream kind against an independent computation, batch statistics at batch size 1, and
per-window scoring by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import ttabench_test_plugins as plugins
from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.cells import cell_key, protocol_key
from ttabench.runner.passes import accuracy, batch_statistics_copy
from ttabench.runner.stream import stream_indices
from ttabench.runner.streams import SPLIT_SEED_STRIDE, cell_stream, correlated_order
from ttabench.scoring import build_leaderboard
from ttabench.spec import RunSpec, ScoringSpec, StreamSpec
from ttabench.suites.tiny import TinySuite

TINY = dict(suite="tiny", model="tiny-cnn", device="cpu", threads=1, batch_size=16,
            suite_options={"n_examples": 128})


@pytest.fixture(autouse=True)
def _plugins():
    for name in ("ConstantAdapter", "BatchStatsAdapter", "ScriptedWindows"):
        registry.add_plugin(None, f"ttabench_test_plugins:{name}")
    for log in (plugins.ConstantAdapter.LOG, plugins.BatchStatsAdapter.LOG):
        for values in log.values():
            values.clear()
    plugins.ScriptedWindows.CALLS.update(before_step=0, on_step=0)


def _direct_dirichlet(labels: np.ndarray, delta: float, seed: int, floor: int = 10) -> list[int]:
    """NOTE's Dirichlet order written out plainly (the same draws, in the same order, from a
    generator seeded ``seed``): the reference ``correlated_order`` must reproduce."""
    rng = np.random.default_rng(seed)
    n, classes = len(labels), int(labels.max()) + 1
    while True:
        chunks = [[[] for _ in range(classes)] for _ in range(classes)]
        held = [0] * classes
        for k in range(classes):
            members = [i for i in range(n) if labels[i] == k]
            members = np.array(members)
            rng.shuffle(members)
            p = rng.dirichlet([delta] * classes)
            p = [p[j] if held[j] < n / classes else 0.0 for j in range(classes)]
            total = sum(p)
            bounds, acc = [], 0.0
            for j in range(classes - 1):
                acc += p[j] / total
                bounds.append(int(acc * len(members)))
            edges = [0, *bounds, len(members)]
            for j in range(classes):
                chunks[j][k] = list(members[edges[j]:edges[j + 1]])
                held[j] += edges[j + 1] - edges[j]
        if min(held) >= floor:
            break
    order: list[int] = []
    for j in range(classes):
        for k in rng.permutation(classes):
            order += chunks[j][k]
    return order


def test_the_correlated_order_is_a_direct_dirichlet_draw_with_the_same_seed() -> None:
    labels = np.arange(400) % 5
    order = correlated_order(labels, 0.1, np.random.default_rng(7))
    assert order.tolist() == _direct_dirichlet(labels, 0.1, 7)
    assert sorted(order.tolist()) == list(range(400))
    switches = int((np.diff(labels[order]) != 0).sum())
    assert switches < 60  # runs of one class; a uniform shuffle switches ~320 times
    assert correlated_order(labels, 0.0, np.random.default_rng(0)).tolist() == \
        np.argsort(labels, kind="stable").tolist()


def test_a_correlated_reset_stream_reads_the_split_in_its_dirichlet_order() -> None:
    suite = TinySuite(n_examples=128)
    split = suite.splits()[3]
    labels = suite.dataset(split).tensors[1].numpy()
    spec = StreamSpec(correlated=True, delta=0.1)
    stream = cell_stream(spec, suite, [split], seed=3, batch_size=16, steps=16)
    rng = np.random.default_rng(3)
    first = correlated_order(labels, 0.1, rng).tolist()
    second = correlated_order(labels, 0.1, rng).tolist()  # the next epoch: the next draw
    assert stream.epoch.tolist() == first == _direct_dirichlet(labels, 0.1, 3)
    assert torch.cat(stream.steps).tolist() == first + second


def test_the_mixed_stream_draws_every_split_in_proportion() -> None:
    suite = TinySuite(n_examples=64)
    splits = [s for s in suite.splits() if s.role == "eval"]
    stream = cell_stream(StreamSpec(kind="mixed"), suite, splits, seed=4, batch_size=16)
    # one pass: 192 // 16 batches of randperm(192) seeded 4, the splits concatenated
    direct = torch.randperm(192, generator=torch.Generator().manual_seed(4))
    assert torch.cat(stream.steps).tolist() == direct.tolist()
    split_of = torch.cat(stream.steps) // 64
    assert torch.bincount(split_of, minlength=3).tolist() == [64, 64, 64]
    # batches mix the splits: over the first half each split's share is near 1/3 (binomial)
    share = torch.bincount(split_of[:96], minlength=3).float() / 96
    assert ((share - 1 / 3).abs() < 3 * (1 / 3 * 2 / 3 / 96) ** 0.5).all()
    assert len({int(s) for s in split_of[:16]}) > 1
    # an image of the stream is the concatenation's: split k's image i at 64 k + i
    for index in stream.steps[0][:4].tolist():
        image, label = stream.dataset[index]
        own = suite.dataset(splits[index // 64])[index % 64]
        assert torch.equal(image, own[0]) and int(label) == int(own[1])


def test_continual_follows_its_order_and_never_resets_the_adapter() -> None:
    spec = RunSpec(**TINY, adapters=["constant"], estimators=["scripted-windows"],
                   stream=StreamSpec(kind="continual", steps_per_split=4, window=2,
                                     order_seeds=(5,)))
    bench = Benchmark(spec)
    plans = bench.plan()
    assert [p.split.role for p in plans] == ["eval", "calibration"]
    pool = [s for s in bench.suite.splits() if s.role == "eval"]
    direct = [pool[i].name for i in torch.randperm(3, generator=torch.Generator().manual_seed(5))]
    assert [s.name for s in plans[0].order] == direct == plans[0].protocol["stream"]["order"]
    cell = bench.execute(plans[0])
    assert cell.windows.segment_per_step == [0] * 4 + [1] * 4 + [2] * 4
    assert plugins.ConstantAdapter.LOG["since_reset"] == list(range(1, 13))  # one adapter
    assert cell.windows.reset_steps == []
    # each step reads its split's own seeded stream (seed * stride + k), split k after k - 1
    stream = cell_stream(spec.stream, bench.suite, plans[0].order, seed=0, batch_size=16)
    for k in range(3):
        own = list(stream_indices(128, k, 16, 4))
        assert [b.tolist() for b in stream.steps[4 * k:4 * k + 4]] == \
            [(b + 128 * k).tolist() for b in own]
    # reset-each-split: a fresh adapter per cell
    plugins.ConstantAdapter.LOG["since_reset"].clear()
    resets = Benchmark(RunSpec(**TINY, adapters=["constant"], estimators=["scripted-windows"],
                               splits=["noise-1", "noise-2"]))
    for plan in resets.plan():
        resets.execute(plan)
    assert plugins.ConstantAdapter.LOG["since_reset"] == [*range(1, 9), *range(1, 9)]


def test_every_stream_calls_every_hook_of_a_trajectory_estimator() -> None:
    for kind in ("reset-each-split", "continual", "gradual", "mixed"):
        plugins.ScriptedWindows.CALLS.update(before_step=0, on_step=0)
        spec = RunSpec(**TINY, adapters=["batch-stats"], estimators=["scripted-windows", "aetta"],
                       splits=["noise-*"], stream=StreamSpec(kind=kind, window=2))
        bench = Benchmark(spec)
        cell = bench.execute(bench.plan()[0])
        steps = len(cell.windows.correct_per_step)
        assert plugins.ScriptedWindows.CALLS == {"before_step": steps, "on_step": steps}, kind
        windows = steps // 2
        assert len(cell.estimators["aetta"].windows) == windows == len(cell.windows.accuracy)
        assert all(w.failed is None for w in cell.estimators["aetta"].windows), kind


def test_every_stream_hands_the_static_views_to_trajectory_estimators() -> None:
    """``TrajectoryContext.views``: the very outputs the static estimators read, on every image
    of the cell's stream (AC on them is the host's AC of that view)."""
    for kind in ("reset-each-split", "continual", "gradual", "mixed"):
        plugins.ScriptedWindows.VIEWS.clear()
        spec = RunSpec(**TINY, adapters=["batch-stats"], estimators=["scripted-windows", "ac"],
                       splits=["noise-*"], stream=StreamSpec(kind=kind, window=2))
        bench = Benchmark(spec)
        cell = bench.execute(bench.plan()[0])
        assert set(plugins.ScriptedWindows.VIEWS) == {"source", "bn"}, kind
        for view, (rows, confidence) in plugins.ScriptedWindows.VIEWS.items():
            assert rows == cell.n_examples, (kind, view)
            assert confidence == pytest.approx(cell.estimators["ac"].views[view].value), kind


def test_per_window_accuracy_and_scores_by_hand() -> None:
    spec = RunSpec(**TINY, adapters=["constant"], estimators=["scripted-windows", "ac"],
                   stream=StreamSpec(kind="continual", steps_per_split=4, window=3))
    bench = Benchmark(spec)
    cells = [bench.execute(plan) for plan in bench.plan()]
    cell = cells[0]
    # class 0 is predicted for every image: a step's correct count is its label-0 images
    for k, split in enumerate(bench.plan()[0].order):
        labels = bench.suite.dataset(split).tensors[1]
        for t, batch in enumerate(stream_indices(128, SPLIT_SEED_STRIDE * 0 + k, 16, 4)):
            assert cell.windows.correct_per_step[4 * k + t] == int((labels[batch] == 0).sum())
    hits, steps = cell.windows.correct_per_step, 12
    truth = [sum(hits[w * 3:w * 3 + 3]) / 48 for w in range(steps // 3)]
    assert cell.windows.accuracy == pytest.approx(truth)
    estimates = [(w % 4) / 4 for w in range(4)]
    assert [r.estimate for r in cell.estimators["scripted-windows"].windows] == estimates
    # ac on a window: the mean max-softmax of its online logits (one-hot 1 over 4 classes)
    confidence = float(torch.softmax(torch.tensor([1.0, 0, 0, 0]), 0).max())
    assert [r.estimate for r in cell.estimators["ac"].windows] == pytest.approx([confidence] * 4)
    board = build_leaderboard(cells, ScoringSpec(n_boot=20))
    rows = board.windows.set_index("entry")
    expected = 100 * np.mean(np.abs(np.array(estimates) - np.array(truth)))  # one dataset
    assert rows.loc["scripted-windows", "mae"] == pytest.approx(expected)
    assert rows.loc["ac", "mae"] == pytest.approx(100 * np.mean(np.abs(confidence - np.array(truth))))
    assert rows.loc["scripted-windows", "n_cells"] == 4 and board.window_steps == [3]


def test_batch_size_one_on_a_batch_norm_model_uses_a_sliding_window() -> None:
    base = {**TINY, "batch_size": 1, "splits": ["noise-1"], "adapters": ["batch-stats"],
            "estimators": ["scripted-windows"]}
    with pytest.raises(TTABenchError, match="--stats-window"):
        Benchmark(RunSpec(**base))
    spec = RunSpec(**base, steps=20, stream=StreamSpec(stats_window=8, window=4))
    bench = Benchmark(spec)
    plan = bench.plan()[0]
    assert "sliding window of the last 8 images" in plan.protocol["stream"]["batch_statistics"]
    cell = bench.execute(plan)
    log = plugins.BatchStatsAdapter.LOG
    # an update once 8 new images have arrived (on the 8 in the window), else a prediction
    # over the window so far: 1, 2, ..., 7 images, then 8 for every later step
    assert log["forward"] == [8, 8]
    assert log["predict"][:7] == [1, 2, 3, 4, 5, 6, 7] and set(log["predict"][7:18]) == {8}
    kinds = [kind for kind, _ in log["calls"]]
    assert [t + 1 for t, kind in enumerate(kinds) if kind == "forward"] == [8, 16]
    # the online prediction of step t: the batch-statistics model on the last min(t, 8)
    # images, the row of image t (computed here directly)
    dataset: TensorDataset = bench.suite.dataset(plan.split)
    model = batch_statistics_copy(bench.model.module)
    stream = cell_stream(spec.stream, bench.suite, [plan.split], 0, 1, steps=20)
    images = dataset.tensors[0][torch.cat(stream.steps)].float() / 255
    labels = dataset.tensors[1][torch.cat(stream.steps)]
    with torch.no_grad():
        right = [int(model(images[max(0, t - 7):t + 1])[-1].argmax() == labels[t])
                 for t in range(20)]
    assert cell.windows.correct_per_step == right
    # the bn target: the batch-statistics model on consecutive windows of 8 of the epoch
    epoch = stream.epoch
    chunks = [epoch[i:i + 8] for i in range(0, 128, 8)]
    with torch.no_grad():
        logits = torch.cat([model(dataset.tensors[0][c].float() / 255) for c in chunks])
    assert cell.targets["bn"] == pytest.approx(accuracy(logits, dataset.tensors[1][epoch]))


def test_the_default_stream_keeps_the_keys_and_another_stream_changes_them() -> None:
    bench = Benchmark(RunSpec(**TINY, adapters=["constant"], estimators=["ac"]))
    plan = bench.plan()[0]
    assert plan.protocol["stream"] == {"kind": "reset-each-split", "window": 20,
                                       "stats_window": 0}
    without = {k: v for k, v in plan.protocol.items() if k != "stream"}
    assert plan.key == protocol_key(without)  # the key of a run made before streams
    other = dict(plan.protocol, stream={**plan.protocol["stream"], "window": 10})
    assert cell_key(other) == protocol_key(other) != plan.key


def test_the_suite_split_order_is_one_cell_per_role_in_the_suites_order() -> None:
    spec = RunSpec(**TINY, adapters=["constant"], estimators=["ac"],
                   stream=StreamSpec(kind="continual", split_order="suite", order_seeds=(5, 6)))
    bench = Benchmark(spec)
    plans = bench.plan()
    assert [p.split.name for p in plans] == ["continual/eval/suite-order",
                                             "continual/calibration/suite-order"]
    pool = [s.name for s in bench.suite.splits() if s.role == "eval"]
    assert [s.name for s in plans[0].order] == pool == plans[0].protocol["stream"]["order"]
    record = plans[0].protocol["stream"]
    assert record["split_order"] == "suite" and "order_seed" not in record
    seeded = Benchmark(RunSpec(**TINY, adapters=["constant"], estimators=["ac"],
                               stream=StreamSpec(kind="continual", order_seeds=(5,)))).plan()[0]
    assert seeded.key != plans[0].key


def test_no_shuffle_reads_every_epoch_in_the_files_order() -> None:
    suite = TinySuite(n_examples=40)
    split = suite.splits()[0]
    stream = cell_stream(StreamSpec(shuffle=False), suite, [split], seed=7, batch_size=16,
                         steps=5)
    epoch = list(range(32))  # drop_last: 2 batches per epoch of 40, the same order each time
    assert [b.tolist() for b in stream.steps] == [epoch[:16], epoch[16:], epoch[:16],
                                                  epoch[16:], epoch[:16]]
    assert stream.epoch.tolist() == list(range(40))
    shuffled = cell_stream(StreamSpec(), suite, [split], seed=7, batch_size=16, steps=5)
    assert [b.tolist() for b in shuffled.steps] == [b.tolist() for b in
                                                    stream_indices(40, 7, 16, 5)]
    bench = Benchmark(RunSpec(**TINY, adapters=["constant"], estimators=["ac"],
                              stream=StreamSpec(shuffle=False)))
    plan = bench.plan()[0]
    assert plan.protocol["stream"]["shuffle"] is False
    default = Benchmark(RunSpec(**TINY, adapters=["constant"], estimators=["ac"])).plan()[0]
    assert "shuffle" not in default.protocol["stream"] and plan.key != default.key


@pytest.mark.parametrize("options, message", [
    ({"split_order": "suite"}, "split order 'suite' orders the splits of a continual or "
                               "gradual stream; this stream is reset-each-split"),
    ({"kind": "mixed", "split_order": "suite"}, "this stream is mixed"),
    ({"kind": "continual", "correlated": True, "shuffle": False},
     "a continual+correlated stream orders each split by class"),
    ({"split_order": "random"}, "split_order must be one of seeded, suite"),
])
def test_a_contradictory_stream_is_refused(options, message) -> None:
    with pytest.raises(TTABenchError, match=re.escape(message)):
        StreamSpec(**options)

def test_the_gradual_stream_slides_each_split_into_the_next() -> None:
    suite = TinySuite(n_examples=128)
    splits = [s for s in suite.splits() if s.role == "eval"]
    stream = cell_stream(StreamSpec(kind="gradual", steps_per_split=8), suite, splits, seed=2,
                         batch_size=16)
    # written out: split k's own stream (seed 2 * stride + k); at step t of segment k < 2 the
    # next batch of split k + 1's stream too, each image taken from it when a coin (torch.rand
    # from a generator seeded 2, 16 per step) falls below t / 8; the last segment is pure
    own = [stream_indices(128, 2 * SPLIT_SEED_STRIDE + k, 16, 24) for k in range(3)]
    coins = torch.Generator().manual_seed(2)
    expected, from_next = [], []
    for k in range(3):
        for t in range(8):
            batch = [int(i) + 128 * k for i in next(own[k])]
            taken = [False] * 16
            if k < 2:
                other = [int(i) + 128 * (k + 1) for i in next(own[k + 1])]
                u = torch.rand(16, generator=coins).tolist()
                taken = [u[j] < t / 8 for j in range(16)]
                batch = [other[j] if taken[j] else batch[j] for j in range(16)]
            expected.append(batch)
            from_next.append(sum(taken))
    assert [b.tolist() for b in stream.steps] == expected
    assert stream.segments == [0] * 8 + [1] * 8 + [2] * 8
    split_of = [[i // 128 for i in b.tolist()] for b in stream.steps]
    assert [sum(s == k + 1 for s in split_of[8 * k + t]) for k in range(3) for t in range(8)] \
        == from_next
    assert split_of[0] == [0] * 16 and split_of[8] == [1] * 16  # t = 0: the segment's own split
    assert all(s == 2 for b in split_of[16:] for s in b)
    # the share from the next split grows with t: 112 of 256 images expected (binomial sd ~6.5)
    assert abs(sum(from_next) - 112) < 26
    assert sum(from_next[4:8]) > sum(from_next[0:4]) and sum(from_next[12:16]) > sum(from_next[8:12])


def test_a_continual_correlated_stream_reads_each_split_in_its_own_dirichlet_order() -> None:
    suite = TinySuite(n_examples=128)
    splits = [s for s in suite.splits() if s.role == "eval"]
    spec = StreamSpec(kind="continual", correlated=True, delta=0.1, steps_per_split=8)
    stream = cell_stream(spec, suite, splits, seed=1, batch_size=16)
    for k, split in enumerate(splits):  # 8 steps of 16: one epoch, split k's first draw
        labels = suite.dataset(split).tensors[1].numpy()
        direct = _direct_dirichlet(labels, 0.1, 1 * SPLIT_SEED_STRIDE + k)
        assert torch.cat(stream.steps[8 * k:8 * k + 8]).tolist() == [i + 128 * k for i in direct]


def test_a_mixed_correlated_stream_is_one_dirichlet_order_over_every_split() -> None:
    suite = TinySuite(n_examples=128)
    splits = [s for s in suite.splits() if s.role == "eval"]
    spec = StreamSpec(kind="mixed", correlated=True, delta=0.1)
    stream = cell_stream(spec, suite, splits, seed=6, batch_size=16)
    labels = np.concatenate([suite.dataset(s).tensors[1].numpy() for s in splits])
    assert torch.cat(stream.steps).tolist() == _direct_dirichlet(labels, 0.1, 6)  # one pass
    assert stream.epoch.tolist() == _direct_dirichlet(labels, 0.1, 6)
