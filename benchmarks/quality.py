"""The offline quality study: the plugin's candidates against every baseline, both offline
models, three stream seeds, the full protocol, calibrated on the meta-set.

One command (after ``benchmarks/protocol_choice.py``, whose per-model choice of learning rate
and step count it reads)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/quality.py

runs, per model (``mnist-cnn``, ``mnist-resnet``), under ``runs/quality/<model>``:

1. into ``eval/``, the 75 evaluation splits of mnist-c (15 corruptions x 5 severities, 2,000
   digits each) at stream seeds 0, 1 and 2;
2. into ``meta/``, the 134 sets of the calibration meta-set (``[suite.mnist-c] calibration =
   "meta-set"``, built from the 500 source-validation digits; 23 families, none an evaluation
   corruption) at stream seed 0: calibration is done once per model;

with the candidates ``CANDIDATES`` and every baseline of plugins.toml on the same cells (one
adaptation trajectory per cell: RDumb at the model's chosen lr, probe 1,000, snapshots up to
its chosen step count), then ``ttabench leaderboard`` with all five map kinds. Every choice is
the leaderboard's: leave-one-dataset-out on the meta-set's families (the chosen baseline and
the chosen candidate of each table, ``[best]`` scores, ``[stack]`` features, map kinds).
Writes ``benchmarks/results/quality.{md,json}``: per model and target the chosen baseline and
candidate and the ratio of their evaluation MAEs with a 95 % bootstrap interval (datasets,
then cells within them, i.e. splits and seeds), each plugin estimator's own LODO-chosen
entry, and the full tables. ``--models``, ``--seeds`` and ``--meta-sets`` narrow;
``--extra-seeds`` adds stream seeds run after the meta-set cells, one severity after the other
in the order of ``--extra-severities`` (all 15 corruptions at each: a run stopped early leaves
every corruption equally covered). The file prints the command with these options and says
what the cells hold (cells and severities per seed, meta-set sets); ``--analyse-only`` scores
and reads the finished cells without running more. Runs resume.

The file ends with what the full study still lacks and its projected cost: per model run, the
missing evaluation cells and meta-set sets at that model's mean measured cell time; per model
not run, its protocol choice and study at the time of one cell, measured by ``--measure-cost``
(``COST_SPLIT``, seed 0, into ``<runs>/<model>/cost``; at mnist-cnn's lr and steps, the shipped
default, when the model has no choice of its own) and scaled by step count (time = the
measured passes + steps x the measured time per adaptation step).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ttabench.records import Cell
from ttabench.scoring import metrics
from ttabench.scoring.leaderboard import load_cells
from ttabench.store import write_bytes_atomic, write_json_atomic
from ttabench.suites.meta_set import DEFAULT_RECIPE, plan_sets
from ttabench.suites.npy_layout import CORRUPTIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol_choice import SETS as CHOICE_SETS  # noqa: E402
from protocol_choice import STEPS_AT  # noqa: E402  (benchmarks/protocol_choice.py)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mnist-cnn", "mnist-resnet")
SEEDS = (0, 1, 2)
CANDIDATES = ("enigma", "enigma-source", "enigma-signals", "enigma-signals-source",
              "enigma-stack", "enigma-stack-source")
TRAJECTORY_STEPS = (50, 100, 200, 400, 990)
KINDS = "lin,quad,iso,logit-lin,logit-quad"
EVAL_SPLITS = ",".join(f"{c}-*" for c in CORRUPTIONS)
SEVERITIES = (1, 2, 3, 4, 5)
N_BOOT = 1000
TARGET_RATIO = 0.70
COMMAND = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/quality.py"
#: The evaluation split of the one cell ``--measure-cost`` times for a model not run.
COST_SPLIT = "jpeg_compression-3"
META_NAMES = [spec.name for spec in plan_sets(DEFAULT_RECIPE, 0)]


def n_selected(selection: str) -> int:
    """How many meta-set sets a ``--splits`` selection of them names."""
    patterns = selection.split(",")
    return sum(any(fnmatch.fnmatchcase(name, p) for p in patterns) for name in META_NAMES)


def chosen_protocol(model: str) -> tuple[float, int]:
    """The lr and step count ``benchmarks/protocol_choice.py`` chose for ``model``."""
    path = RESULTS / "protocol_choice.json"
    try:
        chosen = json.loads(path.read_text())["models"][model]["chosen"]
    except (OSError, KeyError, ValueError):
        sys.exit(f"error: no choice for {model} in {path}; run benchmarks/protocol_choice.py")
    return float(chosen["lr"]), int(chosen["steps"])


def cost_protocol(model: str) -> tuple[float, int]:
    """``model``'s chosen lr and steps, else mnist-cnn's (plugins.toml's shipped values)."""
    try:
        chosen = json.loads((RESULTS / "protocol_choice.json").read_text())["models"]
    except (OSError, ValueError, KeyError):
        chosen = {}
    return chosen_protocol(model if model in chosen else MODELS[0])


def protocol_sets(model: str, protocol: tuple[float, int] | None = None) -> list[str]:
    """The ``--set`` options of the study for ``model`` (meta-set, lr, probe, snapshots), at
    ``protocol`` (lr, steps) when given, else at the model's chosen one."""
    lr, steps = protocol or chosen_protocol(model)
    checkpoints = "[" + ",".join(map(str, [0, *[k for k in TRAJECTORY_STEPS if k <= steps]])) + "]"
    sets = ["suite.mnist-c.calibration=meta-set", f"adapter.rdumb.lr={lr}"]
    for name in CANDIDATES:
        sets += [f"estimator.{name}.probe_size=1000", f"estimator.{name}.checkpoints={checkpoints}"]
        if name in ("enigma", "enigma-source"):
            sets.append(f"estimator.{name}.estimate_at={steps}")
    return [arg for s in sets for arg in ("--set", s)]


def _ttabench(*args: str) -> None:
    cmd = [sys.executable, "-m", "ttabench", *args]
    print("$ ttabench", " ".join(args), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def _common(model: str, protocol: tuple[float, int] | None = None) -> list[str]:
    return ["-m", model, "-e", ",".join(CANDIDATES), "--jobs", "1", "--threads", "1",
            "--map-kinds", "lin", *protocol_sets(model, protocol)]


def measure_cost(folder: Path, model: str) -> None:
    """One cell of the study's estimators on ``COST_SPLIT`` at ``cost_protocol``, into
    ``folder/cost`` (resumes: a finished cell is not timed again)."""
    _ttabench("run", *_common(model, cost_protocol(model)), "--seed", "0",
              "--splits", COST_SPLIT, "-o", str(folder / "cost"))


def run(folder: Path, model: str, seeds: list[int], meta_sets: str,
        extra: tuple[list[int], list[int]] = ([], [])) -> None:
    """The evaluation cells (``seeds``) into ``folder/eval``, the meta-set cells of
    ``meta_sets`` (seed 0) into ``folder/meta`` (two folders: two runs may then proceed side by
    side), then the evaluation cells of the extra seeds, one severity after the other
    (``extra``: seeds, severities in their order)."""
    common = _common(model)
    if seeds:
        _ttabench("run", *common, *[a for s in seeds for a in ("--seed", str(s))],
                  "--splits", EVAL_SPLITS, "-o", str(folder / "eval"))
    _ttabench("run", *common, "--seed", "0", "--splits", meta_sets, "-o", str(folder / "meta"))
    extra_seeds, severities = extra
    for severity in severities if extra_seeds else []:
        _ttabench("run", *common, *[a for s in extra_seeds for a in ("--seed", str(s))],
                  "--splits", ",".join(f"{c}-{severity}" for c in CORRUPTIONS),
                  "-o", str(folder / "eval"))


def score(folder: Path) -> None:
    """``ttabench leaderboard`` over both run folders, written into ``folder``."""
    _ttabench("leaderboard", *map(str, run_folders(folder)), "--output", str(folder),
              "--map-kinds", KINDS, "--n-boot", str(N_BOOT))


def run_folders(folder: Path) -> list[Path]:
    """The study's run folders of one model: evaluation and meta-set cells."""
    return [folder / "eval", folder / "meta"]


def protocol_facts(folder: Path) -> dict:
    """What the finished cells hold: evaluation splits and seeds, meta-set sets and families."""
    cells = [c for c in load_cells(run_folders(folder)) if c.status == "ok"]
    evals = [c for c in cells if c.role == "eval"]
    calib = [c for c in cells if c.role == "calibration"]
    return {"eval_cells": len(evals), "eval_splits": len({c.split["name"] for c in evals}),
            "eval_families": len({c.dataset for c in evals}),
            "seeds": sorted({c.seed for c in evals}),
            "cells_per_seed": {str(s): sum(c.seed == s for c in evals)
                               for s in sorted({c.seed for c in evals})},
            "severities_per_seed": {str(s): sorted({int(c.split["severity"]) for c in evals
                                                    if c.seed == s})
                                    for s in sorted({c.seed for c in evals})},
            "meta_sets": len(calib), "meta_families": len({c.dataset for c in calib})}


def cell_cost(cell: Cell) -> tuple[float, float]:
    """A cell's seconds outside adaptation and per adaptation step (``timings``)."""
    t, steps = cell.timings, int(cell.adaptation.get("steps") or 0)
    adapt = float(t.get("adaptation", 0.0))
    return float(t["total"]) - adapt, adapt / steps if steps else 0.0


def missing_work(folder: Path, protocol: tuple[float, int], meta_sets: str) -> dict | None:
    """What the full study of ``model`` still lacks, with its projected hours: from the
    model's own cells when it was run, else from its ``cost`` cell (None: neither exists).
    A cell at k steps is projected at passes + k x the measured time per step (``cell_cost``);
    the protocol choice's cells (one estimator, no baselines) at the same rate. For a model
    not run: also its protocol choice, and that plus seed 0 with the ``meta_sets`` selection."""
    run_cells = [c for c in load_cells(run_folders(folder)) if c.status == "ok"] \
        if all(f.is_dir() for f in run_folders(folder)) else []
    cost_cells = [c for c in load_cells([folder / "cost"]) if c.status == "ok"] \
        if (folder / "cost").is_dir() else []
    cells = run_cells or cost_cells
    if not cells:
        return None
    fixed, per_step = (float(np.mean(v)) for v in zip(*map(cell_cost, cells)))
    steps = protocol[1]
    evals = {(c.seed, c.split["name"]) for c in run_cells if c.role == "eval"}
    meta = {c.split["name"] for c in run_cells if c.role == "calibration"}
    n_eval = len(SEEDS) * len(CORRUPTIONS) * len(SEVERITIES) - len(evals)
    n_meta = len(META_NAMES) - len(meta)
    hours = (n_eval + n_meta) * (fixed + steps * per_step) / 3600
    out = {"measured_on": "its own cells" if run_cells else f"its cost cell ({COST_SPLIT})",
           "cells_timed": len(cells), "seconds_per_cell": fixed + steps * per_step,
           "steps": steps, "eval_cells_missing": n_eval, "meta_sets_missing": n_meta,
           "hours": hours}
    if not run_cells:
        choice = sum(n_selected(CHOICE_SETS) * (fixed + max(ks) * per_step)
                     for ks in STEPS_AT.values())
        narrowed = (len(CORRUPTIONS) * len(SEVERITIES) + n_selected(meta_sets)) * \
            (fixed + steps * per_step)
        out |= {"protocol_choice_hours": choice / 3600,
                "choice_and_seed0_narrowed_hours": (choice + narrowed) / 3600}
    return out


def ratio_interval(pairs: pd.DataFrame, a: str, b: str) -> tuple[float, float, float]:
    """MAE(a) / MAE(b) on their common eval cells, with a 95 % paired bootstrap interval
    (datasets, then cells within each: ``metrics.boot_mae_samples``)."""
    pa = pairs[pairs["entry"] == a].set_index("key")
    pb = pairs[pairs["entry"] == b].set_index("key")
    keys = sorted(set(pa.index) & set(pb.index))
    datasets = list(pa.loc[keys, "dataset"])
    err_a = np.abs(pa.loc[keys, "estimate"].to_numpy() - pa.loc[keys, "true"].to_numpy())
    err_b = np.abs(pb.loc[keys, "estimate"].to_numpy() - pb.loc[keys, "true"].to_numpy())
    sa = metrics.boot_mae_samples(err_a, datasets, N_BOOT, 0)
    sb = metrics.boot_mae_samples(err_b, datasets, N_BOOT, 0)
    point = metrics.mae_by_dataset(err_a, np.zeros(len(keys)), datasets) / \
        metrics.mae_by_dataset(err_b, np.zeros(len(keys)), datasets)
    low, high = np.quantile(sa / sb, [0.025, 0.975])
    return float(point), float(low), float(high)


def summarize(folder: Path, model: str) -> dict:
    """Per target: the choices, the candidate's ratio, each plugin estimator's own entry."""
    board = json.loads((folder / "leaderboard.json").read_text())
    pairs = pd.read_csv(folder / "pairs.csv")
    out = {"model": model, "online": board["online"][0] if board["online"] else {},
           "statistics": board["statistics"], "facts": protocol_facts(folder), "targets": {}}
    for block in board["targets"]:
        table = block["tables"][0]
        target = block["target"]
        rows = [r for r in table["rows"] if r.get("mae") is not None]
        part = pairs[pairs["target"] == target]
        base, cand = table.get("chosen_baseline"), table.get("chosen_candidate")
        summary = {k: table.get(k) for k in (
            "chosen_baseline", "chosen_calib_loo", "chosen_mae", "chosen_candidate",
            "candidate_calib_loo", "candidate_mae", "best_after_the_fact",
            "best_after_the_fact_mae", "n_calib_datasets")}
        if base and cand:
            summary["ratio"] = ratio_interval(part, cand, base)
        per_estimator = {}
        for name in CANDIDATES:
            mine = [r for r in rows if r["estimator"] == name and r.get("calib_loo") is not None]
            if mine:
                best = min(mine, key=lambda r: (round(r["calib_loo"], 9), r["entry"]))
                per_estimator[name] = {"entry": best["entry"], "calib_loo": best["calib_loo"],
                                       "mae": best["mae"], "input": best.get("input"),
                                       "ratio": ratio_interval(part, best["entry"], base)
                                       if base else None}
        summary["per_estimator"] = per_estimator
        summary["rows"] = [{k: r.get(k) for k in (
            "rank", "entry", "role", "input", "mae", "ci_low", "ci_high", "worst", "calib_loo",
            "vs", "diff", "diff_low", "diff_high", "p_holm")} for r in rows]
        out["targets"][target] = summary
    return out


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _seed_cells(facts: dict, seed: str, n: int) -> str:
    """``0 (75)``, or ``1 (15, severity 3)`` for a seed run on some severities only."""
    severities = facts.get("severities_per_seed", {}).get(seed, list(SEVERITIES))
    if severities == list(SEVERITIES):
        return f"{seed} ({n})"
    return f"{seed} ({n}, severity {', '.join(map(str, severities))})"


def _ratio(r: list[float] | None) -> str:
    return "-" if not r else f"{r[0]:.2f} [{r[1]:.2f}, {r[2]:.2f}]"


def markdown(report: dict) -> str:
    lines = ["# Quality on mnist-c: the plugin's candidates against the baselines, calibrated on "
             "the meta-set (the models, seeds and sets run are in the table below)", "",
             f"`{report['command']}` on {report['date']} ({report['machine']}).", "",
             "Protocol: the evaluation splits of mnist-c (15 corruptions x 5 severities, 2,000 "
             "digits each) at the stream seeds listed below; calibration on the sets of the "
             "meta-set (built from the 500 source-validation digits, no evaluation corruption) "
             "at stream seed 0. RDumb, batch 64, probe 1,000 (stream draw, chunks of 100); the lr "
             "and step count per model were chosen on the meta-set "
             "(`benchmarks/results/protocol_choice.md`): "
             + "; ".join(f"{m} lr {p['lr']:g}, {p['steps']} steps"
                         for m, p in report["protocols"].items()) + ". Every score estimator "
             "maps its score with each of lin, quad, iso, logit-lin, logit-quad, fitted on the "
             "meta-set cells. The chosen baseline and the chosen candidate of a table are the "
             "entries of their role with the lowest leave-one-dataset-out MAE on the meta-set "
             "(families left out whole; `[best]` and `[stack]` entries with their choice inside "
             "the loop); evaluation cells never enter a choice.", "",
             "| model | evaluation cells | splits (families) | seeds (cells each) | meta-set "
             "sets (families) |", "|---|---|---|---|---|",
             *[f"| {m['model']} | {f['eval_cells']} | {f['eval_splits']} ({f['eval_families']}) "
               f"| {', '.join(_seed_cells(f, s, n) for s, n in f['cells_per_seed'].items())} | "
               f"{f['meta_sets']} ({f['meta_families']}) |"
               for m in report["models"] for f in [m["facts"]]], "",
             report["models"][0]["statistics"], "",
             "## The target: a plugin estimator at <= 0.70x the chosen same-view baseline", "",
             "Ratio = evaluation MAE of the chosen candidate / that of the chosen baseline, 95 % "
             "paired bootstrap interval over datasets, then cells (splits and seeds) within them.",
             "", "| model | target | chosen baseline (calib LODO) | its MAE | chosen candidate "
             "(calib LODO) | its MAE | ratio [95 %] | <= 0.70 | best baseline after the fact |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in report["models"]:
        for target in ("source", "bn"):
            t = model["targets"][target]
            met = "yes" if t.get("ratio") and t["ratio"][0] <= TARGET_RATIO else "no"
            lines.append(
                f"| {model['model']} | {target} | {t['chosen_baseline']} "
                f"({_f(t['chosen_calib_loo'])}) | {_f(t['chosen_mae'])} | "
                f"{t['chosen_candidate']} ({_f(t['candidate_calib_loo'])}) | "
                f"{_f(t['candidate_mae'])} | {_ratio(t.get('ratio'))} | {met} | "
                f"{t['best_after_the_fact']} ({_f(t['best_after_the_fact_mae'])}) |")
    lines += ["", "## Each plugin estimator: its own entry chosen by LODO, against the chosen "
              "baseline", "", "| model | target | estimator | entry (calib LODO) | input | MAE | "
              "ratio [95 %] |", "|---|---|---|---|---|---|---|"]
    for model in report["models"]:
        for target in ("source", "bn"):
            for name, e in model["targets"][target]["per_estimator"].items():
                lines.append(f"| {model['model']} | {target} | {name} | {e['entry']} "
                             f"({_f(e['calib_loo'])}) | {e['input'] or '-'} | {_f(e['mae'])} | "
                             f"{_ratio(e['ratio'])} |")
    for model in report["models"]:
        online = model["online"]
        lines += ["", f"## {model['model']}", "",
                  f"Mean accuracy over the evaluation cells: source "
                  f"{_f(online.get('source'), '.1f')} %, bn {_f(online.get('bn'), '.1f')} %, "
                  f"adapted {_f(online.get('adapted'), '.1f')} %."]
        for target, t in model["targets"].items():
            lines += ["", f"### Target `{target}`", "",
                      "| rank | entry | role | MAE | 95% CI | worst | calib LODO | vs chosen "
                      "baseline |", "|---|---|---|---|---|---|---|---|"]
            for r in t["rows"]:
                diff = ("-" if r["diff"] is None else
                        f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}], "
                        f"p_holm {r['p_holm']:.3f}")
                lines.append(f"| {r['rank']} | {r['entry']} | {r['role']} | {_f(r['mae'])} | "
                             f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}] | {_f(r['worst'])} | "
                             f"{_f(r['calib_loo'])} | {diff} |")
    return "\n".join(lines + missing_markdown(report)) + "\n"


def missing_markdown(report: dict) -> list[str]:
    """The section on what the full study still lacks and its projected hours."""
    lines = ["", "## Not run: what the full study (both models, seeds 0-2, every meta-set set) "
             "still lacks", "",
             "Projected from the cell times recorded in the cells (passes + steps x the time "
             "per adaptation step; one thread per cell), not counting scoring; the machine is "
             "shared, so a time holds the load of its moment.", ""]
    run_models = {m["model"] for m in report["models"]}
    for model, w in report["missing"].items():
        if w is None:
            lines.append(f"- `{model}`: not run, no cell timed (`--measure-cost` times one).")
            continue
        timed = "1 cell" if w["cells_timed"] == 1 else f"the mean of {w['cells_timed']} cells"
        cost = (f"{w['seconds_per_cell']:.1f} s per cell at {w['steps']} steps ({timed}, "
                f"{w['measured_on']})")
        missing = (f"{w['eval_cells_missing']} evaluation cells and {w['meta_sets_missing']} "
                   f"meta-set sets, {w['hours']:.1f} h")
        if model in run_models:
            lines.append(f"- `{model}`: lacks {missing}; {cost}.")
        else:
            lines.append(
                f"- `{model}`: not run. It has no lr and step count of its own: its protocol "
                f"choice (`benchmarks/protocol_choice.py --models {model}`) is projected at "
                f"{w['protocol_choice_hours']:.1f} h, that plus seed 0 with the meta-set sets "
                f"run here {w['choice_and_seed0_narrowed_hours']:.1f} h, the full study "
                f"({missing}) then; {cost}, at mnist-cnn's lr and steps (longer if its own "
                f"choice takes more steps).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)),
                        help="stream seeds of the evaluation cells")
    parser.add_argument("--meta-sets", default="meta-*",
                        help="the meta-set sets run for calibration (a --splits selection)")
    parser.add_argument("--extra-seeds", default="",
                        help="stream seeds run after the meta-set, severity by severity")
    parser.add_argument("--extra-severities", default=",".join(map(str, SEVERITIES)),
                        help="the extra seeds' severities, in the order they run")
    parser.add_argument("--measure-cost", action="store_true",
                        help="time one cell of each model left out of --models")
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    seeds, extra_seeds, severities = (
        [int(s) for s in text.split(",") if s]
        for text in (args.seeds, args.extra_seeds, args.extra_severities))
    if not set(severities) <= set(SEVERITIES) or len(set(severities)) != len(severities) \
            or not severities:
        sys.exit(f"error: --extra-severities must be among {SEVERITIES}")
    absent = [m for m in MODELS if m not in models]
    for model in absent if args.measure_cost and not args.analyse_only else []:
        measure_cost(args.runs / model, model)
    for model in models:
        if not args.analyse_only:
            run(args.runs / model, model, seeds, args.meta_sets, (extra_seeds, severities))
        score(args.runs / model)
    # the command that runs (resuming) and scores these very cells
    options = [f"--models {args.models}"] if args.models != ",".join(MODELS) else []
    options += [f"--seeds {args.seeds}"] if args.seeds != ",".join(map(str, SEEDS)) else []
    options += [f"--meta-sets '{args.meta_sets}'"] if args.meta_sets != "meta-*" else []
    options += [f"--extra-seeds {args.extra_seeds}"] if extra_seeds else []
    options += [f"--extra-severities {args.extra_severities}"] \
        if extra_seeds and severities != list(SEVERITIES) else []
    options += ["--measure-cost"] if args.measure_cost else []
    report = {
        "command": " ".join([COMMAND, *options]), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "protocols": {m: dict(zip(("lr", "steps"), chosen_protocol(m))) for m in models},
        "models": [summarize(args.runs / m, m) for m in models],
        "missing": {m: missing_work(args.runs / m, chosen_protocol(m) if m in models
                                    else cost_protocol(m), args.meta_sets) for m in MODELS},
    }
    RESULTS.mkdir(exist_ok=True)
    write_json_atomic(RESULTS / "quality.json", report)
    write_bytes_atomic(RESULTS / "quality.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
