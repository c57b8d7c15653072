"""The model-pool study: WF and its family against the estimators that compare models.

One command::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pool.py

runs (or resumes) one ``ttabench run`` of the seven-model pool ``mnist-pool`` on mnist-c
(``RUN_COMMAND``: RDumb, severity 3, stream seed 0, the plugin's baseline roster, WF's
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
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
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
               "-e", ",".join(FAMILY + POOL), "--severities", "3", "--seed", "0",
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


# --------------------------------------------------------------------------- analysis


def _loo_pick(rows, names) -> dict | None:
    """Among the rows of ``names``'s entries, the one with the lowest calibration
    leave-one-dataset-out MAE (``calib_loo``; a direct entry: its MAE on calibration)."""
    import math

    found = [r for r in rows if r["estimator"] in names and r["calib_loo"] is not None
             and not math.isnan(r["calib_loo"]) and r["mae"] is not None
             and not math.isnan(r["mae"])]
    return min(found, key=lambda r: (r["calib_loo"], r["entry"])) if found else None


def _pairs(board, model: str, target: str, entry: str):
    rows = board.pairs[(board.pairs["model"] == model) & (board.pairs["target"] == target)
                       & (board.pairs["entry"] == entry)]
    return rows.set_index("key")


def _versus(board, model: str, target: str, a: str, b: str) -> dict:
    """``MAE_a - MAE_b`` and ``MAE_a / MAE_b`` on the eval cells both cover, with paired
    bootstrap intervals (datasets, then splits; the two MAEs on the same resamples)."""
    import numpy as np

    from ttabench.scoring import metrics

    pa, pb = _pairs(board, model, target, a), _pairs(board, model, target, b)
    keys = sorted(set(pa.index) & set(pb.index))
    est_a, est_b = pa.loc[keys, "estimate"].to_numpy(), pb.loc[keys, "estimate"].to_numpy()
    true = pa.loc[keys, "true"].to_numpy()
    datasets = pa.loc[keys, "dataset"].tolist()
    diff = metrics.paired_difference(est_a, est_b, true, datasets, n_boot=N_BOOT, seed=0)
    boot_a = metrics.boot_mae_samples(np.abs(est_a - true), datasets, N_BOOT, 0, "dataset")
    boot_b = metrics.boot_mae_samples(np.abs(est_b - true), datasets, N_BOOT, 0, "dataset")
    ratio_low, ratio_high = metrics.percentile_interval(boot_a / boot_b, 0.95)
    mae_a = metrics.mae_by_dataset(est_a, true, datasets)
    mae_b = metrics.mae_by_dataset(est_b, true, datasets)
    return {"a": a, "b": b, "mae_a": mae_a, "mae_b": mae_b, "diff": diff.difference,
            "diff_low": diff.low, "diff_high": diff.high, "p": diff.p_value,
            "ratio": mae_a / mae_b, "ratio_low": ratio_low, "ratio_high": ratio_high,
            "cells": len(keys)}


def analyse(folder: Path) -> dict:
    """Score the run's cells and gather the study's tables (module docstring)."""
    from ttabench.scoring.leaderboard import build_leaderboard, load_cells
    from ttabench.spec import ScoringSpec

    cells = load_cells([folder])
    board = build_leaderboard(cells, ScoringSpec(map_kinds=tuple(MAP_KINDS.split(",")),
                                                 n_boot=N_BOOT))
    table = [dict(r) for r in board.table.to_dict("records")]
    for r in table:
        for k, v in r.items():
            if v is not None and not isinstance(v, (str, bool, int, float)):
                r[k] = None if str(v) in ("<NA>", "nan") else v
    models = sorted({r["model"] for r in table}, key=lambda m: (m not in OFFLINE_MODELS, m))
    result: dict = {"models": models, "per_target": {}, "cells": len(cells)}
    for target in ("source", "bn", "adapted"):
        per_model = {}
        for model in models:
            rows = [r for r in table if r["model"] == model and r["target"] == target]
            choice = board.choices[(board.choices["model"] == model)
                                   & (board.choices["target"] == target)].iloc[0]
            wf = _loo_pick(rows, FAMILY)
            pool_rows = {name: next((r for r in rows if r["entry"] == name), None)
                         for name in POOL}
            candidate = _loo_pick(rows, FAMILY + POOL)
            chosen = choice["chosen_baseline"]
            entry = {
                "chosen_baseline": chosen, "baseline_loo": choice["chosen_calib_loo"],
                "baseline_mae": choice["chosen_mae"],
                "best_after_the_fact": choice["best_after_the_fact"],
                "best_after_the_fact_mae": choice["best_after_the_fact_mae"],
                "wf": wf and {k: wf[k] for k in ("entry", "mae", "ci_low", "ci_high", "calib_loo")},
                "pool": {n: r and {k: r[k] for k in ("mae", "ci_low", "ci_high", "calib_loo",
                                                     "note")} for n, r in pool_rows.items()},
                "candidate": candidate and {k: candidate[k] for k in ("entry", "mae", "calib_loo")},
                "vs_baseline": {},
            }
            names = [r["entry"] for r in (wf, candidate, *pool_rows.values())
                     if r is not None and r.get("mae") is not None]
            for name in dict.fromkeys(names):
                if chosen is not None:
                    entry["vs_baseline"][name] = _versus(board, model, target, name, chosen)
            if wf is not None and pool_rows["ttaline"] is not None \
                    and pool_rows["ttaline"]["mae"] is not None:
                entry["wf_vs_ttaline"] = _versus(board, model, target, wf["entry"], "ttaline")
            per_model[model] = entry
        cross = board.cross_model[board.cross_model["target"] == target]
        result["per_target"][target] = {"models": per_model,
                                        "cross_model": cross.to_dict("records"),
                                        "summary": summary(per_model)}
    adapted = board.pairs[board.pairs["target"] == "adapted"]
    both = adapted[adapted["entry"].isin(["ttaline", "aline-d"])].pivot_table(
        index="key", columns="entry", values="estimate")
    result["ttaline_minus_aline_d_adapted"] = (
        float((both["ttaline"] - both["aline-d"]).abs().max()) if both.shape[1] == 2 else None)
    return result


def summary(per_model: dict) -> dict:
    """Over the models of one target: the mean MAE of each column of the table, and how often
    WF (its LOO-chosen entry) is better, worse or neither against TTALine and the chosen
    baseline (the paired difference's interval excluding 0 or not)."""
    import numpy as np

    def mean(values: list) -> float | None:
        found = [v for v in values if v is not None and not np.isnan(v)]
        return float(np.mean(found)) if len(found) == len(values) else None

    out: dict = {"mean_mae": {
        "baseline": mean([e["baseline_mae"] for e in per_model.values()]),
        "wf": mean([e["wf"]["mae"] if e["wf"] else None for e in per_model.values()]),
        **{n: mean([e["pool"][n]["mae"] if e["pool"][n] else None for e in per_model.values()])
           for n in POOL}}}

    def count(pairs: list[dict | None]) -> dict:
        tally = {"wf better": 0, "wf worse": 0, "neither": 0}
        for vs in pairs:
            if vs is None:
                continue
            key = ("wf better" if vs["diff_high"] < 0 else "wf worse" if vs["diff_low"] > 0
                   else "neither")
            tally[key] += 1
        return tally

    out["vs_ttaline"] = count([e.get("wf_vs_ttaline") for e in per_model.values()])
    out["vs_baseline"] = count([e["vs_baseline"].get(e["wf"]["entry"]) if e["wf"] else None
                                for e in per_model.values()])
    return out


# --------------------------------------------------------------------------- the report


def _num(value, digits: int = 2) -> str:
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(r) + " |" for r in rows]]


def _mae(entry: dict | None) -> str:
    return "-" if not entry or entry.get("mae") is None else (
        f"{_num(entry['mae'])} [{_num(entry['ci_low'])}, {_num(entry['ci_high'])}]")


def _ratio(vs: dict | None) -> str:
    return "-" if not vs else (f"{vs['ratio']:.2f} [{vs['ratio_low']:.2f}, "
                               f"{vs['ratio_high']:.2f}]")


def _diff(vs: dict | None) -> str:
    return "-" if not vs else (f"{vs['diff']:+.2f} [{vs['diff_low']:+.2f}, "
                               f"{vs['diff_high']:+.2f}] p {vs['p']:.3f}")


def _target_section(result: dict, target: str) -> list[str]:
    per = result["per_target"][target]["models"]
    lines = [f"### Target `{target}`", "",
             "MAE (pp) on the evaluation splits [95% interval]. Baseline: the table's chosen "
             "baseline (lowest calibration leave-one-dataset-out MAE among the single-model "
             "baselines). WF: the entry of WF's family (enigma, enigma-source, "
             "enigma-unweighted, enigma+ts; each signal and map kind) with the lowest "
             "calibration leave-one-dataset-out MAE. Candidate: the same choice over WF's "
             "family and the four pool estimators.", ""]
    rows = []
    for model, e in per.items():
        rows.append([f"`{model}`", f"{e['chosen_baseline'] or '-'} {_num(e['baseline_mae'])}",
                     f"{e['wf']['entry'] if e['wf'] else '-'} {_mae(e['wf'])}",
                     *[_mae(e["pool"][n]) for n in POOL],
                     f"{e['candidate']['entry'] if e['candidate'] else '-'} "
                     f"{_num(e['candidate']['mae']) if e['candidate'] else ''}"])
    lines += _table(["model", "baseline (LOO)", "WF (LOO)", *POOL, "candidate (LOO)"], rows)
    head = []
    for model, e in per.items():
        vs = e.get("wf_vs_ttaline")
        if vs:
            winner = "WF" if vs["diff_high"] < 0 else "TTALine" if vs["diff_low"] > 0 else "neither (interval holds 0)"
            head.append([f"`{model}`", vs["a"], _num(vs["mae_a"]), _num(vs["mae_b"]),
                         _diff(vs), winner])
    lines += ["", f"WF against TTALine (paired difference WF - TTALine, pp; negative: WF better; "
                  f"{target} accuracy):", ""]
    lines += _table(["model", "WF entry", "WF MAE", "TTALine MAE", "difference", "better"],
                    head) if head else ["(TTALine has no result in this table)"]
    cross = result["per_target"][target]["cross_model"]
    wanted = [r for r in cross if r["entry"] in POOL
              or r["entry"].split(" ")[0] in FAMILY and r["entry"].endswith("(lin)")]
    top = [r for r in cross if r not in wanted][:6]
    lines += ["", "Cross-model rank correlation (Spearman of estimated vs true accuracy across the "
              "seven models, per split; mean per dataset, then over datasets) for the pool "
              "estimators, WF's family with linear maps, and the six best other entries:", ""]
    lines += _table(["entry", "Spearman [95%]", "splits"],
                    [[r["entry"], f"{_num(r['spearman'])} [{_num(r['ci_low'])}, "
                      f"{_num(r['ci_high'])}]", str(r["n_splits"])]
                     for r in sorted(wanted + top, key=lambda r: -r["spearman"])])
    return lines


def markdown(result: dict) -> str:
    """``benchmarks/results/pool.md`` from the study's result."""
    lines = ["# Model pool study: WF against the estimators that compare models", "",
             f"Written by `OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/pool.py` on "
             f"{result['date']} (2 shared CPU cores; load average after: "
             f"{', '.join(f'{x:.1f}' for x in result['load_after'])}). The run it scores:", "",
             "```bash", result["run_command"], "```", "",
             f"{result['cells']} cells: seven models (`mnist-pool`: "
             f"{', '.join(f'`{m}`' for m in result['models'])}) x 20 splits of mnist-c at "
             "severity 3 (15 evaluation corruptions; 4 holdout corruptions and clean for "
             "calibration), RDumb (lr 2.5e-3), 100 adaptation steps of 64 images, stream "
             "seed 0. WF's family snapshots a 1,000-image probe at steps 0, 50 and 100 (the "
             "plugin's default roster goes to 200; 100 halves the run on this machine). "
             "The pool estimators are computed from the run's logit cache once every model's "
             "cells are done, each cell with the six other models' outputs of the same view. "
             f"Scoring: map kinds {MAP_KINDS}, {N_BOOT} bootstrap resamples over datasets then "
             "splits; every choice is made on the five calibration datasets, leaving one "
             "whole dataset out at a time.", ""]
    if result.get("wall_s"):
        lines += [f"Wall time of the run: {result['wall_s'] / 60:.1f} min."]
    lines += ["", "## The target: <= 0.70x the MAE of the best single-model baseline, "
              "`source` table, both offline models", ""]
    rows = []
    reached = {}
    for model in OFFLINE_MODELS:
        e = result["per_target"]["source"]["models"].get(model)
        if e is None:
            continue
        for name, vs in e["vs_baseline"].items():
            rows.append([f"`{model}`", f"{e['chosen_baseline']} ({_num(e['baseline_mae'])})",
                         name + (" (LOO candidate)" if e["candidate"] and
                                 name == e["candidate"]["entry"] else ""),
                         _num(vs["mae_a"]), _ratio(vs)])
            reached.setdefault(name, []).append(vs["ratio"] <= 0.70)
    lines += _table(["model", "chosen baseline (MAE)", "estimator", "MAE", "ratio [95%]"], rows)
    both = [n for n, ok in reached.items() if len(ok) == len(OFFLINE_MODELS) and all(ok)]
    lines += ["", "Reached by: " + (", ".join(both) if both else
                                    "**no estimator** (on both models at once)") + ".", ""]
    lines += ["## Summary over the seven models", "",
              "Mean MAE (pp) over the models of each column (LOO-chosen entries as in the "
              "tables below), and in how many models WF's LOO-chosen entry is better, worse or "
              "neither (paired interval holding 0) than TTALine and than the chosen baseline:",
              ""]
    rows = []
    for target in ("source", "bn", "adapted"):
        summ = result["per_target"][target]["summary"]
        means = summ["mean_mae"]
        rows.append([f"`{target}`", _num(means["baseline"]), _num(means["wf"]),
                     *[_num(means[n]) for n in POOL],
                     "{wf better}/{wf worse}/{neither}".format(**summ["vs_ttaline"]),
                     "{wf better}/{wf worse}/{neither}".format(**summ["vs_baseline"])])
    lines += _table(["target", "baseline", "WF", *POOL, "WF vs TTALine (better/worse/neither)",
                     "WF vs baseline (better/worse/neither)"], rows)
    same = result.get("ttaline_minus_aline_d_adapted")
    lines += ["", "TTALine estimates the adapted models' accuracy (target `adapted`); computed in "
              "the adapted view only, it is scored in every table like WF. In the `adapted` "
              "table it is ALine-D on the adapted view (largest difference of their estimates "
              f"there: {_num(same, 6)}). Calibration has five datasets with one split each at "
              "severity 3, so leaving one calibration cell out is leaving one dataset out.", ""]
    lines += ["## Per target", ""]
    for target in ("source", "bn", "adapted"):
        lines += _target_section(result, target) + [""]
    cost = result["cost"]
    phases = result["phases_seconds"]
    lines += ["## Cost", "",
              f"Computing GDE, ALine-S, ALine-D and TTALine for all {cost['cells']} cells from "
              f"the logit cache took {cost['rescore_s']:.1f} s with {cost['module_calls']} "
              f"`nn.Module` calls (no model is loaded); the cells themselves took "
              f"{cost['cells_total_s']:.0f} s in all (summed cell time), so adding the four "
              f"estimators to the finished run cost {cost['rescore_s'] / cost['cells_total_s']:.4f}x "
              "a rerun of its cells (measured in the same sitting as the analysis; the run's own "
              f"pool phase: {phases.get('pool estimators', float('nan')):.1f} s).", ""]
    return "\n".join(lines) + "\n"


def rescore_cost(folder: Path) -> dict:
    """Time computing the four pool estimators for every cell from the logit cache (what
    ``ttabench leaderboard --rescore -e gde,aline-s,aline-d,ttaline`` computes, without
    rewriting the cells), counting every ``nn.Module`` call meanwhile, against the summed
    cell time of the run (what a rerun of its cells costs)."""
    import torch

    from ttabench.runner.benchmark import _instantiate, plugin_record
    from ttabench.runner.rescore import folder_cache, score_from_cache
    from ttabench.scoring.leaderboard import load_cells

    cells = load_cells([folder])
    estimators = {name: _instantiate("estimators", name, {}) for name in POOL}
    calls = {"n": 0}
    original = torch.nn.Module.__call__

    def counting(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    torch.nn.Module.__call__ = counting  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        score_from_cache(cells, estimators, {}, folder_cache(folder),
                         lambda name: plugin_record("estimators", name))
        seconds = time.perf_counter() - start
    finally:
        torch.nn.Module.__call__ = original  # type: ignore[method-assign]
    cell_seconds = sum(c.timings.get("total", 0.0) for c in cells if c.status == "ok")
    return {"rescore_s": seconds, "module_calls": calls["n"], "cells": len(cells),
            "cells_total_s": cell_seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_RUN)
    parser.add_argument("--analyse-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.analyse_only:
        wall = collect(args.output)
        (args.output / "study_wall.json").write_text(json.dumps({"wall_s": wall}) + "\n")
    result = analyse(args.output)
    result["run_command"] = shlex.join(run_command(args.output))
    result["cost"] = rescore_cost(args.output)
    record = json.loads((args.output / "run.json").read_text())
    result["phases_seconds"] = record.get("phases_seconds", {})
    wall_file = args.output / "study_wall.json"
    result["wall_s"] = json.loads(wall_file.read_text())["wall_s"] if wall_file.exists() else None
    result["load_after"] = os.getloadavg()
    result["date"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    (RESULTS / "pool.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / "pool.md").write_text(markdown(result))


if __name__ == "__main__":
    main()
