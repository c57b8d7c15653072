"""guard:tent against RDumb on continual mnist-c over three corruption orders and three seeds.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/guard_orders.py

The cells are those of ``benchmarks/continual.py run`` (its ``run_cells``: the 15 corruptions at
severity 5 in seeded orders 0, 1, 2, 30 steps of 64 images per split, no reset, seeds 0, 1, 2,
the guard settings of ``ttabench_enigma/guards/mnist-cnn.json``) for ``rdumb`` and
``guard:tent`` only, at its collapse learning rate 0.1 (where the claim under test, guard:tent
far ahead of RDumb, was made on one order), run one cell at a time (one worker process;
``--work /tmp/continual-bench/eval`` shares them with ``continual.py run``). Writes
``benchmarks/results/guard_orders.{md,json}``: each method's online accuracy, the
paired difference guard:tent - rdumb (same order and seed) with a 95 % interval that resamples
orders, then seeds within each (``continual.two_level_interval``), and per order.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import continual  # noqa: E402  (benchmarks/continual.py: the cells and the interval)

from ttabench.store import write_bytes_atomic, write_json_atomic  # noqa: E402

METHODS = ("rdumb", "guard:tent")
LRS = (continual.LR_COLLAPSE,)
COMMAND = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/guard_orders.py"


def cells(work: Path, method: str, lr: float) -> list[Any]:
    """Every (order, seed) cell of ``method`` at ``lr``, run one at a time, then read back."""
    evaluation = dict(splits=continual.EVAL, severities=continual.EVAL_SEVERITIES)
    for order in continual.ORDERS:
        for seed in continual.SEEDS:
            continual.run_cells(work, method, lr, (), orders=(order,), seeds=(seed,),
                                **evaluation)
    return continual.run_cells(work, method, lr, (), orders=continual.ORDERS,
                               seeds=continual.SEEDS, **evaluation)


def summarize(runs: dict[tuple[str, float], list[Any]]) -> dict[str, Any]:
    """Per lr of ``LRS``: each method's accuracy and the paired difference, intervals over orders, then
    seeds."""
    out: dict[str, Any] = {"orders": {}, "lrs": {}}
    for lr in LRS:
        by_key = {m: {continual._key(c): c for c in runs[(m, lr)]} for m in METHODS}
        for cell in runs[(METHODS[0], lr)]:
            out["orders"][str(continual._key(cell)[0])] = cell.protocol["stream"]["order"]
        block: dict[str, Any] = {"methods": {}}
        for method in METHODS:
            acc = {k: c.targets["adapted"] for k, c in by_key[method].items()}
            lo, hi = continual.two_level_interval(acc)
            block["methods"][method] = {
                "online_accuracy_pct": 100 * float(np.mean(list(acc.values()))),
                "interval_pct": [100 * lo, 100 * hi],
                "per_cell_pct": {f"{o}/{s}": 100 * v for (o, s), v in sorted(acc.items())}}
        diffs = {k: by_key["guard:tent"][k].targets["adapted"] - by_key["rdumb"][k].targets["adapted"]
                 for k in by_key["rdumb"]}
        lo, hi = continual.two_level_interval(diffs)
        block["guard:tent - rdumb"] = {
            "mean_pp": 100 * float(np.mean(list(diffs.values()))),
            "interval_pp": [100 * lo, 100 * hi], "cells": len(diffs),
            "per_order_pp": {str(o): 100 * float(np.mean([v for (oo, _), v in diffs.items()
                                                          if oo == o]))
                             for o in continual.ORDERS},
            "min_pp": 100 * min(diffs.values()), "max_pp": 100 * max(diffs.values())}
        out["lrs"][f"{lr:g}"] = block
    return out


def markdown(summary: dict[str, Any], date: str) -> str:
    orders = "; ".join(f"order {o}: {', '.join(s.split('-')[0] for s in names)}"
                       for o, names in summary["orders"].items())
    lines = ["# guard:tent against RDumb, continual mnist-c (mnist-cnn), three orders x three "
             "seeds", "", f"`{COMMAND}` on {date}.", "",
             "Cells of `benchmarks/continual.py` (15 corruptions at severity 5 in a seeded order, "
             f"{continual.STEPS_PER_SPLIT} steps of 64 images per split, no reset; orders "
             f"{list(continual.ORDERS)} x seeds {list(continual.SEEDS)}); the guard's settings "
             "were fitted on the 4 holdout corruptions only. Intervals: 95 % percentile "
             f"bootstrap ({continual.N_BOOT} resamples) resampling orders, then seeds within "
             "each.", "", f"Orders: {orders}.", ""]
    for lr, block in summary["lrs"].items():
        d = block["guard:tent - rdumb"]
        lines += [f"## lr {lr}", "", "| method | online accuracy (mean of 9 cells) | 95 % "
                  "interval |", "|---|---|---|"]
        for method, row in block["methods"].items():
            lo, hi = row["interval_pct"]
            lines.append(f"| {method} | {row['online_accuracy_pct']:.2f} % | "
                         f"[{lo:.2f}, {hi:.2f}] |")
        per = ", ".join(f"order {o}: {v:+.2f}" for o, v in d["per_order_pp"].items())
        lines += ["", f"guard:tent - rdumb (same order and seed): **{d['mean_pp']:+.2f} pp** "
                  f"[{d['interval_pp'][0]:+.2f}, {d['interval_pp'][1]:+.2f}] over {d['cells']} "
                  f"cells (range {d['min_pp']:+.2f} to {d['max_pp']:+.2f}); {per}.", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/honest-continual"))
    args = parser.parse_args()
    runs = {(m, lr): cells(args.work, m, lr)
            for lr in LRS for m in METHODS}
    summary = summarize(runs)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_json_atomic(continual.RESULTS / "guard_orders.json", {"command": COMMAND,
                                                                "date": date, **summary})
    write_bytes_atomic(continual.RESULTS / "guard_orders.md", markdown(summary, date))
    print(markdown(summary, date))


if __name__ == "__main__":
    main()
