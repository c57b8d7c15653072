"""Build time of the offline model pool ``mnist-pool`` from an empty model cache, and its spread.

Loads every member of ``ttabench.models.pools.MNIST_POOL`` in order through the model sources
(``ttabench.registry.load_model``), so each one is trained on first use exactly as a run would
train it, into a fresh model cache (``--cache-dir``, default a new temporary folder; the mnist-c
data come from the usual data folder, built if missing and not timed). Torch uses ``--threads``
threads (default 1). Each member's wall time and CPU time (``time.process_time``) are recorded:
on a shared machine the wall time grows with the load, while the CPU time of a one-thread build
is about the wall time it takes on an idle core. Then each member's frozen (eval-mode) accuracy on mnist-c's
clean ``source_val`` split and on the 15 evaluation corruptions at ``--severities`` is
measured, to show that the pool spreads in accuracy.

    nice -n 10 .venv/bin/python benchmarks/bench_pool_build.py

Writes benchmarks/results/pool_build.md and pool_build.json.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ttabench.api import to_unit_float
from ttabench.models.pools import MNIST_POOL
from ttabench.paths import CACHE_ENV, data_dir
from ttabench.registry import load_model, make_suite
from ttabench.store import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@torch.no_grad()
def accuracy(module: torch.nn.Module, dataset: Dataset[Any] | None) -> float:
    """Eval-mode accuracy of ``module`` on a dataset of (uint8 image, label)."""
    if dataset is None:
        raise SystemExit("mnist-c has no source_val split")
    correct = total = 0
    for images, labels in DataLoader(dataset, batch_size=500):
        correct += int((module(to_unit_float(images)).argmax(1) == labels).sum())
        total += len(labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default=None, help="model cache (default: a new temp dir)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--severities", default="3,5")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = data_dir()  # the usual data folder, resolved before the cache moves
    severities = [int(s) for s in args.severities.split(",")]
    suite = make_suite("mnist-c", data, severities=severities, holdout=False)
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="pool-build-"))
    os.environ[CACHE_ENV] = str(cache)
    os.environ.setdefault("TTABENCH_DATA_DIR", str(data))
    rows = []
    total_start = time.perf_counter()
    for spec in MNIST_POOL:
        start, cpu_start = time.perf_counter(), time.process_time()
        loaded = load_model(spec, cache)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        module = loaded.module.eval()
        evals = [accuracy(module, suite.dataset(split)) for split in suite.splits()
                 if split.role == "eval"]
        rows.append({"spec": spec, "model_id": loaded.model_id, "weights_hash": loaded.weights_hash,
                     "build_seconds": seconds, "build_cpu_seconds": cpu,
                     "epochs": loaded.preprocessing["training"]["epochs"],
                     "source_val": accuracy(module, suite.source_val()),
                     "eval_mean": sum(evals) / len(evals), "eval_min": min(evals),
                     "eval_max": max(evals), "eval_splits": len(evals)})
        print(f"{spec}: {seconds:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    build_total = sum(r["build_seconds"] for r in rows)
    cpu_total = sum(r["build_cpu_seconds"] for r in rows)
    command = "nice -n 10 .venv/bin/python benchmarks/bench_pool_build.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:])
    result = {"date": datetime.date.today().isoformat(), "command": command.strip(),
              "threads": args.threads, "cpus": os.cpu_count(), "machine": platform.machine(),
              "load_average_after": os.getloadavg(), "members": rows,
              "build_seconds_total": build_total, "build_cpu_seconds_total": cpu_total,
              "wall_seconds_total": time.perf_counter() - total_start}
    lines = ["# Build time of the model pool `mnist-pool`", "",
             f"Measured by `{result['command']}` ({args.threads} torch threads, "
             f"{os.cpu_count()} CPUs, load average after the run "
             f"{result['load_average_after'][0]:.1f}: the machine is shared). Each member is "
             "trained on first use into an empty model cache, in the pool's order. Accuracies: "
             "frozen eval-mode model, clean `source_val` (500 digits) and the 15 evaluation "
             f"corruptions at severities {args.severities} (2,000 digits each).", "",
             "| member | epochs | build wall (s) | build CPU (s) | source_val acc | "
             "eval acc mean [min, max] |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['spec']}` | {r['epochs']} | {r['build_seconds']:.1f} | "
                     f"{r['build_cpu_seconds']:.1f} | "
                     f"{100 * r['source_val']:.1f} | {100 * r['eval_mean']:.1f} "
                     f"[{100 * r['eval_min']:.1f}, {100 * r['eval_max']:.1f}] |")
    lines += ["", f"Total build: {build_total:.0f} s wall ({build_total / 60:.1f} min), "
                  f"{cpu_total:.0f} s CPU ({cpu_total / 60:.1f} min) for {len(rows)} models."]
    write_json_atomic(RESULTS / "pool_build.json", result)
    (RESULTS / "pool_build.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
