"""Continual TTA on mnist-c through the one runner: source, Tent, RDumb, guard:tent, guard:rdumb;
per-window estimates of the online accuracy.

    python benchmarks/continual.py fit   # calibration streams -> ttabench_enigma/guards/mnist-cnn.json
    python benchmarks/continual.py run   # evaluation streams  -> benchmarks/results/continual.*

Every cell is a ``continual`` stream of ``ttabench run`` (``ttabench.runner``), what
``ttabench run --stream continual --steps-per-split 30 --window 15 --order-seed O --seed S``
runs for one adapter.

``fit`` uses calibration streams only (mnist-c's 4 holdout corruptions at severities 3-5, order
seed 0, seed 0): it fits the online estimate's coefficients by least squares on the windows of
Tent at both learning rates, and picks the guard's collapse threshold from a grid by the
guard:tent online accuracy averaged over both rates. ``run`` runs the evaluation streams (the 15
corruptions at severity 5 in ``ORDERS`` seeded orders, no reset) for every method at both
learning rates and ``SEEDS``, with the per-window estimators on Tent's runs; then writes the
JSON/Markdown summary and the plots. Intervals resample orders, then seeds within each (the
units that differ between repeats). The fitted estimator (enigma-online) and the unfitted ones
(aetta, ac) are compared in separate tables. Cells are kept under ``--work`` (default
/tmp/continual-bench), so a rerun resumes; two worker processes, one thread each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE, MODEL = "mnist-c", "mnist-cnn"
SETTINGS = ROOT / "ttabench_enigma" / "guards" / "mnist-cnn.json"
LR_COLLAPSE = 1e-1  # Tent collapses on the calibration streams (see fit's output)
LR_LOW = 1e-3       # Tent does not collapse
METHODS = ("source", "tent", "rdumb", "guard:tent", "guard:rdumb")
ORDERS = (0, 1, 2)
SEEDS = (0, 1, 2)
STEPS_PER_SPLIT = 30
WINDOW = 15
THRESHOLDS = (0.2, 0.4)
N_BOOT = 2000
FITTED = ("enigma-online",)
UNFITTED = ("aetta", "ac")
HOLDOUT = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
EVAL_SEVERITIES, HOLDOUT_SEVERITIES = [5], [3, 4, 5]
EVAL = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression")


def _params(method: str, lr: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {} if method == "source" else {"lr": lr, **(extra or {})}


def run_cells(work: Path, method: str, lr: float, estimators: tuple[str, ...], *,
              splits: tuple[str, ...], severities: list[int], orders: tuple[int, ...],
              seeds: tuple[int, ...], extra: dict[str, Any] | None = None) -> list[Any]:
    """The continual cells of one method at one learning rate (every order and seed), run
    through the one runner into ``work`` (finished cells are skipped), as typed cells."""
    from ttabench.runner.benchmark import Benchmark, collect_cells, pending_cells
    from ttabench.runner.executor import run_cells as execute
    from ttabench.runner.pool import PoolBackend
    from ttabench.spec import RunSpec, StreamSpec

    spec = RunSpec(suite=SUITE, model=MODEL, adapters=[method],
                   estimators=list(estimators), seeds=list(seeds), splits=list(splits),
                   severities=severities, device="cpu", threads=1, jobs=2,
                   adapter_params={method: _params(method, lr, extra)},
                   estimator_params={"enigma-online": {"window": WINDOW}},
                   stream=StreamSpec(kind="continual", steps_per_split=STEPS_PER_SPLIT,
                                     window=WINDOW, order_seeds=orders))
    bench = Benchmark(spec)
    plans = bench.plan()
    todo = pending_cells(plans, work, None)
    if todo:
        execute(bench, todo, work, PoolBackend(min(2, len(todo))), progress=True)
    cells = collect_cells(work, plans)
    failed = [c for c in cells if c.status != "ok"]
    if failed or len(cells) != len(plans):
        raise SystemExit(f"{method} lr {lr}: {len(failed)} failed cell(s): "
                         f"{failed[0].error if failed else 'missing'}")
    return cells


# ------------------------------------------------------------------------------ fit


def fit(work: Path) -> None:
    from ttabench.store import write_json_atomic

    calibration = dict(splits=HOLDOUT, severities=HOLDOUT_SEVERITIES, orders=(0,), seeds=(0,))
    trajectories = [c for lr in (LR_COLLAPSE, LR_LOW)
                    for c in run_cells(work / "calibration", "tent", lr, FITTED, **calibration)]
    features, truth = [], []
    for cell in trajectories:
        rows = [w.scores for w in cell.estimators["enigma-online"].windows]
        features += [[1.0, r["conf"], r["flips"], r["collapse"]] for r in rows]
        truth += cell.windows.accuracy
    coefficients, *_ = np.linalg.lstsq(np.array(features), np.array(truth), rcond=None)
    print("online coefficients", coefficients.round(4).tolist())
    scores = {}
    for threshold in THRESHOLDS:
        guarded = [c for lr in (LR_COLLAPSE, LR_LOW)
                   for c in run_cells(work / "calibration", "guard:tent", lr, (), **calibration,
                                      extra={"threshold": threshold})]
        scores[threshold] = float(np.mean([c.targets["adapted"] for c in guarded]))
        print(f"threshold {threshold}: guard:tent calibration online accuracy "
              f"{100 * scores[threshold]:.2f}%")
    best = max(THRESHOLDS, key=lambda t: (round(scores[t], 4), t))
    tent = {f"tent lr {c.protocol['adapter']['params']['lr']:g}": c.targets["adapted"]
            for c in trajectories}
    record = {
        "schema": "ttabench_enigma.guard/1", "id": "mnist-cnn", "model": "mnist-cnn:0",
        "guard": {"threshold": best, "patience": 2, "check_every": 5, "probe_batches": 2,
                  "min_steps": 10},
        "online": {"coefficients": [round(float(c), 6) for c in coefficients]},
        "fitted_on": {"suite": "mnist-c",
                      "stream": {"kind": "continual", "order_seed": 0, "role": "calibration",
                                 "severities": [3, 4, 5], "steps_per_split": STEPS_PER_SPLIT,
                                 "window": WINDOW},
                      "splits": "calibration splits only (holdout corruptions)",
                      "online": "least squares on the windows of tent at lr "
                                f"{LR_COLLAPSE:g} and {LR_LOW:g}, seed 0",
                      "guard": f"threshold grid {list(THRESHOLDS)}: best mean online accuracy "
                               f"of guard:tent at lr {LR_COLLAPSE:g} and {LR_LOW:g}, seed 0",
                      "grid_online_accuracy": {str(t): s for t, s in scores.items()},
                      "unguarded_online_accuracy": tent},
    }
    write_json_atomic(SETTINGS, record)
    print(f"wrote {SETTINGS} (threshold {best})")


# ------------------------------------------------------------------------------ run


def two_level_interval(values: dict[tuple[Any, int], float], n_boot: int = N_BOOT,
                       seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (one per (order, seed) cell, or per
    (dataset, seed)): each resample draws orders with replacement, then seeds with replacement
    within each drawn order (the two sources of variation between repeats)."""
    rng = np.random.default_rng(seed)
    orders = sorted({o for o, _ in values})
    by_order = {o: np.array([v for (oo, _), v in sorted(values.items()) if oo == o])
                for o in orders}
    means = np.empty(n_boot)
    for b in range(n_boot):
        picked = rng.choice(orders, size=len(orders))
        means[b] = np.mean([by_order[o][rng.integers(0, len(by_order[o]), len(by_order[o]))].mean()
                            for o in picked])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _key(cell: Any) -> tuple[int, int]:
    return int(cell.protocol["stream"]["order_seed"]), int(cell.seed)


def _window_mae(cell: Any, name: str) -> float:
    """``(1/n) sum_w |estimate_w - acc_w|`` over the cell's windows (a fraction)."""
    est = np.array([w.estimate for w in cell.estimators[name].windows], dtype=float)
    return float(np.abs(est - np.array(cell.windows.accuracy)).mean())


def summarize(cells: dict[tuple[str, float], list[Any]]) -> dict[str, Any]:
    first = cells[("source", 0.0)][0]
    out: dict[str, Any] = {"stream": {k: v for k, v in first.protocol["stream"].items()
                                      if k not in ("order", "order_seed")},
                           "orders": {}, "lrs": {}}
    for cell in cells[("source", 0.0)]:
        out["orders"][str(_key(cell)[0])] = cell.protocol["stream"]["order"]
    for lr in (LR_COLLAPSE, LR_LOW):
        runs = {m: {_key(c): c for c in cells[(m, 0.0 if m == "source" else lr)]}
                for m in METHODS}
        table = {}
        for method in METHODS:
            acc = {k: c.targets["adapted"] for k, c in runs[method].items()}
            lo, hi = two_level_interval(acc)
            table[method] = {
                "online_accuracy": float(np.mean(list(acc.values()))), "interval": [lo, hi],
                "per_order": {str(o): float(np.mean([v for (oo, _), v in acc.items() if oo == o]))
                              for o in ORDERS},
                "resets_per_cell": float(np.mean([len([t for t in c.windows.reset_steps if t > 0])
                                                  for c in runs[method].values()])),
                "guard_resets_per_cell": float(np.mean([
                    c.adaptation["adapter_counters"].get("guard_resets", 0)
                    for c in runs[method].values()]))}
        best = max(("tent", "rdumb"), key=lambda m: table[m]["online_accuracy"])
        comparisons = {}
        for method, against in (("guard:tent", best), ("guard:tent", "tent"),
                                ("guard:rdumb", "rdumb")):
            diffs = {k: runs[method][k].targets["adapted"] - runs[against][k].targets["adapted"]
                     for k in runs[method]}
            lo, hi = two_level_interval(diffs)
            comparisons[f"{method} - {against}"] = {
                "mean_pp": 100 * float(np.mean(list(diffs.values()))),
                "interval_pp": [100 * lo, 100 * hi], "cells": len(diffs),
                "min_pp": 100 * min(diffs.values()), "max_pp": 100 * max(diffs.values())}
        estimators = {}
        for group, names in (("fitted", FITTED), ("unfitted", UNFITTED)):
            for name in names:
                mae = {k: _window_mae(c, name) for k, c in runs["tent"].items()}
                lo, hi = two_level_interval(mae)
                estimators[name] = {
                    "group": group, "mae_pp": 100 * float(np.mean(list(mae.values()))),
                    "interval_pp": [100 * lo, 100 * hi], "cells": len(mae),
                    "windows": sum(len(c.windows.accuracy) for c in runs["tent"].values())}
        out["lrs"][f"{lr:g}"] = {"methods": table, "best_unguarded": best,
                                 "comparisons": comparisons, "estimators": estimators}
    return out


def plot(cells: dict[tuple[str, float], list[Any]], path: Path, lr: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    ax = fig.subplots()
    colours = dict(zip(METHODS, ("grey", "tab:red", "tab:blue", "tab:orange", "tab:green")))
    first = None
    for method in METHODS:
        run = next(c for c in cells[(method, 0.0 if method == "source" else lr)]
                   if _key(c) == (ORDERS[0], SEEDS[0]))
        first = first or run
        acc = np.array(run.windows.accuracy) * 100
        steps = (np.arange(len(acc)) + 1) * WINDOW
        ax.plot(steps, acc, color=colours[method], label=method, lw=1.3)
        for step in run.adaptation["adapter_counters"].get("guard_reset_steps", []):
            ax.axvline(step, color=colours[method], ls=":", lw=0.8, alpha=0.7)
        if method == "tent":
            for name in (*FITTED, *UNFITTED):
                est = [100 * w.estimate for w in run.estimators[name].windows]
                ax.plot(steps, est, ls="--", lw=1, label=f"{name} estimate (tent)")
    for k, name in enumerate(first.protocol["stream"]["order"]):
        ax.text(k * STEPS_PER_SPLIT + 2, 2, name.split("-")[0][:8], fontsize=6, rotation=90)
    ax.set_xlabel("adaptation step")
    ax.set_ylabel(f"online accuracy per window of {WINDOW} steps (%)")
    ax.set_title(f"mnist-c continual (15 corruptions, severity 5), lr {lr:g}, order "
                 f"{ORDERS[0]}, seed {SEEDS[0]}; dotted: guard resets")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(summary: dict[str, Any]) -> str:
    orders = "; ".join(f"order {o}: {', '.join(s.split('-')[0] for s in names)}"
                       for o, names in summary["orders"].items())
    lines = [
        "# Continual TTA on mnist-c (mnist-cnn), through the one runner", "",
        f"Every cell is a `continual` stream of `ttabench run`: the 15 corruptions at severity "
        f"5 in a seeded order, {STEPS_PER_SPLIT} steps of 64 images per split, no reset; "
        f"windows of {WINDOW} steps; orders {list(ORDERS)} x seeds {list(SEEDS)} "
        f"({len(ORDERS) * len(SEEDS)} cells per method and learning rate). One cell is what "
        f"`ttabench run -s mnist-c -m mnist-cnn --stream continual --splits '<the 15>' "
        f"--severities 5 --steps-per-split {STEPS_PER_SPLIT} --window {WINDOW} --order-seed O "
        f"--seed S -a METHOD --set adapter.METHOD.lr=LR` runs. Produced by "
        f"`python benchmarks/continual.py run` (the guard's and enigma-online's settings by "
        f"`python benchmarks/continual.py fit`, on the 4 holdout corruptions only).", "",
        f"Orders: {orders}.", "",
        "Intervals: 95% percentile bootstrap (2000 resamples) of the mean over cells, "
        "resampling orders, then seeds within each order.", ""]
    for lr, block in summary["lrs"].items():
        lines += [f"## lr {lr}", "", "| method | online accuracy (mean over cells) | 95% interval "
                  "| per order | resets per cell (after step 0) | guard resets per cell |",
                  "|---|---|---|---|---|---|"]
        for method, row in block["methods"].items():
            per = ", ".join(f"{100 * a:.2f}" for a in row["per_order"].values())
            lo, hi = row["interval"]
            lines.append(f"| {method} | {100 * row['online_accuracy']:.2f}% | "
                         f"[{100 * lo:.2f}, {100 * hi:.2f}] | {per} | "
                         f"{row['resets_per_cell']:.1f} | {row['guard_resets_per_cell']:.1f} |")
        lines += ["", "| paired difference (same order and seed) | mean (pp) | 95% interval (pp) "
                  "| cells | range (pp) |", "|---|---|---|---|---|"]
        for name, c in block["comparisons"].items():
            lo, hi = c["interval_pp"]
            lines.append(f"| {name} | {c['mean_pp']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
                         f"{c['cells']} | {c['min_pp']:+.2f} to {c['max_pp']:+.2f} |")
        for group, title in (("fitted", "fitted on labelled calibration streams (holdout "
                                         "corruptions)"),
                             ("unfitted", "unfitted (no calibration data)")):
            lines += ["", f"Per-window estimate of Tent's online accuracy, {title}:", "",
                      "| estimator | per-window MAE (pp, mean over cells) | 95% interval | "
                      "cells | windows |", "|---|---|---|---|---|"]
            for name, e in block["estimators"].items():
                if e["group"] == group:
                    lo, hi = e["interval_pp"]
                    lines.append(f"| {name} | {e['mae_pp']:.2f} | [{lo:.2f}, {hi:.2f}] | "
                                 f"{e['cells']} | {e['windows']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def run(work: Path) -> None:
    from ttabench.store import write_bytes_atomic, write_json_atomic

    evaluation = dict(splits=EVAL, severities=EVAL_SEVERITIES, orders=ORDERS, seeds=SEEDS)
    cells: dict[tuple[str, float], list[Any]] = {}
    for lr in (LR_COLLAPSE, LR_LOW):  # the estimators only watch: Tent's runs carry them
        cells[("tent", lr)] = run_cells(work / "eval", "tent", lr, (*FITTED, *UNFITTED),
                                        **evaluation)
    cells[("source", 0.0)] = run_cells(work / "eval", "source", 0.0, (), **evaluation)
    for lr in (LR_COLLAPSE, LR_LOW):
        for method in ("rdumb", "guard:tent", "guard:rdumb"):
            cells[(method, lr)] = run_cells(work / "eval", method, lr, (), **evaluation)
    summary = summarize(cells)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "continual.json", summary)
    write_bytes_atomic(RESULTS / "continual.md", markdown(summary))
    for lr, name in ((LR_COLLAPSE, "continual_collapse_lr.png"), (LR_LOW, "continual_low_lr.png")):
        plot(cells, RESULTS / name, lr)
    print(markdown(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("fit", "run"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/continual-bench"))
    args = parser.parse_args(argv)
    (fit if args.phase == "fit" else run)(args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
