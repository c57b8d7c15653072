"""Adaptation length and learning rate per model, chosen on the calibration meta-set only.

One command::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/protocol_choice.py

runs, per model (``mnist-cnn``, ``mnist-resnet``) and learning rate of ``LRS`` (the reference
2.5e-4 and 2.5e-3, the earlier shipped value: with the step counts they span lr x steps from
0.0125 to 2.5), ``ttabench run`` of
``enigma-signals-source`` (probe 1000, snapshots at ``STEPS_AT[lr]``: one trajectory gives every
step count; 50 to 990 at 2.5e-4, the reference 990 included, 50 to 400 at 2.5e-3) on one set of every shifted meta-set family (strength
level 0.6) and one clean set (``SETS``: 23 sets;
the meta-set of ``ttabench.suites.meta_set``, built from mnist-c's source-validation digits,
never an evaluation corruption), stream seed 0, no baselines; then, per (lr, k), the
leave-one-dataset-out MAE (pp) of the trajectory's signals with the best map kind (lin, quad,
iso, logit-lin, logit-quad; ``ttabench.scoring.lodo``): the flip rate ``flips@k`` against the
``bn`` accuracy (the accuracy flips track) and ``fa@k = (1 - flips@k) * agreement`` against the
``source`` accuracy. The chosen (lr, k) has the lowest mean of the two; ties go to the smaller
k, then the smaller lr (cheaper). Writes ``benchmarks/results/protocol_choice.{md,json}``.
``--models`` narrows; ``--analyse-only`` re-reads finished runs. Runs resume.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ttabench.scoring.leaderboard import load_cells
from ttabench.scoring.lodo import lodo_mae
from ttabench.scoring.map_kinds import MAP_KINDS
from ttabench.store import write_bytes_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mnist-cnn", "mnist-resnet")
LRS = (2.5e-4, 2.5e-3)
STEPS = (50, 100, 200, 400, 990)
#: The step counts tried at each lr: every count at the reference lr; up to 400 at 2.5e-3 (lr
#: x steps up to 1.0, four times the reference 2.5e-4 x 990), which keeps the study affordable.
STEPS_AT = {2.5e-4: STEPS, 2.5e-3: (50, 100, 200, 400)}
SETS = "meta-*-3,meta-clean-1"
ESTIMATOR = "enigma-signals-source"
COMMAND = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/protocol_choice.py"


def folder(runs: Path, model: str, lr: float) -> Path:
    return runs / model / f"lr{lr:g}"


def run(runs: Path, model: str, lr: float) -> None:
    """One resumable run of the trajectory on the chosen meta-set sets at ``lr``."""
    checkpoints = json.dumps([0, *STEPS_AT[lr]]).replace(" ", "")
    cmd = [sys.executable, "-m", "ttabench", "run", "-m", model, "-e", ESTIMATOR,
           "--no-baselines", "--splits", SETS, "--seed", "0", "--jobs", "1", "--threads", "1",
           "--set", "suite.mnist-c.calibration=meta-set",
           "--set", f"adapter.rdumb.lr={lr}",
           "--set", f"estimator.{ESTIMATOR}.checkpoints={checkpoints}",
           "--set", f"estimator.{ESTIMATOR}.probe_size=1000",
           "-o", str(folder(runs, model, lr))]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def best_kind(x: np.ndarray, y: np.ndarray, datasets: list[str]) -> tuple[float, str]:
    """The lowest LODO MAE over the map kinds, and its kind."""
    return min((lodo_mae(kind, x, y, datasets), kind) for kind in MAP_KINDS)


def analyse(runs: Path, model: str) -> dict:
    """LODO MAE per (lr, k) and target, and the choice (module docstring)."""
    table = []
    for lr in LRS:
        cells = [c for c in load_cells([folder(runs, model, lr)]) if c.status == "ok"]
        datasets = [c.dataset for c in cells]
        for k in STEPS_AT[lr]:
            row = {"lr": lr, "steps": k, "n_sets": len(cells),
                   "n_families": len(set(datasets))}
            for target, signal in (("bn", f"flips@{k}"), ("source", f"fa@{k}")):
                x = np.array([c.estimators[ESTIMATOR].result.scores[signal] for c in cells])
                y = np.array([c.targets[target] for c in cells])
                row[target], row[f"{target}_kind"] = best_kind(x, y, datasets)
            row["mean"] = (row["bn"] + row["source"]) / 2
            table.append(row)
    chosen = min(table, key=lambda r: (round(r["mean"], 9), r["steps"], r["lr"]))
    return {"table": table, "chosen": {"lr": chosen["lr"], "steps": chosen["steps"]}}


def markdown(report: dict) -> str:
    lines = ["# Adaptation length and learning rate, chosen on the calibration meta-set", "",
             f"`{report['command']}` on {report['date']} ({report['machine']}).", "",
             f"RDumb, batch 64, `{ESTIMATOR}` (probe 1000, stream draw, chunks of 100) with "
             f"snapshots at {', '.join(map(str, STEPS))} (at lr 2.5e-3 up to 400: lr x steps "
             f"up to 1.0, four times the reference's 2.5e-4 x 990), stream seed 0, on {SETS!r} of the "
             "calibration meta-set (one set, level 0.6, of each of its 22 shifted families and one clean set; built from mnist-c's "
             "source-validation digits, no evaluation corruption). Per (lr, k): the "
             "leave-one-dataset-out MAE (pp, families left out whole) of `flips@k` against the "
             "`bn` accuracy and of `fa@k` against the `source` accuracy, each with its best "
             "map kind; chosen: the lowest mean (ties: fewer steps, then the smaller lr). No "
             "evaluation split is read.", ""]
    for model, result in report["models"].items():
        c = result["chosen"]
        lines += [f"## {model}: lr {c['lr']:g}, {c['steps']} steps", "",
                  "| lr | steps | LODO bn (flips) | kind | LODO source (fa) | kind | mean | |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in result["table"]:
            mark = "chosen" if (r["lr"], r["steps"]) == (c["lr"], c["steps"]) else ""
            lines.append(f"| {r['lr']:g} | {r['steps']} | {r['bn']:.2f} | {r['bn_kind']} | "
                         f"{r['source']:.2f} | {r['source_kind']} | {r['mean']:.2f} | {mark} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "protocol")
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    if not args.analyse_only:
        for model in models:
            for lr in LRS:
                run(args.runs, model, lr)
    report = {"command": COMMAND, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
              "models": {m: analyse(args.runs, m) for m in models}}
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / "protocol_choice.json", report)
    write_bytes_atomic(RESULTS / "protocol_choice.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
