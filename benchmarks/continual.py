"""Continual TTA on mnist-c through the one runner: source, Tent, RDumb, guard:tent (and RDumb at
plugins.toml's lr); per-window estimates of the online accuracy.

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
import json
import shlex
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
METHODS = ("source", "tent", "rdumb", "guard:tent")
ORDERS = (0, 1, 2)
SEEDS = (0, 1, 2)
STEPS_PER_SPLIT = 30
WINDOW = 15
THRESHOLDS = (0.2, 0.4)
N_BOOT = 2000
FITTED = ("enigma-online",)
UNFITTED = ("aetta", "ac")
#: AETTA (1 + 10 forward passes with dropout masks per step, ~7x Tent's step here) watches Tent
#: on one seed per order, (order o, seed o); enigma-online and ac watch every Tent cell.
AETTA_PAIRS = tuple((o, o) for o in ORDERS)
HOLDOUT = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
EVAL_SEVERITIES, HOLDOUT_SEVERITIES = [5], [3, 4, 5]
EVAL = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression")


def repository_config() -> dict[str, Any]:
    """The repository's ``plugins.toml`` (the default run's roster and parameters)."""
    from ttabench.runner.config import load_config

    return load_config(ROOT / "plugins.toml").data


def rdumb_lr() -> float:
    """RDumb's learning rate in plugins.toml (the default run's): the reference row's."""
    return float(repository_config()["adapter"]["rdumb"]["lr"])


def _params(method: str, lr: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {} if method == "source" else {"lr": lr, **(extra or {})}


def run_cells(work: Path, params: dict[str, dict[str, Any]], estimators: tuple[str, ...], *,
              splits: tuple[str, ...], severities: list[int], orders: tuple[int, ...],
              seeds: tuple[int, ...],
              pairs: tuple[tuple[int, int], ...] | None = None) -> dict[str, list[Any]]:
    """The continual cells of the methods ``params`` names, each with its parameters (every
    order and seed, or only the (order, seed) ``pairs``), run through the one runner into
    ``work`` in one pool (finished cells are skipped), as typed cells per method."""
    from ttabench.runner.benchmark import Benchmark, collect_cells, pending_cells
    from ttabench.runner.executor import run_cells as execute
    from ttabench.runner.pool import PoolBackend
    from ttabench.spec import RunSpec, StreamSpec

    spec = RunSpec(suite=SUITE, model=MODEL, adapters=list(params),
                   estimators=list(estimators), seeds=list(seeds), splits=list(splits),
                   severities=severities, device="cpu", threads=1, jobs=2,
                   adapter_params=params,
                   estimator_params={"enigma-online": {"window": WINDOW}},
                   stream=StreamSpec(kind="continual", steps_per_split=STEPS_PER_SPLIT,
                                     window=WINDOW, order_seeds=orders))
    bench = Benchmark(spec)
    plans = [p for p in bench.plan() if pairs is None or
             (p.protocol["stream"]["order_seed"], p.seed) in pairs]
    todo = pending_cells(plans, work, None)
    if todo:
        execute(bench, todo, work, PoolBackend(min(2, len(todo))), progress=True)
    cells = collect_cells(work, plans)
    failed = [c for c in cells if c.status != "ok"]
    if failed or len(cells) != len(plans):
        raise SystemExit(f"{params}: {len(failed)} failed cell(s): "
                         f"{failed[0].error if failed else 'missing'}")
    return {method: [c for c in cells if c.protocol["adapter"]["name"] == method]
            for method in params}


# ------------------------------------------------------------------------------ fit


def fit(work: Path) -> None:
    from ttabench.store import write_json_atomic

    calibration = dict(splits=HOLDOUT, severities=HOLDOUT_SEVERITIES, orders=(0,), seeds=(0,))
    trajectories = [c for lr in (LR_COLLAPSE, LR_LOW)
                    for c in run_cells(work / "calibration", {"tent": _params("tent", lr)},
                                       FITTED, **calibration)["tent"]]
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
                   for c in run_cells(work / "calibration", {"guard:tent": _params(
                       "guard:tent", lr, {"threshold": threshold})}, (), **calibration)["guard:tent"]]
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


def _accuracy_row(run: dict[tuple[int, int], Any]) -> dict[str, Any]:
    """Online accuracy of one method's cells: mean, interval, per order, resets per cell."""
    acc = {k: c.targets["adapted"] for k, c in run.items()}
    lo, hi = two_level_interval(acc)
    return {
        "online_accuracy": float(np.mean(list(acc.values()))), "interval": [lo, hi],
        "per_order": {str(o): float(np.mean([v for (oo, _), v in acc.items() if oo == o]))
                      for o in ORDERS},
        "resets_per_cell": float(np.mean([len([t for t in c.windows.reset_steps if t > 0])
                                          for c in run.values()])),
        "guard_resets_per_cell": float(np.mean([
            c.adaptation["adapter_counters"].get("guard_resets", 0) for c in run.values()]))}


def _difference(run: dict[tuple[int, int], Any],
                against: dict[tuple[int, int], Any]) -> dict[str, Any]:
    """Paired online-accuracy difference ``run - against`` on the same (order, seed) cells, in
    pp: pooled mean with its interval, mean per order, range over cells."""
    diffs = {k: 100 * (run[k].targets["adapted"] - against[k].targets["adapted"]) for k in run}
    lo, hi = two_level_interval(diffs)
    return {"mean_pp": float(np.mean(list(diffs.values()))), "interval_pp": [lo, hi],
            "per_order_pp": {str(o): float(np.mean([v for (oo, _), v in diffs.items() if oo == o]))
                             for o in ORDERS},
            "cells": len(diffs), "min_pp": min(diffs.values()), "max_pp": max(diffs.values())}


def summarize(cells: dict[tuple[str, float], list[Any]]) -> dict[str, Any]:
    first = cells[("source", 0.0)][0]
    out: dict[str, Any] = {"stream": {k: v for k, v in first.protocol["stream"].items()
                                      if k not in ("order", "order_seed")},
                           "orders": {}, "lrs": {}, "rdumb_configured_lr": rdumb_lr()}
    for cell in cells[("source", 0.0)]:
        out["orders"][str(_key(cell)[0])] = cell.protocol["stream"]["order"]
    configured = {_key(c): c for c in cells[("rdumb", rdumb_lr())]}
    out["rdumb_configured"] = _accuracy_row(configured)
    for lr in sorted({lr for (m, lr) in cells if m == "tent"}, reverse=True):
        runs = {m: {_key(c): c for c in cells[(m, 0.0 if m == "source" else lr)]}
                for m in METHODS}
        table = {method: _accuracy_row(runs[method]) for method in METHODS}
        best = max(("tent", "rdumb"), key=lambda m: table[m]["online_accuracy"])
        comparisons = {f"{method} - {against}": _difference(runs[method], runs[against])
                       for method, against in (("guard:tent", "rdumb"), ("guard:tent", "tent"))}
        comparisons[f"guard:tent - rdumb at lr {rdumb_lr():g}"] = _difference(
            runs["guard:tent"], configured)
        estimators = {}
        watched = {"all": runs["tent"],
                   "aetta": {_key(c): c for c in cells[("tent+aetta", lr)]}}
        for cells_label, names in (("all", (*FITTED, "ac")), ("aetta", (*FITTED, *UNFITTED))):
            for name in names:
                group = "fitted" if name in FITTED else "unfitted"
                mae = {k: 100 * _window_mae(c, name) for k, c in watched[cells_label].items()}
                lo, hi = two_level_interval(mae)
                estimators[f"{name} ({cells_label})"] = {
                    "estimator": name, "group": group, "cells_label": cells_label,
                    "mae_pp": float(np.mean(list(mae.values()))), "interval_pp": [lo, hi],
                    "cells": len(mae), "per_order_pp": {
                        str(o): float(np.mean([v for (oo, _), v in mae.items() if oo == o]))
                        for o in sorted({oo for oo, _ in mae})},
                    "windows": sum(len(c.windows.accuracy) for c in watched[cells_label].values())}
        same = all(c.windows.correct_per_step == runs["tent"][k].windows.correct_per_step
                   for k, c in watched["aetta"].items())
        out["lrs"][f"{lr:g}"] = {"methods": table, "best_unguarded": best,
                                 "comparisons": comparisons, "estimators": estimators,
                                 "aetta_cells": [list(k) for k in sorted(watched["aetta"])],
                                 "tent_trajectory_same_with_aetta": same}
    return out


#: The commit whose ``benchmarks/results/continual.json`` the scenarios runner (before issue 26)
#: published: one split order (order seed 0), seeds 0-2.
PUBLISHED = "fc33dff"


def reproduction(cells: dict[tuple[str, float], list[Any]]) -> dict[str, Any] | None:
    """The published per-seed online accuracies (``PUBLISHED``, read with ``git show``) beside
    this run's order-0 cells (the same order and seeds), per learning rate and method; None
    outside a git checkout."""
    import subprocess

    try:
        text = subprocess.run(["git", "-C", str(ROOT), "show",
                               f"{PUBLISHED}:benchmarks/results/continual.json"],
                              capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    old = json.loads(text)["lrs"]
    out: dict[str, Any] = {}
    for lr in sorted({lr for (m, lr) in cells if m == "tent"}, reverse=True):
        rows = {}
        for method in METHODS:
            published = old[f"{lr:g}"]["methods"][method]
            mine = {_key(c)[1]: c.targets["adapted"]
                    for c in cells[(method, 0.0 if method == "source" else lr)]
                    if _key(c)[0] == 0}
            now = [mine[seed] for seed in published["seeds"]]
            rows[method] = {"published": published["per_seed"], "now": now,
                            "max_abs_diff_pp": 100 * max(abs(a - b) for a, b in
                                                         zip(published["per_seed"], now))}
        out[f"{lr:g}"] = rows
    return out


def plot(cells: dict[tuple[str, float], list[Any]], path: Path, lr: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    ax = fig.subplots()
    colours = dict(zip(METHODS, ("grey", "tab:red", "tab:blue", "tab:orange")))
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


def _per_order(values: dict[str, float], scale: float = 1.0, sign: bool = False) -> str:
    return ", ".join(f"{o}: {scale * v:{'+' if sign else ''}.2f}" for o, v in values.items())


def markdown(summary: dict[str, Any]) -> str:
    orders = "; ".join(f"order {o}: {', '.join(s.split('-')[0] for s in names)}"
                       for o, names in summary["orders"].items())
    settings = summary["settings"]
    lines = [
        "# Continual TTA on mnist-c (mnist-cnn), through the one runner", "",
        f"Produced by `{summary['command']}` after `python benchmarks/continual.py fit` (the "
        f"guard's threshold and enigma-online's coefficients, fitted on calibration streams of "
        f"the 4 holdout corruptions only: {', '.join(HOLDOUT)} at severities 3-5; written to "
        f"`ttabench_enigma/guards/mnist-cnn.json`: threshold {settings['threshold']}, "
        f"coefficients {settings['coefficients']}).", "",
        f"Every cell is a `continual` stream of `ttabench run`: the 15 evaluation corruptions "
        f"at severity 5 in a seeded order, {STEPS_PER_SPLIT} steps of 64 images per split "
        f"({STEPS_PER_SPLIT * len(EVAL)} steps), no reset; windows of {WINDOW} steps; orders "
        f"{list(ORDERS)} x seeds {list(SEEDS)} ({len(ORDERS) * len(SEEDS)} cells per method "
        f"and learning rate). One cell is what `ttabench run -s mnist-c -m mnist-cnn --stream "
        f"continual --splits '<the 15>' --severities 5 --steps-per-split {STEPS_PER_SPLIT} "
        f"--window {WINDOW} --order-seed O --seed S -a METHOD --set adapter.METHOD.lr=LR "
        f"--no-baselines` runs. Tent, RDumb and guard:tent run at the same learning rate in "
        f"each section (lr {', '.join(summary['lrs'])}; the published lr 0.001 section is "
        f"left out unless `--lrs` names it: the shared machine had no time for it); RDumb's `reset_every` (1000 steps) is longer than the stream, so RDumb "
        f"never resets here (it is ETA without its periodic reset). A reference row runs RDumb "
        f"at plugins.toml's lr {summary['rdumb_configured_lr']:g}. guard:rdumb (in the published "
        f"results) is left out: it added 18 cells the shared machine had no time for.", "",
        f"Orders: {orders}.", "",
        "Intervals: 95% percentile bootstrap (2000 resamples) of the mean over cells, "
        "resampling the 3 orders, then seeds within each order (with 3 orders the interval is "
        "coarse: it can only be as wide as the orders disagree).", "",
        "## guard:tent against rdumb (paired on the same order and seed, pp)", "",
        "| lr | comparison | pooled mean | 95% interval | per order | range over cells |",
        "|---|---|---|---|---|---|"]
    for lr, block in summary["lrs"].items():
        for name, c in block["comparisons"].items():
            if name.startswith("guard:tent - rdumb"):
                lo, hi = c["interval_pp"]
                lines.append(f"| {lr} | {name} | {c['mean_pp']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
                             f"{_per_order(c['per_order_pp'], sign=True)} | "
                             f"{c['min_pp']:+.2f} to {c['max_pp']:+.2f} |")
    ref = summary["rdumb_configured"]
    lines += ["", f"RDumb at lr {summary['rdumb_configured_lr']:g} (plugins.toml): online "
              f"accuracy {100 * ref['online_accuracy']:.2f}% [{100 * ref['interval'][0]:.2f}, "
              f"{100 * ref['interval'][1]:.2f}], per order "
              f"{_per_order(ref['per_order'], 100)}.", ""]
    if summary["reproduction"]:
        lines += ["## The published results through the one runner", "",
                  f"The scenarios runner published one order (order seed 0) x seeds 0-2 "
                  f"(`git show {PUBLISHED}:benchmarks/results/continual.json`); this run's "
                  "order-0 cells are the same streams. Online accuracy per seed (%):", "",
                  "| lr | method | published | one runner | largest difference (pp) |",
                  "|---|---|---|---|---|"]
        for lr, rows in summary["reproduction"].items():
            for method, r in rows.items():
                lines.append(f"| {lr} | {method} | "
                             f"{', '.join(f'{100 * v:.2f}' for v in r['published'])} | "
                             f"{', '.join(f'{100 * v:.2f}' for v in r['now'])} | "
                             f"{r['max_abs_diff_pp']:.4f} |")
        lines.append("")
    for lr, block in summary["lrs"].items():
        lines += [f"## lr {lr}", "", "| method | online accuracy (mean over cells) | 95% interval "
                  "| per order | resets per cell (after step 0) | guard resets per cell |",
                  "|---|---|---|---|---|---|"]
        for method, row in block["methods"].items():
            lo, hi = row["interval"]
            lines.append(f"| {method} | {100 * row['online_accuracy']:.2f}% | "
                         f"[{100 * lo:.2f}, {100 * hi:.2f}] | {_per_order(row['per_order'], 100)} "
                         f"| {row['resets_per_cell']:.1f} | {row['guard_resets_per_cell']:.1f} |")
        lines += ["", "| paired difference (same order and seed) | mean (pp) | 95% interval (pp) "
                  "| per order (pp) | cells | range (pp) |", "|---|---|---|---|---|---|"]
        for name, c in block["comparisons"].items():
            lo, hi = c["interval_pp"]
            lines.append(f"| {name} | {c['mean_pp']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | "
                         f"{_per_order(c['per_order_pp'], sign=True)} | {c['cells']} | "
                         f"{c['min_pp']:+.2f} to {c['max_pp']:+.2f} |")
        pairs = ", ".join(f"order {o} seed {sd}" for o, sd in block["aetta_cells"])
        for label, title in (("all", "every Tent cell"),
                             ("aetta", f"the Tent cells AETTA watched ({pairs})")):
            lines += ["", f"Per-window estimate of Tent's online accuracy on {title}:", "",
                      "| estimator | group | per-window MAE (pp, mean over cells) | 95% "
                      "interval | per order | cells | windows |",
                      "|---|---|---|---|---|---|---|"]
            for group in ("fitted", "unfitted"):
                for e in block["estimators"].values():
                    if e["cells_label"] == label and e["group"] == group:
                        lo, hi = e["interval_pp"]
                        lines.append(
                            f"| {e['estimator']} | {'fitted on labelled calibration streams' if group == 'fitted' else 'unfitted'} "
                            f"| {e['mae_pp']:.2f} | [{lo:.2f}, {hi:.2f}] | "
                            f"{_per_order(e['per_order_pp'])} | {e['cells']} | {e['windows']} |")
        lines += ["", "Tent's trajectory is the same with and without AETTA watching (per-step "
                  "correct counts equal on its cells): "
                  f"{'yes' if block['tent_trajectory_same_with_aetta'] else 'NO'}."]
        lines.append("")
    return "\n".join(lines) + "\n"


def run(work: Path, command: str, lrs: tuple[float, ...]) -> None:
    from ttabench.store import write_bytes_atomic, write_json_atomic

    evaluation = dict(splits=EVAL, severities=EVAL_SEVERITIES, orders=ORDERS, seeds=SEEDS)
    cells: dict[tuple[str, float], list[Any]] = {}
    for k, lr in enumerate(lrs):  # the estimators only watch: Tent's runs carry them
        cells[("tent", lr)] = run_cells(work / "eval", {"tent": _params("tent", lr)},
                                        (*FITTED, "ac"), **evaluation)["tent"]
        for method, group in run_cells(work / "eval", {m: _params(m, lr) for m in
                                                       ("rdumb", "guard:tent")},
                                       (), **evaluation).items():
            cells[(method, lr)] = group
        if k == 0:  # the reference rows, once
            shared = run_cells(work / "eval", {"source": {}, "rdumb": {"lr": rdumb_lr()}}, (),
                               **evaluation)
            cells[("source", 0.0)] = shared["source"]
            cells[("rdumb", rdumb_lr())] = shared["rdumb"]
        cells[("tent+aetta", lr)] = run_cells(work / "eval", {"tent": _params("tent", lr)},
                                              (*FITTED, *UNFITTED), **evaluation,
                                              pairs=AETTA_PAIRS)["tent"]
    summary = summarize(cells)
    summary["command"] = command
    summary["reproduction"] = reproduction(cells)
    fitted = json.loads(SETTINGS.read_text())
    summary["settings"] = {"threshold": fitted["guard"]["threshold"],
                           "coefficients": fitted["online"]["coefficients"],
                           "fitted_on": fitted["fitted_on"]}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "continual.json", summary)
    write_bytes_atomic(RESULTS / "continual.md", markdown(summary))
    for lr, name in ((LR_COLLAPSE, "continual_collapse_lr.png"), (LR_LOW, "continual_low_lr.png")):
        if lr in lrs:
            plot(cells, RESULTS / name, lr)
    print(markdown(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("phase", choices=("fit", "run"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/continual-bench"))
    parser.add_argument("--lrs", type=float, nargs="+", default=[LR_COLLAPSE],
                        choices=[LR_COLLAPSE, LR_LOW],
                        help="run: the learning rates of Tent, RDumb and guard:tent "
                             "(default: %(default)s, where Tent collapses)")
    args = parser.parse_args(argv)
    if args.phase == "fit":
        fit(args.work)
    else:
        run(args.work, shlex.join(["python", "benchmarks/continual.py",
                                   *(sys.argv[1:] if argv is None else argv)]), tuple(args.lrs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
