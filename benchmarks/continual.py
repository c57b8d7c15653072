"""Continual TTA on mnist-c: source, Tent, RDumb, guard:tent, guard:rdumb; online estimates.

    python benchmarks/continual.py fit      # calibration scenarios -> ttabench_enigma/guards/mnist-cnn.json
    python benchmarks/continual.py run      # evaluation scenarios -> benchmarks/results/continual.*

``fit`` uses calibration scenarios only (mnist-c's 4 holdout corruptions at severities 3-5):
it fits the online estimate's coefficients by least squares on the windows of Tent and RDumb
runs, and picks the guard's collapse threshold from a grid by the guard:tent online accuracy
averaged over the collapsing and the low learning rate. ``run`` runs the evaluation scenario
(the 15 corruptions at severity 5 in a seeded order, no reset) for every method at both
learning rates and 3 seeds, then writes the JSON/Markdown summary and the plots. Cells are
kept under ``--work`` (default /tmp/continual-bench), so a rerun resumes. Two processes, one
thread each, ``nice``-friendly.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SETTINGS = ROOT / "ttabench_enigma" / "guards" / "mnist-cnn.json"
LR_COLLAPSE = 1e-1  # Tent collapses on the calibration scenario (see fit's output)
LR_LOW = 1e-3       # Tent does not collapse
METHODS = ("source", "tent", "rdumb", "guard:tent", "guard:rdumb")
SEEDS = (0, 1, 2)
STEPS_PER_SPLIT = 30
WINDOW = 15
THRESHOLDS = (0.2, 0.4)
N_BOOT = 2000


def _job(args: dict[str, Any]) -> list[dict[str, Any]]:
    """One ScenarioBench in a worker process (one thread)."""
    import torch

    torch.set_num_threads(1)
    from ttabench.scenarios.cells import ScenarioBench, ScenarioRun
    from ttabench.scenarios.spec import ScenarioSpec

    spec = ScenarioSpec(**args.pop("spec"))
    return ScenarioBench(ScenarioRun(spec=spec, threads=1, device="cpu", **args)).execute()


def _params(method: str, lr: float, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {} if method == "source" else {"lr": lr, **(extra or {})}


def _jobs(work: Path, spec: dict[str, Any], runs: list[tuple[str, float, dict, list[str]]],
          seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    jobs = []
    for method, lr, extra, estimators in runs:
        for seed in seeds:
            jobs.append({"output": work / f"lr{lr:g}", "spec": dict(spec), "adapters": [method],
                         "seeds": [seed], "estimators": estimators,
                         "adapter_params": {method: _params(method, lr, extra)},
                         "estimator_params": {"enigma-online": {"window": spec["window"]}}})
    with ProcessPoolExecutor(max_workers=2) as pool:
        return [r for records in pool.map(_job, jobs) for r in records]


# ------------------------------------------------------------------------------ fit


def fit(work: Path) -> None:
    calibration = {"kind": "sequence", "role": "calibration", "severities": (3, 4, 5),
                   "steps_per_split": STEPS_PER_SPLIT, "window": WINDOW, "order_seed": 0}
    trajectories = _jobs(work / "calibration", calibration, [
        ("tent", LR_COLLAPSE, {}, ["enigma-online"]), ("tent", LR_LOW, {}, ["enigma-online"])],
        seeds=(0,))
    features, truth = [], []
    for record in trajectories:
        rows = record["estimators"]["enigma-online"]["features"]
        features += [[1.0, r["conf"], r["flips"], r["collapse"]] for r in rows]
        truth += record["window_accuracy"]
    coefficients, *_ = np.linalg.lstsq(np.array(features), np.array(truth), rcond=None)
    print("online coefficients", coefficients.round(4).tolist())
    scores = {}
    for threshold in THRESHOLDS:
        guarded = _jobs(work / "calibration", calibration, [
            ("guard:tent", lr, {"threshold": threshold}, []) for lr in (LR_COLLAPSE, LR_LOW)],
            seeds=(0,))
        scores[threshold] = float(np.mean([r["online_accuracy"] for r in guarded]))
        print(f"threshold {threshold}: guard:tent calibration online accuracy "
              f"{100 * scores[threshold]:.2f}%")
    best = max(THRESHOLDS, key=lambda t: (round(scores[t], 4), t))
    tent = {f"{r['adapter']} lr {r['protocol']['adapter']['params']['lr']:g}":
            r["online_accuracy"] for r in trajectories}
    record = {
        "schema": "ttabench_enigma.guard/1", "id": "mnist-cnn", "model": "mnist-cnn:0",
        "guard": {"threshold": best, "patience": 2, "check_every": 5, "probe_batches": 2,
                  "min_steps": 10},
        "online": {"coefficients": [round(float(c), 6) for c in coefficients]},
        "fitted_on": {"suite": "mnist-c", "scenario": calibration | {"severities": [3, 4, 5]},
                      "splits": "calibration splits only (holdout corruptions)",
                      "online": "least squares on the windows of tent at lr "
                                f"{LR_COLLAPSE:g} and {LR_LOW:g}, seed 0",
                      "guard": f"threshold grid {list(THRESHOLDS)}: best mean online accuracy "
                               f"of guard:tent at lr {LR_COLLAPSE:g} and {LR_LOW:g}, seed 0",
                      "grid_online_accuracy": {str(t): s for t, s in scores.items()},
                      "unguarded_online_accuracy": tent},
    }
    from ttabench.store import write_json_atomic

    write_json_atomic(SETTINGS, record)
    print(f"wrote {SETTINGS} (threshold {best})")


# ------------------------------------------------------------------------------ run


def block_bootstrap(diffs: np.ndarray, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of ``diffs`` (one value per (seed, segment) block),
    blocks resampled with replacement."""
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(n_boot, len(diffs)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def segment_accuracy(record: dict[str, Any]) -> np.ndarray:
    """Online accuracy per scenario segment (split), from the per-step correct counts."""
    hits = np.array(record["correct_per_step"], dtype=float)
    segments = np.array(record["segment_per_step"])
    images = record["protocol"]["batch_size"]
    return np.array([hits[segments == k].sum() / (images * (segments == k).sum())
                     for k in range(segments.max() + 1)])


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[tuple[str, float], dict[int, dict[str, Any]]] = {}
    for r in records:
        lr = r["protocol"]["adapter"]["params"].get("lr", 0.0)
        by.setdefault((r["adapter"], lr), {})[r["seed"]] = r
    out: dict[str, Any] = {"scenario": records[0]["protocol"]["scenario"], "lrs": {}}
    for lr in (LR_COLLAPSE, LR_LOW):
        table = {}
        for method in METHODS:
            runs = by[(method, 0.0 if method == "source" else lr)]
            seeds = sorted(runs)
            acc = [runs[s]["online_accuracy"] for s in seeds]
            resets = [len([t for t in runs[s]["reset_steps"] if t > 0]) for s in seeds]
            table[method] = {"online_accuracy": float(np.mean(acc)), "seeds": seeds,
                             "per_seed": acc, "resets_per_seed": resets,
                             "guard_resets_per_seed": [
                                 runs[s]["adapter_counters"].get("guard_resets", 0)
                                 for s in seeds]}
        best = max(("tent", "rdumb"), key=lambda m: table[m]["online_accuracy"])
        comparisons = {}
        for method, against in (("guard:tent", best), ("guard:tent", "tent"),
                                ("guard:rdumb", "rdumb")):
            a = by[(method, lr)]
            b = by[(against, lr)]
            seeds = sorted(set(a) & set(b))
            diffs = np.concatenate([segment_accuracy(a[s]) - segment_accuracy(b[s])
                                    for s in seeds])
            lo, hi = block_bootstrap(diffs, N_BOOT)
            comparisons[f"{method} - {against}"] = {
                "mean_pp": 100 * float(diffs.mean()), "interval_pp": [100 * lo, 100 * hi],
                "seeds": seeds,
                "per_seed_pp": [100 * (a[s]["online_accuracy"] - b[s]["online_accuracy"])
                                for s in seeds]}
        estimators = {}
        for method in ("tent",):
            run = by[(method, lr)][SEEDS[0]]
            for name, est in run["estimators"].items():
                estimators[f"{name} on {method} seed {SEEDS[0]}"] = {
                    "mae_pp": 100 * est["mae"], "windows": len(est["windows"])}
        out["lrs"][f"{lr:g}"] = {"methods": table, "best_unguarded": best,
                                 "comparisons": comparisons, "estimators": estimators}
    return out


def plot(records: list[dict[str, Any]], path: Path, lr: float) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    ax = fig.subplots()
    colours = dict(zip(METHODS, ("grey", "tab:red", "tab:blue", "tab:orange", "tab:green")))
    for method in METHODS:
        want = 0.0 if method == "source" else lr
        runs = [r for r in records if r["adapter"] == method and r["seed"] == SEEDS[0]
                and r["protocol"]["adapter"]["params"].get("lr", 0.0) == want]
        if not runs:
            continue
        run = runs[0]
        window = run["protocol"]["scenario"]["window"]
        acc = np.array(run["window_accuracy"]) * 100
        steps = (np.arange(len(acc)) + 1) * window
        ax.plot(steps, acc, color=colours[method], label=method, lw=1.3)
        for step in run["adapter_counters"].get("guard_reset_steps", []):
            ax.axvline(step, color=colours[method], ls=":", lw=0.8, alpha=0.7)
        for name, est in run["estimators"].items():
            ax.plot(steps, np.array(est["windows"]) * 100, ls="--", lw=1,
                    label=f"{name} estimate ({method})")
    per_split = records[0]["protocol"]["scenario"]["steps_per_split"]
    for k, name in enumerate(records[0]["protocol"]["scenario"]["order"]):
        ax.text(k * per_split + 2, 2, name.split("-")[0][:8], fontsize=6, rotation=90)
    ax.set_xlabel("adaptation step")
    ax.set_ylabel(f"online accuracy per window of {WINDOW} steps (%)")
    ax.set_title(f"mnist-c continual (15 corruptions, severity 5), lr {lr:g}, seed {SEEDS[0]}; "
                 "dotted: guard resets")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# Continual TTA on mnist-c (mnist-cnn)", "",
             f"Scenario: {summary['scenario']['kind']}, splits in order "
             f"{', '.join(summary['scenario']['order'])}; {STEPS_PER_SPLIT} steps of 64 images "
             f"per split, windows of {WINDOW} steps, seeds {list(SEEDS)}. Produced by "
             "`python benchmarks/continual.py run`.", ""]
    for lr, block in summary["lrs"].items():
        lines += [f"## lr {lr}", "", "| method | online accuracy (mean over seeds) | seeds | "
                  "per seed | resets per seed (after step 0) |", "|---|---|---|---|---|"]
        for method, row in block["methods"].items():
            seeds = ", ".join(f"{100 * a:.2f}" for a in row["per_seed"])
            lines.append(f"| {method} | {100 * row['online_accuracy']:.2f}% | {row['seeds']} | "
                         f"{seeds} | {row['resets_per_seed']} |")
        lines += ["", "| paired difference | mean (pp) | 95% interval (pp, block bootstrap "
                  "over seed x split) | per seed (pp) |", "|---|---|---|---|"]
        for name, c in block["comparisons"].items():
            lo, hi = c["interval_pp"]
            seeds = ", ".join(f"{v:+.2f}" for v in c["per_seed_pp"])
            lines.append(f"| {name} | {c['mean_pp']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {seeds} |")
        lines += ["", "| per-window estimate | MAE (pp) | windows |", "|---|---|---|"]
        for name, e in block["estimators"].items():
            lines.append(f"| {name} | {e['mae_pp']:.2f} | {e['windows']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def run(work: Path) -> None:
    evaluation = {"kind": "sequence", "role": "eval", "severities": (5,),
                  "steps_per_split": STEPS_PER_SPLIT, "window": WINDOW, "order_seed": 0}
    # the per-window estimators observe Tent's seed-0 runs (AETTA's 11 passes per step are
    # the costly part); estimators only watch, so the adaptation is the same with or without
    runs = [("tent", lr, {}, ["enigma-online", "aetta"]) for lr in (LR_COLLAPSE, LR_LOW)]
    runs += [("source", 0.0, {}, [])]
    for lr in (LR_COLLAPSE, LR_LOW):
        runs += [("rdumb", lr, {}, []), ("guard:tent", lr, {}, []), ("guard:rdumb", lr, {}, [])]
    records = _jobs(work / "eval", evaluation, runs, SEEDS[:1])
    records += _jobs(work / "eval", evaluation, [(m, lr, {}, []) for m, lr, _, _ in runs],
                     SEEDS[1:])
    summary = summarize(records)
    from ttabench.store import write_bytes_atomic, write_json_atomic

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "continual.json", summary)
    write_bytes_atomic(RESULTS / "continual.md", markdown(summary))
    for lr, name in ((LR_COLLAPSE, "continual_collapse_lr.png"), (LR_LOW, "continual_low_lr.png")):
        plot(records, RESULTS / name, lr)
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
