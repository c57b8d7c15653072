"""The model-pool study: WF and its family against the estimators that compare models.

One command::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pool.py

runs (or resumes) one ``ttabench run`` of the seven-model pool ``mnist-pool`` on mnist-c
(``RUN_COMMAND``: RDumb, severities 3 and 5, stream seed 0, the plugin's baseline roster, WF's
family at checkpoints 0/50/100, and GDE, ALine-S, ALine-D and TTALine computed from the run's
logit cache), then scores its cells (``analyse``) and writes ``benchmarks/results/pool.{md,json}``:
per target and model the MAE of every estimator, the cross-model rank correlation, WF against
TTALine head to head, and the issue's target (an estimator at <= 0.70x the MAE of the best
single-model baseline on the ``source`` table of both offline models) with its ratio.

Every choice is made on the calibration datasets only, leaving out a whole dataset: a score
estimator's map kind and signal (the leaderboard's calibration leave-one-out, ``calib LOO``),
the table's baseline (``chosen baseline``), and the candidate the target is judged on (lowest
``calib LOO`` among WF's family and the pool estimators). ``--analyse-only`` scores an existing
run folder; ``--output`` moves it (default ``/tmp/ttabench-pool-study``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_RUN = Path("/tmp/ttabench-pool-study")
FAMILY = ("enigma", "enigma-source", "enigma-unweighted", "enigma+ts")
POOL = ("gde", "aline-s", "aline-d", "ttaline")
CHECKPOINTS = "[0, 50, 100]"
ESTIMATE_AT = 100
MAP_KINDS = "lin,quad,iso,logit-lin,logit-quad"
OFFLINE_MODELS = ("mnist-cnn:0", "mnist-resnet:0")
N_BOOT = 1000


def run_command(output: Path) -> list[str]:
    """The ``ttabench run`` of the study (its own leaderboard is scored with few resamples;
    ``analyse`` rescores the cells with ``N_BOOT``)."""
    command = ["ttabench", "run", "-s", "mnist-c", "-m", "mnist-pool", "-a", "rdumb",
               "-e", ",".join(FAMILY + POOL), "--severities", "3", "--severities", "5", "--seed", "0",
               "--jobs", "2", "--threads", "1", "--map-kinds", MAP_KINDS, "--n-boot", "100",
               "-o", str(output)]
    for name in FAMILY:
        command += ["--set", f"estimator.{name}.checkpoints={CHECKPOINTS}",
                    "--set", f"estimator.{name}.estimate_at={ESTIMATE_AT}"]
    return command


def collect(output: Path) -> float:
    """Run (or resume) the study's run; its wall time in seconds."""
    command = run_command(output)
    print("$ " + shlex.join(command), flush=True)
    start = time.perf_counter()
    binary = Path(sys.executable).parent / "ttabench"
    subprocess.run([str(binary), *command[1:]], check=True, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.analyse_only:
        wall = collect(args.output)
        (args.output / "study_wall.json").write_text(json.dumps({"wall_s": wall}) + "\n")


if __name__ == "__main__":
    main()
