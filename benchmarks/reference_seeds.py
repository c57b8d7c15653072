"""How much the bn-view estimates of the estimators that use labelled source val move when only
the batching of that reference changes: mnist-c, mnist-cnn, batches of 64 and those estimators
with their default parameters (the settings of the default run of 3eeddf2), the
reference batched from ``randperm`` draws of seeds 0..K-1 (``ttabench.runner.views``'s
``REFERENCE_SEED``), everything else fixed.

The ``bn`` view compares the test split's batch-statistics outputs with source val through the
same batch-statistics model, cut into batches of the run's batch size; which images share a
batch decides the statistics each one is normalized with, so the reference's confidences and
the thresholds and temperatures fitted on them depend on the batching. The default run's
mnist-c source val is 500 images already stored in a random order, so its old file-order
batching was one such draw. No adaptation is needed for the ``bn`` target (the ``source``
adapter runs no step), so the whole suite takes minutes.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/reference_seeds.py

Writes benchmarks/results/reference_seeds.{json,md}: per estimator the bn-view MAE (percentage
points, averaged per dataset then over datasets as the leaderboard does, but over every split of
the suite) for each reference seed, and their range.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

from ttabench.runner import views
from ttabench.runner.benchmark import Benchmark
from ttabench.runner.config import build_spec, load_config
from ttabench.store import write_json_atomic

RESULTS = Path(__file__).parent / "results"
#: The default roster's estimators that use labelled source val in the bn view.
ESTIMATORS = ["atc-mc", "atc-ne", "doc", "cott", "ac+ts", "doc+ts", "atc-mc+ts", "atc-ne+ts",
              "cot+ts"]


def bn_maes(bench: Benchmark) -> dict[str, float]:
    """Per estimator the bn-view MAE (pp), per dataset then over datasets, of every cell."""
    errors: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for plan in bench.plan():
        cell = bench.execute(plan)
        truth = cell.targets["bn"]
        for name, record in cell.estimators.items():
            result = (record.views or {}).get("bn")
            if result is not None and result.estimate is not None and truth is not None:
                errors[name][plan.split.dataset].append(abs(result.estimate - truth))
    return {name: 100 * statistics.mean(statistics.mean(v) for v in by_dataset.values())
            for name, by_dataset in errors.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="Reference seeds 0..K-1.")
    parser.add_argument("--severities", default="", help="Comma list (default: all).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    given = {"suite": "mnist-c", "model": "mnist-cnn", "batch_size": 64, "threads": 1,
             "estimator": ESTIMATORS, "adapter": ["source"], "jobs": 1, "device": "cpu"}
    if args.severities:
        given["severities"] = [int(s) for s in args.severities.split(",")]
    with tempfile.TemporaryDirectory() as folder:  # no config file: the built-in defaults
        empty = Path(folder) / "empty.toml"
        empty.write_text("")
        spec = build_spec(load_config(empty), baselines=False, **given)
    maes: dict[int, dict[str, float]] = {}
    for seed in range(args.seeds):
        views.REFERENCE_SEED = seed  # read when the reference is computed, once per Benchmark
        maes[seed] = bn_maes(Benchmark(spec))
        print(f"reference seed {seed}: " + ", ".join(f"{k} {v:.2f}" for k, v in maes[seed].items()),
              flush=True)
    names = list(maes[0])
    command = ("OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/reference_seeds.py "
               + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    result = {"date": datetime.date.today().isoformat(), "command": command,
              "suite": spec.suite, "model": spec.model, "batch_size": spec.batch_size,
              "torch": torch.__version__, "bn_mae_pp": {str(s): m for s, m in maes.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "reference_seeds.json", result)
    seeds = list(maes)
    lines = ["# bn-view MAE against the batching of the labelled reference", "",
             f"`{command}` ({result['date']}; {spec.suite}, {spec.model}, batch "
             f"{spec.batch_size}, torch {result['torch']}). The bn view's reference is source "
             "val through the batch-statistics model in batches cut from `randperm` of each "
             "seed; nothing else changes. MAE in percentage points, per dataset then over "
             "datasets, over every split of the suite (the leaderboard leaves its calibration "
             "datasets out, so its figures differ).", "",
             "| estimator | " + " | ".join(f"seed {s}" for s in seeds) + " | range |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for name in names:
        values = [maes[s][name] for s in seeds]
        lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values)
                     + f" | {max(values) - min(values):.2f} |")
    (args.out / "reference_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
