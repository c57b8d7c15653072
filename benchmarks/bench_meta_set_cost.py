"""What the calibration meta-set costs: building it once, and a default run with it, as ratios
to the default run with the holdout calibration splits, measured in one sitting.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_meta_set_cost.py

In one sitting, in this order: (1) ``ttabench run --estimator enigma --set
suite.mnist-c.calibration=holdout`` (75 evaluation + 21 holdout calibration cells) into a fresh
folder; (2) the build of the meta-set (``ttabench.suites.meta_set.cached_meta_set`` from
mnist-c's source-validation digits, the default recipe, into a fresh temporary root);
(3) ``ttabench run --estimator enigma --set suite.mnist-c.calibration=meta-set`` (75 + 134
cells; the meta-set already in the cache). Each is timed in wall-clock seconds and in CPU
seconds (user + system of the process and every process it waited for: ``getrusage``), the
latter being what a shared machine's load does not inflate. The load average is recorded
before and after each. Writes ``benchmarks/results/meta_set_cost.{md,json}``.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ttabench.store import write_bytes_atomic, write_json_atomic
from ttabench.suites.meta_set import DEFAULT_RECIPE, cached_meta_set
from ttabench.suites.mnistc import ensure_mnistc, suite_root

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
COMMAND = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_meta_set_cost.py"


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, work: Any) -> dict[str, Any]:
    load_before = os.getloadavg()
    cpu, wall = _cpu(), time.perf_counter()
    facts = work() or {}
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    print(f"{label}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return {"label": label, "wall_seconds": wall, "cpu_seconds": cpu,
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()], **facts}


def default_run(calibration: str, output: Path) -> dict[str, Any]:
    shutil.rmtree(output, ignore_errors=True)
    argv = [sys.executable, "-m", "ttabench", "run", "--estimator", "enigma", "--set",
            f"suite.mnist-c.calibration={calibration}", "-o", str(output)]
    subprocess.run(argv, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    cells = len(list((output / "cells").glob("*.json")))
    return {"command": "ttabench " + " ".join(argv[3:-2]) + " -o <fresh folder>", "cells": cells}


def build(root: Path) -> dict[str, Any]:
    folder = suite_root(None)
    images, labels = np.load(folder / "source_val.npy"), np.load(folder / "source_val_labels.npy")
    _, manifest = cached_meta_set(images, labels, DEFAULT_RECIPE, seed=0, set_size=2000,
                                  root=root, progress=False)
    return {"sets": len(manifest["sets"]), "families": len(DEFAULT_RECIPE.families)}


def markdown(report: dict[str, Any]) -> str:
    steps = {s["label"]: s for s in report["steps"]}
    base = steps["default run, holdout calibration"]
    lines = ["# The calibration meta-set's cost, in one sitting", "",
             f"`{report['command']}` on {report['date']} ({report['machine']}; other jobs share "
             "the machine: the load average (1, 5, 15 min) is shown before and after each step; "
             "CPU seconds count the user and system time of every process the step ran, which "
             "the load does not inflate).", "",
             "| step | cells / sets | wall (s) | CPU (s) | wall ratio | CPU ratio | load before | "
             "load after |", "|---|---|---|---|---|---|---|---|"]
    for s in report["steps"]:
        lines.append(
            f"| {s['label']} | {s.get('cells', s.get('sets', '-'))} | {s['wall_seconds']:.1f} | "
            f"{s['cpu_seconds']:.1f} | {s['wall_seconds'] / base['wall_seconds']:.2f} | "
            f"{s['cpu_seconds'] / base['cpu_seconds']:.2f} | "
            f"{' / '.join(map(str, s['load_before']))} | {' / '.join(map(str, s['load_after']))} |")
    lines += ["", "Ratios are to the default run with the holdout calibration splits (first row). "
              "Commands: " + "; ".join(f"`{s['command']}`" for s in report["steps"]
                                       if "command" in s) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ensure_mnistc(suite_root(None))
    scratch = Path(tempfile.mkdtemp(prefix="ttabench-meta-cost-"))
    try:
        steps = [timed("default run, holdout calibration",
                       lambda: default_run("holdout", scratch / "holdout")),
                 timed("build the meta-set once (fresh root)", lambda: build(scratch / "meta")),
                 timed("default run, meta-set calibration",
                       lambda: default_run("meta-set", scratch / "meta-set"))]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"command": COMMAND, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores", "steps": steps}
    write_json_atomic(RESULTS / "meta_set_cost.json", report)
    write_bytes_atomic(RESULTS / "meta_set_cost.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
