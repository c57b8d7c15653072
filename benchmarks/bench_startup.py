"""Start-up time of ``ttabench --help`` and ``ttabench ls``: this checkout vs a baseline.

Runs each command ``--repeats`` times in fresh processes (the first run of each is a warm-up,
dropped) for this checkout's ``.venv/bin/ttabench`` and, when given, a baseline executable
(``--baseline /work/main/.venv/bin/ttabench``, an older checkout), interleaved so that machine
load hits both alike, and reports the median wall time and the ratio in the same run. For
scale, ``python -c "import torch"`` is timed as well.

    .venv/bin/python benchmarks/bench_startup.py --baseline /work/main/.venv/bin/ttabench

Writes benchmarks/results/startup.md and startup.json.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ttabench.store import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMANDS = {"--help": ["--help"], "ls": ["ls"]}


def wall(argv: list[str]) -> float:
    """Seconds one fresh process takes to run ``argv`` to completion."""
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, cwd=ROOT, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=None, help="ttabench executable to compare with")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    sides = {"this branch": str(ROOT / ".venv" / "bin" / "ttabench")}
    if args.baseline:
        sides["baseline"] = args.baseline
    times: dict[str, dict[str, list[float]]] = {s: {c: [] for c in COMMANDS} for s in sides}
    torch_import = []
    for _ in range(args.repeats):
        for name, argv in COMMANDS.items():
            for side, exe in sides.items():
                times[side][name].append(wall([exe, *argv]))
        torch_import.append(wall([sys.executable, "-c", "import torch"]))
    medians = {side: {c: statistics.median(v[1:]) for c, v in per.items()}
               for side, per in times.items()}
    result = {"date": datetime.date.today().isoformat(), "repeats": args.repeats,
              "median_seconds": medians, "import_torch_seconds": statistics.median(torch_import[1:]),
              "baseline": args.baseline}
    lines = ["# Start-up time", "",
             f"Median wall time of {args.repeats - 1} fresh processes (after one warm-up), "
             "measured in one run by `.venv/bin/python benchmarks/bench_startup.py"
             + (f" --baseline {args.baseline}`" if args.baseline else "`") + ".", "",
             "| command | this branch (s) |" + (" baseline (s) | ratio |" if args.baseline else ""),
             "|---|---|" + ("---|---|" if args.baseline else "")]
    for name in COMMANDS:
        row = f"| `ttabench {name}` | {medians['this branch'][name]:.2f} |"
        if args.baseline:
            base = medians["baseline"][name]
            row += f" {base:.2f} | {medians['this branch'][name] / base:.2f}x |"
            result.setdefault("ratio", {})[name] = medians["this branch"][name] / base
        lines.append(row)
    lines += ["", f"For scale: `python -c \"import torch\"` takes "
                  f"{result['import_torch_seconds']:.2f} s here. Target: under 1 s each."]
    write_json_atomic(RESULTS / "startup.json", result)
    (RESULTS / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
