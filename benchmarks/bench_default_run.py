"""Wall time of the embedded default run, an old checkout against this one, in one sitting.

Runs ``ttabench run --estimator enigma -o <fresh folder>`` in each checkout (its own
``.venv`` and ``plugins.toml``) on the warm suite/model cache, old first, then new, and writes
``benchmarks/results/default_run.{json,md}`` with both wall times and the ratio new / old
(target: at most 1.15, although the new run scores three model views). Each run's per-phase
cell timings (summed over the cells) are read from its cell files, and the machine's load
average is read before and after each run. ``--repeat N`` runs N pairs, alternating which
checkout goes first (old first in the first pair); the ratio is then total new / total old.

    python benchmarks/bench_default_run.py --old /path/to/old/checkout [--scratch /tmp/bench] [--quick] [--repeat N]

``--quick`` times the ``--quick`` smoke run (severity 3, 1,000 images per split, 20 cells)
instead, when the machine is too busy for two full runs in one sitting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_RATIO = 1.15
COMMAND = ["run", "--estimator", "enigma"]


def run_once(checkout: Path, output: Path, extra: list[str]) -> dict[str, Any]:
    """One default run in ``checkout`` into a fresh ``output``: wall time and phase sums."""
    shutil.rmtree(output, ignore_errors=True)
    argv = [str(checkout / ".venv" / "bin" / "ttabench"), *COMMAND, *extra, "-o", str(output)]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=checkout, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
    load_after = os.getloadavg()
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    phases: dict[str, float] = {}
    cells = sorted((output / "cells").glob("*.json"))
    for path in cells:
        for phase, seconds in json.loads(path.read_text()).get("timings", {}).items():
            phases[phase] = phases.get(phase, 0.0) + float(seconds)
    return {"checkout": str(checkout),
            "command": " ".join(["ttabench", *COMMAND, *extra, "-o", str(output)]),
            "wall_seconds": wall, "cells": len(cells),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in load_after],
            "phases_summed_seconds": {k: round(v, 1) for k, v in sorted(phases.items())}}


def _load(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def _write(path: Path, text: str) -> None:
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_report(args: argparse.Namespace, runs: list[dict[str, Any]], pairs: int) -> float:
    """``default_run.{json,md}`` from the ``pairs`` finished pairs of ``runs``; the ratio."""
    walls = {side: [float(r["wall_seconds"]) for r in runs if r["side"] == side]
             for side in ("old", "new")}
    ratio = sum(walls["new"]) / sum(walls["old"])
    old, new = (next(r for r in runs if r["side"] == side) for side in ("old", "new"))
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "niceness": os.nice(0), "pairs_finished": pairs, "pairs_asked": args.repeat,
        "runs": runs, "old": old, "new": new, "ratio_new_over_old": ratio,
        "target_ratio": TARGET_RATIO,
        "pair_ratios": [walls["new"][i] / walls["old"][i] for i in range(pairs)],
        "within_target": ratio <= TARGET_RATIO,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    _write(RESULTS / "default_run.json", json.dumps(report, indent=2) + "\n")
    lines = [
        "# The embedded default run: wall time, old checkout vs this one",
        "",
        f"Written by `python benchmarks/bench_default_run.py --old {args.old}"
        f"{' --quick' if args.quick else ''}{f' --repeat {args.repeat}' if args.repeat > 1 else ''}`"
        f" on {report['date']} ({report['machine']}, niceness {report['niceness']}; other jobs "
        "may have shared the machine: the load average (1, 5, 15 min) is shown before and after "
        "each run; all runs in the same sitting, in the order listed; "
        f"{pairs} of {args.repeat} pairs finished). Warm suite and model cache.",
        "",
        "| pair | checkout | command | cells | wall time (s) | load before | load after |",
        "|---|---|---|---|---|---|---|",
        *(f"| {r['pair']} | {r['side']} ({r['checkout']}) | `{r['command']}` | {r['cells']} | "
          f"{float(r['wall_seconds']):.1f} | {_load(r['load_before'])} | {_load(r['load_after'])} |"
          for r in runs),
        "",
        f"Ratio new / old (total wall time): **{ratio:.2f}** (target <= {TARGET_RATIO}: "
        f"{'met' if report['within_target'] else 'NOT met'}); per pair: "
        + ", ".join(f"{v:.2f}" for v in report["pair_ratios"]) + ".",
        "",
        "Per-phase cell time, summed over cells (s), of the first run of each checkout:",
        "",
        "| phase | old | new |",
        "|---|---|---|",
    ]
    for phase in sorted(set(old["phases_summed_seconds"]) | set(new["phases_summed_seconds"])):
        lines.append(f"| {phase} | {old['phases_summed_seconds'].get(phase, '-')} | "
                     f"{new['phases_summed_seconds'].get(phase, '-')} |")
    _write(RESULTS / "default_run.md", "\n".join(lines) + "\n")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench_default_run"))
    parser.add_argument("--quick", action="store_true", help="time the --quick smoke run")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of runs, order alternating")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    extra = ["--quick"] if args.quick else []
    checkouts = {"old": args.old.resolve(), "new": ROOT}
    runs: list[dict[str, Any]] = []
    for pair in range(args.repeat):
        for side in ("old", "new") if pair % 2 == 0 else ("new", "old"):
            run = run_once(checkouts[side], args.scratch / side, extra)
            runs.append({"side": side, "pair": pair, **run})
            print(f"pair {pair} {side}: {float(run['wall_seconds']):.1f} s", flush=True)
        ratio = write_report(args, runs, pair + 1)  # written after every pair
        print(f"after pair {pair}: ratio new / old {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
