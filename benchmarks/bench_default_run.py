"""Wall time of the embedded default run, an old checkout against this one, in one sitting.

Runs ``ttabench run --estimator enigma -o <fresh folder>`` in each checkout (its own
``.venv`` and ``plugins.toml``) on the warm suite/model cache, old first, then new, and writes
``benchmarks/results/default_run.{json,md}`` with both wall times and the ratio new / old
(target: at most 1.15, although the new run scores three model views). Each run's per-phase
cell timings (summed over the cells) are read from its cell files.

    python benchmarks/bench_default_run.py --old /path/to/old/checkout [--scratch /tmp/bench] [--quick]

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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TARGET_RATIO = 1.15
COMMAND = ["run", "--estimator", "enigma"]


def run_once(checkout: Path, output: Path, extra: list[str]) -> dict[str, object]:
    """One default run in ``checkout`` into a fresh ``output``: wall time and phase sums."""
    shutil.rmtree(output, ignore_errors=True)
    argv = [str(checkout / ".venv" / "bin" / "ttabench"), *COMMAND, *extra, "-o", str(output)]
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=checkout, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.perf_counter() - started
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
            "phases_summed_seconds": {k: round(v, 1) for k, v in sorted(phases.items())}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=Path, required=True, help="the checkout to compare with")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench_default_run"))
    parser.add_argument("--quick", action="store_true", help="time the --quick smoke run")
    args = parser.parse_args()
    extra = ["--quick"] if args.quick else []
    old = run_once(args.old.resolve(), args.scratch / "old", extra)
    new = run_once(ROOT, args.scratch / "new", extra)
    ratio = float(new["wall_seconds"]) / float(old["wall_seconds"])
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "old": old, "new": new, "ratio_new_over_old": ratio, "target_ratio": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "default_run.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# The embedded default run: wall time, old checkout vs this one",
        "",
        f"Written by `python benchmarks/bench_default_run.py --old {args.old}"
        f"{' --quick' if args.quick else ''}` on "
        f"{report['date']} ({report['machine']}; other jobs may have shared the machine, both "
        "runs in the same sitting, old first). Warm suite and model cache.",
        "",
        "| checkout | command | cells | wall time (s) |",
        "|---|---|---|---|",
        f"| old ({old['checkout']}) | `{old['command']}` | {old['cells']} | {old['wall_seconds']:.1f} |",
        f"| new ({new['checkout']}) | `{new['command']}` | {new['cells']} | {new['wall_seconds']:.1f} |",
        "",
        f"Ratio new / old: **{ratio:.2f}** (target <= {TARGET_RATIO}: "
        f"{'met' if report['within_target'] else 'NOT met'}).",
        "",
        "Per-phase cell time, summed over cells (s):",
        "",
        "| phase | old | new |",
        "|---|---|---|",
    ]
    for phase in sorted(set(old["phases_summed_seconds"]) | set(new["phases_summed_seconds"])):
        lines.append(f"| {phase} | {old['phases_summed_seconds'].get(phase, '-')} | "
                     f"{new['phases_summed_seconds'].get(phase, '-')} |")
    (RESULTS / "default_run.md").write_text("\n".join(lines) + "\n")
    print(f"old {old['wall_seconds']:.1f} s, new {new['wall_seconds']:.1f} s, ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
