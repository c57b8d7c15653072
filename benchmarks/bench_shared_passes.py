"""The cost of one run with 7 adapters against 7 one-adapter runs, in one sitting.

A run naming several adapters computes each (split, seed)'s adapter-independent work once (the
source and bn passes, their static estimates: ``ttabench.runner.shared``) and shares it; seven
one-adapter runs compute it seven times. This script runs, at the same time in two processes so
that both see the same machine,

- ``together``: ``ttabench run --quick -e enigma -a A1 ... -a A7 --splits S -j 1``;
- ``apart``: ``ttabench run --quick -e enigma -a Ai --splits S -j 1`` for each adapter in turn,

and writes ``benchmarks/results/shared_passes.{json,md}`` with the wall time and the CPU time
(user + system of the run's process tree, less sensitive to other jobs on the machine) of each,
their ratios together / apart, and the phase times summed over the cells. The sequence that
finishes first leaves the machine to the other, which then runs faster: with ``together``
finishing first, that speeds up ``apart`` and makes the wall ratio conservative.

    python benchmarks/bench_shared_passes.py [--splits fog,shot_noise,...] [--scratch /tmp/x]

The adapters are 7 of the 8 this project added after the entropy-minimization trio (issue 27):
sar, deyo, roid, bn-ema, bn-alpha, lame, rotta; CoTTA is left out, its 32 augmented teacher
passes per step over the quick protocol's 200 steps take longer than a sitting on this
machine. ``--splits`` narrows the quick protocol's 20 splits (severity 3, 1,000 images each)
when the machine is busy; the command in the results names the splits used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ADAPTERS = ("sar", "deyo", "roid", "bn-ema", "bn-alpha", "lame", "rotta")
TTABENCH = str(Path(sys.executable).with_name("ttabench"))


def _command(adapters: tuple[str, ...], splits: str | None, output: Path) -> list[str]:
    return ["ttabench", "run", "--quick", "-e", "enigma",
            *(arg for a in adapters for arg in ("-a", a)),
            *(["--splits", splits] if splits else []), "-j", "1", "-o", str(output)]


def _phases(output: Path) -> tuple[int, dict[str, float], list[str]]:
    """Cells, per-phase seconds summed over them, and how each got its passes."""
    phases: dict[str, float] = {}
    passes = []
    cells = sorted((output / "cells").glob("*.json"))
    for path in cells:
        cell = json.loads(path.read_text())
        if cell["status"] != "ok":
            raise SystemExit(f"{path}: cell {cell['status']}: {cell.get('error')}")
        passes.append(cell["data"]["passes"])
        for phase, seconds in cell["timings"].items():
            phases[phase] = phases.get(phase, 0.0) + float(seconds)
    return len(cells), phases, passes


def run_sequence(runs: list[list[str]]) -> dict[str, Any]:
    """Run the commands one after another in a child process (``sh -c``), so that its
    resource usage is the children's of that one process: wall and CPU seconds."""
    script = " && ".join(" ".join([TTABENCH, *argv[1:]]) for argv in runs)
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "code = subprocess.run(['sh', '-c', sys.argv[1]], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.PIPE, text=True); "
               "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
               "print(time.perf_counter() - t, u.ru_utime + u.ru_stime, code.returncode); "
               "sys.stderr.write(code.stderr[-3000:])")
    load_before = os.getloadavg()
    done = subprocess.run([sys.executable, "-c", wrapper, script], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall, cpu, code = done.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"{script} failed: {done.stderr}")
    return {"wall_seconds": float(wall), "cpu_seconds": float(cpu),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", default=None, help="narrow the quick protocol's splits")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/bench_shared_passes"))
    args = parser.parse_args()
    shutil.rmtree(args.scratch, ignore_errors=True)
    together = [_command(ADAPTERS, args.splits, args.scratch / "together")]
    apart = [_command((a,), args.splits, args.scratch / "apart" / a) for a in ADAPTERS]
    with ThreadPoolExecutor(2) as pool:
        futures = {"together": pool.submit(run_sequence, together),
                   "apart": pool.submit(run_sequence, apart)}
        measured = {side: future.result() for side, future in futures.items()}
    cells, phases, passes = _phases(args.scratch / "together")
    apart_cells, apart_phases = 0, {}
    for adapter in ADAPTERS:
        n, ph, _ = _phases(args.scratch / "apart" / adapter)
        apart_cells += n
        for k, v in ph.items():
            apart_phases[k] = apart_phases.get(k, 0.0) + v
    measured["together"].update(cells=cells, phases=phases, passes_reused=passes.count("reused"))
    measured["apart"].update(cells=apart_cells, phases=apart_phases)
    wall = measured["together"]["wall_seconds"] / measured["apart"]["wall_seconds"]
    cpu = measured["together"]["cpu_seconds"] / measured["apart"]["cpu_seconds"]
    command = "python benchmarks/bench_shared_passes.py" + (
        f" --splits {args.splits}" if args.splits else "")
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "niceness": os.nice(0), "command": command, "adapters": list(ADAPTERS),
              "together_command": " ".join(together[0]),
              "apart_commands": [" ".join(c) for c in apart], **measured,
              "wall_ratio": wall, "cpu_ratio": cpu}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "shared_passes.json").write_text(json.dumps(report, indent=2) + "\n")
    t, a = measured["together"], measured["apart"]
    lines = [
        "# One run with 7 adapters against 7 one-adapter runs",
        "",
        f"Written by `{command}` on {report['date']} ({report['machine']}, niceness "
        f"{report['niceness']}; the machine was shared with other jobs: load average (1, 5, "
        "15 min) before and after below). Both sequences ran at the same time, one process "
        "each, one thread per process; CPU time is user + system time of each sequence's "
        "processes. Warm suite and model cache.",
        "",
        f"- together: `{report['together_command']}`",
        "- apart, one after another: " + "; ".join(f"`{c}`" for c in report["apart_commands"]),
        "",
        "| | cells | wall (s) | CPU (s) | load before | load after |",
        "|---|---|---|---|---|---|",
        *(f"| {side} | {m['cells']} | {m['wall_seconds']:.1f} | {m['cpu_seconds']:.1f} | "
          f"{' / '.join(map(str, m['load_before']))} | {' / '.join(map(str, m['load_after']))} |"
          for side, m in (("together", t), ("apart", a))),
        "",
        f"Ratio together / apart: **CPU time {cpu:.2f}**, wall time {wall:.2f}. In the "
        f"together run {t['passes_reused']} of {t['cells']} cells reused the passes of the "
        "first adapter's cell of their (split, seed).",
        "",
        "Phase time summed over the cells (s):",
        "",
        "| phase | together | apart |",
        "|---|---|---|",
        *(f"| {k} | {t['phases'].get(k, 0.0):.1f} | {a['phases'].get(k, 0.0):.1f} |"
          for k in sorted(set(t["phases"]) | set(a["phases"]))),
    ]
    (RESULTS / "shared_passes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
