"""Wall time of the embedded default run: this checkout vs a baseline checkout, in one sitting.

Runs ``ttabench run --estimator enigma`` (``--quick`` unless ``--full``) with the suite and
model already cached, alternating baseline and this branch ``--repeats`` times, each into a
fresh output folder under /tmp, each from its own checkout (its own ``plugins.toml``), and
reports the median wall time of each and their ratio (below 1: this branch is faster).

    .venv/bin/python benchmarks/bench_default_run.py --baseline /work/main [--full]

Writes benchmarks/results/default_run_ratio.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from ttabench.runner.store import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def one_run(checkout: Path, args: list[str]) -> float:
    """Seconds of one run into a fresh folder, from ``checkout`` with its own venv."""
    out = Path(tempfile.mkdtemp(prefix="ttabench-default-"))
    try:
        start = time.perf_counter()
        subprocess.run([str(checkout / ".venv" / "bin" / "ttabench"), "run", *args, "-o",
                        str(out / "run")], cwd=checkout, check=True, capture_output=True,
                       timeout=3600)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the older checkout")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="the whole default run, not --quick")
    args = parser.parse_args()
    run_args = ["--estimator", "enigma", *([] if args.full else ["--quick"])]
    times: dict[str, list[float]] = {"baseline": [], "this branch": []}
    for _ in range(args.repeats):
        times["baseline"].append(one_run(args.baseline, run_args))
        times["this branch"].append(one_run(ROOT, run_args))
    medians = {side: statistics.median(v) for side, v in times.items()}
    ratio = medians["this branch"] / medians["baseline"]
    command = "ttabench run " + " ".join(run_args)
    result = {"date": datetime.date.today().isoformat(), "command": command,
              "baseline": str(args.baseline), "seconds": times, "median_seconds": medians,
              "ratio": ratio}
    write_json_atomic(RESULTS / "default_run_ratio.json", result)
    lines = ["# The default offline run: this branch vs the baseline", "",
             f"`{command}` (suite and model cached), {args.repeats} runs of each, alternating, "
             f"measured in one sitting by `.venv/bin/python benchmarks/bench_default_run.py "
             f"--baseline {args.baseline}{' --full' if args.full else ''}`.", "",
             "| side | runs (s) | median (s) |", "|---|---|---|"]
    for side, values in times.items():
        lines.append(f"| {side} | {', '.join(f'{v:.1f}' for v in values)} | {medians[side]:.1f} |")
    lines += ["", f"Ratio (this branch / baseline): {ratio:.2f}x (target: at most 1.00x)."]
    (RESULTS / "default_run_ratio.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
