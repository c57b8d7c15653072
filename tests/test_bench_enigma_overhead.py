"""benchmarks/bench_enigma_overhead.py: the runner's trajectory it times is the one a cell runs
(same adapter steps as the bare adapter loop, a finite WF estimate), on the tiny suite."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

from ttabench import registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_enigma_overhead as bench  # noqa: E402


def test_full_estimate_runs_the_adapters_own_steps_and_estimates(tmp_path):
    suite = registry.make_suite("tiny", n_examples=96)
    split = suite.splits()[0]
    loaded = registry.load_model("tiny-cnn", cache_dir=tmp_path, num_classes=suite.num_classes)
    data = suite.dataset(split)
    images = torch.stack([torch.as_tensor(data[i][0]) for i in range(len(data))])
    labels = torch.tensor([int(data[i][1]) for i in range(len(data))])
    adapter_cls = registry.get("adapters", "rdumb")
    steps = 6
    _, counted = bench.adapter_only(loaded, adapter_cls, {}, images, len(labels), 0, steps,
                                    torch.device("cpu"))
    est = registry.get("estimators", "enigma")(probe_size=32, checkpoints=(0, steps))
    _, out = bench.full_estimate(loaded, suite, split, adapter_cls, {}, est, images, labels,
                                 len(labels), 0, steps, torch.device("cpu"))
    assert counted == steps
    assert out.adaptation["adapter_counters"]["total_steps"] == steps
    assert math.isfinite(out.results["enigma"].value)
