"""Cost of a full Weighted Flips estimate against the adapter's own steps, and probe memory.

Two ratios, each measured in one run (interleaved repeats, median):

1. overhead = time(full enigma trajectory (order alternated between repeats): probe gathering, the step-0 and step-990 snapshots
   in chunks of 100, the adapter's 990 steps, online accuracy, NaN checks, WF) /
   time(the adapter's 990 steps alone on the same stream). Target <= 1.05. It also checks that
   no step beyond the last checkpoint is computed (the adapter's step counter).
2. probe memory = bytes of the probe as the runner stores it (uint8, as the dataset gives it)
   / bytes of the reference's float32 copy (1,000 x 3 x 224 x 224 x 4 = 602 MB). Target <= 0.25.
   Measured on a fabricated 1,000-image 224-px uint8 dataset through the runner's own path.

    python benchmarks/bench_enigma_overhead.py [--suite mnist-c --model mnist-cnn --split fog-3]

Writes benchmarks/results/enigma_overhead.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ttabench import registry
from ttabench.api import to_unit_float
from ttabench.paths import cache_dir
from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.execute import (
    CellInputs,
    Trajectory,
    _trajectory,
    probe_setup,
    seed_everything,
)
from ttabench.runner.stream import first_epoch, stream_indices
from ttabench.runner.streams import cell_stream

RESULTS = Path(__file__).parent / "results"


def adapter_only(loaded, adapter_cls, params, images, n, seed, steps, device) -> tuple[float, int]:
    """The adapter's own steps on the seeded stream, nothing else."""
    import copy

    adapter = adapter_cls(copy.deepcopy(loaded.module).to(device), **params)
    start = time.perf_counter()
    for idx in stream_indices(n, seed, 64, steps):
        adapter(to_unit_float(images[idx]).to(device))
    return time.perf_counter() - start, adapter.counters().get("total_steps", steps)


def full_estimate(loaded, suite, split, adapter_cls, params, est, images, labels, n, seed, steps,
                  device) -> tuple[float, Trajectory]:
    """The runner's whole trajectory for the enigma estimator (what a cell spends on WF)."""
    inputs = CellInputs(suite=suite, split=split, model=loaded, adapter_cls=adapter_cls,
                        adapter_params=params, estimators={"enigma": est}, seed=seed,
                        batch_size=64, steps=0, device=device)
    with torch.no_grad():
        source_logits = torch.cat([loaded.module(to_unit_float(part).to(device)).cpu()
                                   for part in images.split(500)])
    start = time.perf_counter()
    cache = DecodedCache(n, images.numel() * images.element_size())
    cache.add(torch.arange(n), images, labels)
    reader = StreamReader(None, cache, LoaderOptions())
    stream = cell_stream(inputs.stream, suite, [split], seed, 64, steps)
    out = _trajectory(inputs, reader, stream, torch.arange(n), source_logits, {"enigma": est},
                      probe_setup({"enigma": est}), want_features=False)
    return time.perf_counter() - start, out


def probe_memory(probe_size: int = 1000, size: int = 224) -> dict:
    """Bytes of the probe the runner keeps vs the reference's float32 copy."""
    images = torch.randint(0, 256, (probe_size + 24, 3, size, size), dtype=torch.uint8)
    dataset = TensorDataset(images, torch.zeros(len(images), dtype=torch.long))
    reader = StreamReader(dataset, DecodedCache(len(images), 0), LoaderOptions())
    probe = reader.take(first_epoch(len(images), 0)[:probe_size])
    reference = probe_size * 3 * size * size * 4
    return {"probe_bytes": probe.numel() * probe.element_size(), "probe_dtype": str(probe.dtype),
            "reference_float32_bytes": reference,
            "ratio": probe.numel() * probe.element_size() / reference}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mnist-c")
    parser.add_argument("--model", default="mnist-cnn")
    parser.add_argument("--split", default="fog-3")
    parser.add_argument("--steps", type=int, default=990)
    parser.add_argument("--probe-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    suite = registry.make_suite(args.suite)
    split = next(s for s in suite.splits() if s.name == args.split)
    loaded = registry.load_model(args.model, cache_dir=cache_dir(), num_classes=suite.num_classes)
    loaded.module.to(device)
    data = suite.dataset(split)
    pairs = [data[i] for i in range(len(data))]
    images = torch.stack([torch.as_tensor(p[0]) for p in pairs])
    labels = torch.tensor([int(p[1]) for p in pairs])
    n = len(labels)
    adapter_cls = registry.get("adapters", "rdumb")
    estimator_cls = registry.get("estimators", "enigma")
    params: dict = {}
    plain, full, steps_seen = [], [], []
    for repeat in range(args.repeats):
        order = ("plain", "full") if repeat % 2 == 0 else ("full", "plain")  # alternate
        for which in order:
            seed_everything(repeat)
            if which == "plain":
                plain.append(adapter_only(loaded, adapter_cls, params, images, n, 0,
                                          args.steps, device)[0])
                continue
            est = estimator_cls(probe_size=args.probe_size, checkpoints=(0, args.steps))
            t, out = full_estimate(loaded, suite, split, adapter_cls, params, est, images,
                                   labels, n, 0, args.steps, device)
            full.append(t)
            steps_seen.append(out.adaptation["adapter_counters"].get("total_steps"))
        print(f"repeat {repeat}: adapter {plain[-1]:.2f}s, full enigma {full[-1]:.2f}s", flush=True)
    ratio = statistics.median(f / p for f, p in zip(full, plain))
    memory = probe_memory(args.probe_size)
    result = {
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {device}",
        "torch": torch.__version__,
        "suite": args.suite, "model": args.model, "split": args.split, "images": n,
        "steps": args.steps, "probe_size": args.probe_size,
        "adapter_seconds": plain, "full_estimate_seconds": full,
        "overhead_ratio_median": ratio, "overhead_target": 1.05,
        "adapter_steps_counted": steps_seen,
        "wf": out.results["enigma"].value,
        "probe_memory": memory, "probe_memory_target": 0.25,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "enigma_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "enigma_overhead.md").write_text(
        "# Weighted Flips overhead and probe memory\n\n"
        f"`{result['command']}` on {result['date']} ({result['machine']}, torch {result['torch']})\n\n"
        f"| measure | value | target |\n|---|---|---|\n"
        f"| full enigma estimate / adapter's own {args.steps} steps (median of {args.repeats}) "
        f"| {ratio:.3f} | <= 1.05 |\n"
        f"| adapter steps computed | {steps_seen} | exactly {args.steps} |\n"
        f"| probe bytes / reference float32 bytes | {memory['ratio']:.3f} "
        f"({memory['probe_bytes'] / 1e6:.1f} MB vs {memory['reference_float32_bytes'] / 1e6:.1f} MB) "
        f"| <= 0.25 |\n"
    )
    print(json.dumps({k: result[k] for k in ("overhead_ratio_median", "adapter_steps_counted",
                                             "probe_memory")}, indent=2))


if __name__ == "__main__":
    main()
