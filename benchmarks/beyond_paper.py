"""Beyond the paper: how close each trajectory idea comes to the chosen same-view baseline, on
the cells of the quality study.

One command, after ``benchmarks/quality.py`` (it runs nothing, it reads
``runs/quality/<model>``)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/beyond_paper.py

Per model and target (``source``, ``bn``) and per idea, a pool of label-free scores recorded in
the cells (``IDEAS``): the (score, map kind) with the lowest leave-one-dataset-out MAE on the
meta-set's families is chosen (``ttabench.scoring.lodo``; the stack ideas: the monotone stack
of ``ttabench.scoring.stack`` with its forward selection), fitted on all meta-set cells and
scored on the evaluation cells (those quality.py ran); its calibration error is nested
(the choice redone without each held-out family). Each idea's MAE is set against the table's
chosen baseline (the leaderboard's LODO choice) as a ratio with a 95 % bootstrap interval
(datasets, then cells within them). The two stacks, with and without the trajectory's
features, measure what the flips add beyond static scores. Writes
``benchmarks/results/quality_beyond.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ttabench.records import Cell
from ttabench.scoring import metrics
from ttabench.scoring.leaderboard import load_cells
from ttabench.scoring.lodo import lodo_mae, nested_choice_lodo
from ttabench.scoring.map_kinds import MAP_KINDS, fit_map_kind
from ttabench.scoring.stack import fit_stack, nested_lodo, select_features
from ttabench.store import write_bytes_atomic, write_json_atomic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import protocol_facts, run_folders  # noqa: E402  (benchmarks/quality.py)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mnist-cnn", "mnist-resnet")
TARGETS = ("source", "bn")
N_BOOT = 1000
COMMAND = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/beyond_paper.py"
TRAJECTORY = re.compile(r"^(u|wf|fa)@\d+$")

#: idea -> (estimator, score-name pattern); the stack ideas name the stacked estimator per
#: target and whether its trajectory features take part.
IDEAS: dict[str, tuple[str, str]] = {
    "WF (the paper's score)": ("enigma", r"^wf@\d+$"),
    "WF x agreement (enigma-source)": ("enigma-source", r"^wfa@\d+$"),
    "flip rate F(t)": ("enigma-signals", r"^flips@\d+$"),
    "AUC / first flip / flip-backs": ("enigma-signals", r"^(auc|first_flip|flip_backs)$"),
    "margin / entropy-weighted flips": ("enigma-signals", r"^[me]flips@\d+$"),
    "per-class flip rates": ("enigma-signals", r"^c(flips|max)@\d+$"),
    "logit drift (cos, L2)": ("enigma-signals", r"^(cos|l2)@\d+$"),
    "flips or drift x agreement": ("enigma-signals", r"^(fa|ca)@\d+$"),
    "step-0 only (agreement, confidence)": ("enigma-signals", r"^(agree|conf0)$"),
    "every trajectory signal": ("enigma-signals", r"."),
}
STACKS = {"stack of static scores (no trajectory)": False, "stack with the trajectory": True}
STACKED = {"source": "enigma-stack-source", "bn": "enigma-stack"}


@dataclass
class Outcome:
    """An idea's choice, its nested calibration error and its evaluation estimates."""

    choice: str
    calib: float
    estimates: dict[str, float]


def _scores(cell: Cell, estimator: str) -> dict[str, float]:
    rec = cell.estimators.get(estimator)
    res = rec.in_view("bn") if rec is not None else None
    return {} if res is None else {k: v for k, v in res.scores.items() if math.isfinite(v)}


def _matrix(cells: list[Cell], estimator: str, names: list[str]) -> np.ndarray:
    return np.array([[_scores(c, estimator)[n] for n in names] for c in cells], dtype=np.float64)


def _pool(calib: list[Cell], evals: list[Cell], estimator: str, pattern: str) -> list[str]:
    """The score names matching ``pattern`` that every cell carries."""
    common = set.intersection(*(set(_scores(c, estimator)) for c in calib + evals))
    return sorted(n for n in common if re.search(pattern, n))


def choose_score(calib: list[Cell], evals: list[Cell], target: str, estimator: str,
                 names: list[str]) -> Outcome:
    """The (score, kind) of lowest LODO MAE, fitted on calibration, applied to evaluation;
    its error nested over the joint choice of score and kind."""
    y = np.array([c.targets[target] for c in calib])
    groups = [c.dataset for c in calib]
    x = _matrix(calib, estimator, names)
    xe = _matrix(evals, estimator, names)
    candidates = {f"{n}/{k}": (k, x[:, j]) for j, n in enumerate(names) for k in MAP_KINDS}
    options = {o: lodo_mae(k, v, y, groups) for o, (k, v) in candidates.items()}
    choice = min(sorted(options), key=lambda o: options[o])
    name, kind = choice.rsplit("/", 1)
    fitted = fit_map_kind(kind, x[:, names.index(name)], y)
    preds = fitted(xe[:, names.index(name)])
    return Outcome(choice, nested_choice_lodo(candidates, y, groups),
                   {c.key: float(p) for c, p in zip(evals, preds)})


def choose_stack(calib: list[Cell], evals: list[Cell], target: str, trajectory: bool) -> Outcome:
    estimator = STACKED[target]
    names = [n for n in _pool(calib, evals, estimator, r".")
             if trajectory or not TRAJECTORY.match(n)]
    y = np.array([c.targets[target] for c in calib])
    groups = [c.dataset for c in calib]
    x = _matrix(calib, estimator, names)
    chosen, _ = select_features(x, y, groups, names)
    columns = [names.index(n) for n in chosen]
    stack = fit_stack(x[:, columns], y, chosen)
    preds = stack.predict(_matrix(evals, estimator, names)[:, columns])
    return Outcome("+".join(chosen) or "(constant)", nested_lodo(x, y, groups, names),
                   {c.key: float(p) for c, p in zip(evals, preds)})


def ratio(evals: list[Cell], target: str, a: dict[str, float], b: dict[str, float]
          ) -> dict[str, float]:
    """MAE of a and b (pp) on their common cells, the ratio and the difference with 95 %
    paired bootstrap intervals (datasets, then cells)."""
    cells = [c for c in evals if c.key in a and c.key in b]
    truth = np.array([c.targets[target] for c in cells])
    datasets = [c.dataset for c in cells]
    ea = np.abs(np.array([a[c.key] for c in cells]) - truth)
    eb = np.abs(np.array([b[c.key] for c in cells]) - truth)
    sa = metrics.boot_mae_samples(ea, datasets, N_BOOT, 0)
    sb = metrics.boot_mae_samples(eb, datasets, N_BOOT, 0)
    ma = metrics.mae_by_dataset(ea, np.zeros(len(ea)), datasets)
    mb = metrics.mae_by_dataset(eb, np.zeros(len(eb)), datasets)
    r_low, r_high = np.quantile(sa / sb, [0.025, 0.975])
    d_low, d_high = np.quantile(sa - sb, [0.025, 0.975])
    return {"mae": ma, "baseline_mae": mb, "ratio": ma / mb, "ratio_low": float(r_low),
            "ratio_high": float(r_high), "diff": ma - mb, "diff_low": float(d_low),
            "diff_high": float(d_high)}


def analyse(folder: Path) -> dict:
    cells = [c for c in load_cells(run_folders(folder)) if c.status == "ok"]
    calib = [c for c in cells if c.role == "calibration"]
    evals = [c for c in cells if c.role == "eval"]
    board = json.loads((folder / "leaderboard.json").read_text())
    pairs = pd.read_csv(folder / "pairs.csv")
    out: dict = {"facts": protocol_facts(folder)}
    for target in TARGETS:
        table = next(b for b in board["targets"] if b["target"] == target)["tables"][0]
        base = table["chosen_baseline"]
        part = pairs[(pairs["target"] == target) & (pairs["entry"] == base)]
        baseline = dict(zip(part["key"], part["estimate"]))
        rows = {}
        for idea, (estimator, pattern) in IDEAS.items():
            names = _pool(calib, evals, estimator, pattern)
            outcome = choose_score(calib, evals, target, estimator, names)
            rows[idea] = {"choice": outcome.choice, "calib": outcome.calib,
                          **ratio(evals, target, outcome.estimates, baseline)}
        stacks = {}
        for idea, trajectory in STACKS.items():
            stacks[idea] = choose_stack(calib, evals, target, trajectory)
            rows[idea] = {"choice": stacks[idea].choice, "calib": stacks[idea].calib,
                          **ratio(evals, target, stacks[idea].estimates, baseline)}
        with_flips, without = (stacks[i].estimates for i in STACKS)
        out[target] = {"baseline": base, "baseline_calib": table["chosen_calib_loo"],
                       "ideas": rows, "flips_add": ratio(evals, target, with_flips, without)}
    return out


def _r(row: dict) -> str:
    return f"{row['ratio']:.2f} [{row['ratio_low']:.2f}, {row['ratio_high']:.2f}]"


def markdown(report: dict) -> str:
    lines = ["# Beyond the paper: each trajectory idea against the chosen same-view baseline",
             "", f"`{report['command']}` on {report['date']}, from the cells of "
             "`benchmarks/quality.py` (`benchmarks/results/quality.md` has the protocol; lr and "
             "steps per model chosen on the meta-set): "
             + "; ".join(f"{m}: {f['eval_cells']} evaluation cells ({f['eval_splits']} splits, "
                         f"seeds {', '.join(map(str, f['seeds']))}), {f['meta_sets']} meta-set "
                         f"sets ({f['meta_families']} families)"
                         for m, b in report["models"].items() for f in [b["facts"]]) + ".", "",
             "Per idea (a pool of label-free scores recorded in the cells), the score and map "
             "kind (lin, quad, iso, logit-lin, logit-quad) with the lowest leave-one-dataset-out "
             "MAE on the meta-set's families is fitted on the meta-set and scored on the "
             "evaluation cells; `calib` is its nested LODO error (the choice redone without "
             "each family). The stacks are the monotone stack of `ttabench.scoring.stack` over "
             "the stacked estimator's features (`enigma-stack-source` for `source`, "
             "`enigma-stack` for `bn`), with and without the trajectory's features (`u@k`, "
             "`wf@k`, `fa@k`). Ratio: the idea's evaluation MAE over the chosen baseline's "
             "(the leaderboard's LODO choice), 95 % paired bootstrap over datasets then cells.",
             ""]
    keys = [(m, t) for m in report["models"] for t in TARGETS]
    lines += ["## Ratio to the chosen baseline, every idea", "",
              "| idea | " + " | ".join(f"{m} / {t}" for m, t in keys) + " |",
              "|---" * (len(keys) + 1) + "|"]
    first = report["models"][keys[0][0]][keys[0][1]]["ideas"]
    for idea in first:
        lines.append(f"| {idea} | " + " | ".join(
            _r(report["models"][m][t]["ideas"][idea]) for m, t in keys) + " |")
    lines += ["", "## What the trajectory adds to the stack (with minus without, MAE pp)", "",
              "| model / target | stack without | stack with | difference [95 %] | ratio [95 %] |",
              "|---|---|---|---|---|"]
    for m, t in keys:
        f = report["models"][m][t]["flips_add"]
        lines.append(f"| {m} / {t} | {f['baseline_mae']:.2f} | {f['mae']:.2f} | "
                     f"{f['diff']:+.2f} [{f['diff_low']:+.2f}, {f['diff_high']:+.2f}] | {_r(f)} |")
    for m, t in keys:
        block = report["models"][m][t]
        lines += ["", f"## {m}, target `{t}`: chosen baseline {block['baseline']} (calib LODO "
                  f"{block['baseline_calib']:.2f})", "",
                  "| idea | choice | calib (nested LODO) | MAE | baseline MAE | ratio [95 %] | "
                  "diff pp [95 %] |", "|---|---|---|---|---|---|---|"]
        for idea, row in block["ideas"].items():
            lines.append(f"| {idea} | {row['choice']} | {row['calib']:.2f} | {row['mae']:.2f} | "
                         f"{row['baseline_mae']:.2f} | {_r(row)} | {row['diff']:+.2f} "
                         f"[{row['diff_low']:+.2f}, {row['diff_high']:+.2f}] |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "quality")
    args = parser.parse_args()
    models = args.models.split(",")
    narrowed = args.models != ",".join(MODELS)
    report = {"command": COMMAND + (f" --models {args.models}" if narrowed else ""),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "models": {m: analyse(args.runs / m) for m in models}}
    write_json_atomic(RESULTS / "quality_beyond.json", report)
    write_bytes_atomic(RESULTS / "quality_beyond.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
