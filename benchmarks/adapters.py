"""Every estimator under every adapter: mnist-c, both offline models, three seeds.

    python benchmarks/adapters.py run --part 1 --stop-after 45 &   # two processes, in parallel
    python benchmarks/adapters.py run --part 2 --stop-after 45 &   # (then severities, each)
    python benchmarks/adapters.py report     # -> benchmarks/results/adapters.{json,md,png}

For each registered adapter (the host's and the plugin's, ``ADAPTERS``), every cell runs the
``reset-each-split`` stream of one mnist-c split (``N_EXAMPLES`` images, batch 64, ``STEPS``
steps) on ``mnist-cnn`` and ``mnist-resnet`` with seeds ``SEEDS``, and every estimator of the
roster (WF and its variants, the 16 baselines of ``plugins.toml``) estimates that adapter's
online accuracy (the ``adapted`` target) in the same view: a static estimator on the adapter's
online outputs against source val as the adapter's model gives it before adapting, a
trajectory estimator from the adapter's own trajectory. A score estimator gets a linear map
fitted per (model, adapter) on the calibration splits (mnist-c's 4 holdout corruptions); MAE
(pp) is averaged per dataset (corruption), then over datasets, with 95% bootstrap intervals
resampling datasets then splits (``ttabench.scoring``).

Splits: severity ``SEVERITY`` of the 4 calibration corruptions, then of the eval corruptions
in ``EVAL_ORDER`` (one per corruption family in turn), a dataset at a time; ``run`` stops
starting datasets after ``--stop-after`` minutes, and ``report`` scores the datasets whose
cells are complete for every model, seed and adapter (the file names them). ``run --part 1``
and ``--part 2`` run two halves of the adapters (``PARTS``, about equal time), one process
each, one thread. In a process the adapters of a (split, seed) share the source and bn passes
(``ttabench.runner.shared``).
``severities`` runs the online accuracy of every adapter at severities 1 and 3 on mnist-cnn,
seed 0, over the first ``--eval-datasets`` eval corruptions (``ac`` only).

The best estimator per (model, adapter) is chosen on calibration cells alone, leaving out a
whole dataset: a mapped entry's map is refitted without each calibration corruption and scored
on it, a direct entry is scored as it is; the lowest such MAE wins. Cells are kept under
``--work`` (default /tmp/adapters-study), so a rerun resumes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE = "mnist-c"
MODELS = ("mnist-cnn", "mnist-resnet")
SEEDS = (0, 1, 2)
#: Every registered adapter but CoTTA: its CIFAR code runs 32 augmented teacher passes at
#: every step (a 30-step mnist-cnn cell did not finish in 8 minutes on this shared 2-core
#: machine at load 18; with 4 passes a 12-step cell took 60-80 s, a third of the study's time).
ADAPTERS = ("source", "bn-ema", "bn-alpha", "lame", "rotta", "tent", "eata", "eta", "rdumb",
            "sar", "deyo", "roid")
ENTROPY_MINIMIZATION = ("tent", "eata", "eta", "rdumb", "sar", "deyo", "roid")
#: The entropy-minimization family's lr: plugins.toml's for tent and rdumb (10x the reference
#: 2.5e-4, which barely moves these small models), the same for eata and eta; every other
#: adapter follows its authors' CIFAR-scale setting (10 classes).
EM_LR = 0.0025
CALIBRATION = ("speckle_noise", "gaussian_blur", "spatter")
EVAL_ORDER = ("gaussian_noise", "defocus_blur", "snow", "contrast", "shot_noise", "motion_blur",
              "frost", "pixelate", "impulse_noise", "glass_blur", "fog", "jpeg_compression",
              "zoom_blur", "brightness", "elastic_transform", "saturate")
SEVERITY = 5
N_EXAMPLES = 256
STEPS = 12
CHECKPOINTS = (0, 4, 8, 12)
TRAJECTORY = ("enigma", "enigma-unweighted", "enigma+ts")
#: The two processes' adapters: about equal halves of the time measured per cell.
PARTS = {1: ("rotta", "sar", "roid", "eata", "source"),
         2: ("bn-alpha", "deyo", "lame", "tent", "eta", "rdumb", "bn-ema")}
N_BOOT = 1000
MIN_EVAL = 2  # evaluated corruptions a report needs


def _config() -> dict[str, Any]:
    from ttabench.runner.config import load_config

    return load_config(ROOT / "plugins.toml").data


def baselines() -> list[str]:
    return list(_config()["run"]["baselines"])


def adapter_params() -> dict[str, dict[str, Any]]:
    return {a: ({"lr": EM_LR} if a in ("tent", "eata", "eta", "rdumb") else {})
            for a in ADAPTERS}


def spec(model: str, seeds: tuple[int, ...], splits: list[str], severities: list[int],
         estimators: list[str], adapters: tuple[str, ...] = ADAPTERS) -> Any:
    from ttabench.spec import RunSpec

    params = {name: {"probe_size": N_EXAMPLES, "checkpoints": list(CHECKPOINTS),
                     "estimate_at": STEPS} for name in TRAJECTORY if name in estimators}
    return RunSpec(suite=SUITE, model=model, adapters=list(adapters),
                   adapter_params={a: p for a, p in adapter_params().items() if a in adapters},
                   estimators=estimators, estimator_params=params,
                   baselines=[b for b in baselines() if b in estimators], seeds=list(seeds),
                   splits=splits, severities=severities, suite_options={"n_examples": N_EXAMPLES},
                   batch_size=64, steps=STEPS, device="cpu", threads=1, jobs=1)


def _run_dataset(bench: Any, dataset: str, out: Path) -> int:
    """Run the pending cells of ``dataset`` in this process; the cells run."""
    from ttabench.runner.benchmark import pending_cells
    from ttabench.runner.executor import LocalBackend, run_cells

    plans = [p for p in bench.plan() if p.split.dataset == dataset]
    todo = pending_cells(plans, out, None)
    if todo:
        counts = run_cells(bench, todo, out, LocalBackend(), progress=False)
        if counts["failed"]:
            raise SystemExit(f"{dataset}: {counts['failed']} failed cell(s) in {out}")
    return len(todo)


def run(work: Path, part: int, stop_after: float) -> None:
    """The main study's cells of one part, a dataset at a time, until ``stop_after`` minutes."""
    from ttabench.runner.benchmark import Benchmark

    start = time.time()
    estimators = [*TRAJECTORY, *baselines()]
    benches = {model: Benchmark(spec(model, SEEDS, [*CALIBRATION, *EVAL_ORDER], [SEVERITY],
                                     estimators, PARTS[part]))
               for model in MODELS}
    for dataset in (*CALIBRATION, *EVAL_ORDER):
        if time.time() - start > 60 * stop_after:
            print(f"stopping before {dataset}: {stop_after} minutes passed", flush=True)
            break
        for model, bench in benches.items():
            t = time.time()
            ran = _run_dataset(bench, dataset, work / model)
            print(f"{dataset} {model}: {ran} cells in {time.time() - t:.0f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)


def severities(work: Path, part: int, eval_datasets: int) -> None:
    """Online accuracy at severities 1 and 3 (mnist-cnn, seed 0, ``ac`` only)."""
    from ttabench.runner.benchmark import Benchmark

    datasets = list(EVAL_ORDER[:eval_datasets])
    bench = Benchmark(spec("mnist-cnn", (0,), datasets, [1, 3], ["ac"], PARTS[part]))
    for dataset in datasets:
        t = time.time()
        ran = _run_dataset(bench, dataset, work / "severities")
        print(f"severities {dataset}: {ran} cells in {time.time() - t:.0f} s", flush=True)


# ----------------------------------------------------------------------------- report


def complete_datasets(cells: dict[str, list[Any]]) -> list[str]:
    """The datasets (in study order) with an ok cell for every model, seed and adapter."""
    want = len(SEEDS) * len(ADAPTERS)
    done = []
    for dataset in (*CALIBRATION, *EVAL_ORDER):
        if all(sum(c.dataset == dataset and c.status == "ok" and c.adapter in ADAPTERS
                   for c in cells[m]) == want for m in MODELS):
            done.append(dataset)
    return done


def lodo_mae(entry: Any, calibration: list[Any]) -> float | None:
    """The entry's MAE (pp) on the calibration cells, each corruption predicted by a map
    fitted without it (a direct entry: as it is); per-dataset averaged."""
    from ttabench.scoring.map_kinds import loo_predictions
    from ttabench.scoring.maps import (
        KIND_OF_MAP,
        VALUE,
        direct_estimate,
        labelled_points,
        record,
        truth,
    )
    from ttabench.scoring.metrics import mae_by_dataset

    if entry.map in KIND_OF_MAP:
        _, x, y, datasets = labelled_points(calibration, entry.estimator, entry.input or VALUE,
                                            "adapted")
        if len(set(datasets)) < 3:
            return None
        predicted = loo_predictions(KIND_OF_MAP[entry.map], np.asarray(x), np.asarray(y),
                                    list(datasets))
        return mae_by_dataset(predicted, y, datasets) if np.isfinite(predicted).all() else None
    est, true, of = [], [], []
    for cell in calibration:
        res = record(cell, entry.estimator, "adapted")
        value = None if res is None else direct_estimate(res, cell.estimators[entry.estimator].kind)
        if value is not None and (actual := truth(cell, "adapted")) is not None:
            est.append(value)
            true.append(actual)
            of.append(cell.dataset)
    return mae_by_dataset(est, true, of) if est else None


def wf_curves(cells: list[Any]) -> dict[int, float]:
    """WF at each checkpoint, mean over the eval cells (flips per probe of N_EXAMPLES)."""
    points: dict[int, list[float]] = {}
    for cell in cells:
        rec = cell.estimators["enigma"]
        if cell.role != "eval" or rec.result is None or rec.result.failed:
            continue
        for key, value in rec.result.scores.items():
            points.setdefault(int(key.split("@")[1]), []).append(value)
    return {k: float(np.mean(v)) for k, v in sorted(points.items())}


def report(work: Path, commands: list[str]) -> None:
    from ttabench.records import read_cell
    from ttabench.scoring.leaderboard import build_leaderboard
    from ttabench.scoring.metrics import mean_by_dataset
    from ttabench.spec import ScoringSpec

    cells = {m: [read_cell(p) for p in sorted((work / m / "cells").glob("*.json"))]
             for m in MODELS}
    datasets = complete_datasets(cells)
    if not set(CALIBRATION) <= set(datasets) or len(datasets) < len(CALIBRATION) + MIN_EVAL:
        raise SystemExit(f"too few complete datasets: {datasets}")
    evaluated = [d for d in datasets if d not in CALIBRATION]
    scoring = ScoringSpec(map_kinds=("lin",), n_boot=N_BOOT)
    summary: dict[str, Any] = {"datasets": {"calibration": list(CALIBRATION), "eval": evaluated},
                               "protocol": {"n_examples": N_EXAMPLES, "steps": STEPS,
                                            "checkpoints": list(CHECKPOINTS),
                                            "severity": SEVERITY, "seeds": list(SEEDS),
                                            "batch_size": 64,
                                            "adapter_params": adapter_params()},
                               "models": {}, "commands": commands}
    for model in MODELS:
        kept = [c for c in cells[model] if c.dataset in datasets and c.status == "ok"
                and c.adapter in ADAPTERS]
        board = build_leaderboard(kept, scoring)
        rows = board.table[board.table["target"] == "adapted"]
        per_adapter: dict[str, Any] = {}
        for adapter in ADAPTERS:
            mine = [c for c in kept if c.adapter == adapter]
            calibration = [c for c in mine if c.role == "calibration"]
            table = rows[rows["adapter"] == adapter]
            entries = board.entries[((SUITE, model, adapter), "adapted")]
            loo = {e.name: lodo_mae(e, calibration) for e in entries}
            scored = {r.entry: {"mae": float(r.mae), "ci": [float(r.ci_low), float(r.ci_high)],
                                "rank": int(r.rank)} for r in table.itertuples()
                      if r.mae == r.mae and r.rank == r.rank}
            choosable = {n: v for n, v in loo.items() if v is not None and n in scored}
            chosen = min(choosable, key=lambda n: (choosable[n], n)) if choosable else None
            best = min(scored, key=lambda n: (scored[n]["mae"], n)) if scored else None
            evals = [c for c in mine if c.role == "eval"]
            per_adapter[adapter] = {
                "online_accuracy_pp": 100 * mean_by_dataset(
                    [c.targets["adapted"] for c in evals], [c.dataset for c in evals]),
                "entries": scored, "calibration_lodo_mae_pp": loo,
                "chosen": chosen, "best_after_the_fact": best,
                "wf_curve": wf_curves(mine) if adapter in ENTROPY_MINIMIZATION else None}
        summary["models"][model] = per_adapter
    severity_cells = [read_cell(p) for p in sorted((work / "severities" / "cells").glob("*.json"))]
    summary["online_by_severity"] = online_by_severity(cells["mnist-cnn"], severity_cells,
                                                       evaluated)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "adapters.json").write_text(json.dumps(summary, indent=2) + "\n")
    (RESULTS / "adapters.png").write_bytes(figure(summary))
    (RESULTS / "adapters.md").write_text(markdown(summary))
    print((RESULTS / "adapters.md").read_text())


def online_by_severity(main: list[Any], extra: list[Any], evaluated: list[str]
                       ) -> dict[str, dict[str, float]]:
    """mnist-cnn seed 0, per adapter and severity: online accuracy (pp), per-dataset mean over
    the evaluated corruptions that every severity has."""
    from ttabench.scoring.metrics import mean_by_dataset

    pool = [c for c in (*main, *extra) if c.seed == 0 and c.role == "eval" and c.status == "ok"
            and c.dataset in evaluated]
    by_severity = {s: {c.dataset for c in pool if c.split.get("severity") == s}
                   for s in (1, 3, SEVERITY)}
    common = set.intersection(*by_severity.values()) if all(by_severity.values()) else set()
    out: dict[str, dict[str, float]] = {}
    for adapter in ADAPTERS:
        for severity in (1, 3, SEVERITY):
            mine = [c for c in pool if c.adapter == adapter and c.dataset in common
                    and c.split.get("severity") == severity]
            if mine:
                out.setdefault(adapter, {})[str(severity)] = 100 * mean_by_dataset(
                    [c.targets["adapted"] for c in mine], [c.dataset for c in mine])
    return {"datasets": sorted(common), **out} if common else {}  # type: ignore[dict-item]


def _label(entry: str) -> str:
    return entry.replace(" (lin)", "")


def losses(summary: dict[str, Any]) -> list[str]:
    """One line per (model, chosen estimator): the adapters that chose it on calibration data,
    and every adapter under which it ranks in the bottom half on the evaluated corruptions."""
    lines = []
    for model, per in summary["models"].items():
        winners: dict[str, list[str]] = {}
        for adapter, facts in per.items():
            if facts["chosen"] is not None:
                winners.setdefault(facts["chosen"], []).append(adapter)
        for winner, chosen_by in winners.items():
            lost = []
            for other, theirs in per.items():
                got, n = theirs["entries"].get(winner), len(theirs["entries"])
                if got is None or got["rank"] <= n / 2:
                    continue
                best = theirs["best_after_the_fact"]
                lost.append(f"`{other}` (rank {got['rank']} of {n}, {got['mae']:.1f} pp; best "
                            f"`{_label(best)}` {theirs['entries'][best]['mae']:.1f} pp)")
            won = ", ".join(f"`{a}` ({per[a]['entries'][winner]['mae']:.1f} pp)"
                            for a in chosen_by)
            lines.append(f"- {model}: `{_label(winner)}`, chosen under {won}; "
                         + (f"bottom half under {'; '.join(lost)}." if lost
                            else "in the top half under every adapter."))
    return lines


def markdown(summary: dict[str, Any]) -> str:
    protocol = summary["protocol"]
    evaluated = summary["datasets"]["eval"]
    lines = [
        "# Every estimator under every adapter (mnist-c, mnist-cnn and mnist-resnet)",
        "",
        "Commands (each `run` part one process, one thread, at niceness 10, the two in parallel; "
        "then the severities, then the report):",
        "",
        "```bash",
        *summary.get("commands", []),
        "```",
        "",
        f"Protocol: reset-each-split, {protocol['n_examples']} images per split, batch "
        f"{protocol['batch_size']}, {protocol['steps']} steps, seeds {protocol['seeds']}, "
        f"severity {protocol['severity']}; WF (`enigma`) and its variants snapshot the "
        f"{protocol['n_examples']}-image probe at steps {protocol['checkpoints']}. Adapter "
        "parameters: the authors' CIFAR-scale settings (10 classes), the entropy-minimization "
        f"trio and ETA at lr {EM_LR} (`plugins.toml`'s tent/rdumb value). CoTTA is left out: "
        "its CIFAR code runs 32 augmented teacher passes at every step, and even with 4 a "
        "12-step cell took 60-80 s on this shared machine (a third of the study's time). "
        "Calibration "
        f"corruptions: {', '.join(summary['datasets']['calibration'])}; evaluated corruptions "
        f"({len(evaluated)}, those complete for every model, seed and adapter when the runs "
        f"stopped): {', '.join(evaluated)}.",
        "",
        "Every estimator is scored against each adapter's own online accuracy (`adapted`), in "
        "the same view: static estimators on the adapter's online outputs, with source val "
        "through the adapter's model before it adapts (`Adapter.source_val_reference`); score "
        "estimators through a linear map fitted per (model, adapter) on the calibration "
        "corruptions. MAE in pp, averaged per corruption then over corruptions; [95% interval] "
        "resampling corruptions then splits. AETTA is left out (1 + 10 forward passes per "
        "step: more than this machine's time allowed).",
        "",
    ]
    for model, per in summary["models"].items():
        lines += [f"## {model}", "", "Online accuracy (%, evaluated corruptions, severity "
                  f"{protocol['severity']}, 3 seeds):", "",
                  "| " + " | ".join(per) + " |", "|" + "---|" * len(per),
                  "| " + " | ".join(f"{f['online_accuracy_pp']:.1f}" for f in per.values()) + " |",
                  "", "MAE (pp) against each adapter's online accuracy; **bold**: the entry "
                  "chosen on calibration corruptions (leaving out a whole corruption), "
                  "_italic_: the best after the fact:", ""]
        names = sorted({n for f in per.values() for n in f["entries"]})
        lines += ["| estimator | " + " | ".join(per) + " |", "|---|" + "---|" * len(per)]
        for name in names:
            cells = []
            for facts in per.values():
                got = facts["entries"].get(name)
                text = "-" if got is None else f"{got['mae']:.1f}"
                if name == facts["chosen"]:
                    text = f"**{text}**"
                if name == facts["best_after_the_fact"]:
                    text = f"_{text}_"
                cells.append(text)
            lines.append(f"| {_label(name)} | " + " | ".join(cells) + " |")
        lines += ["", "Chosen per adapter (calibration, leave one corruption out) and its "
                  "evaluation:", "", "| adapter | chosen | calibration MAE | eval MAE [95%] | "
                  "rank | best after the fact | its MAE |", "|---|---|---|---|---|---|---|"]
        for adapter, facts in per.items():
            chosen, best = facts["chosen"], facts["best_after_the_fact"]
            if chosen is None:
                continue
            got = facts["entries"][chosen]
            lines.append(
                f"| {adapter} | {_label(chosen)} | "
                f"{facts['calibration_lodo_mae_pp'][chosen]:.1f} | {got['mae']:.1f} "
                f"[{got['ci'][0]:.1f}, {got['ci'][1]:.1f}] | {got['rank']} of "
                f"{len(facts['entries'])} | {_label(best)} | "
                f"{facts['entries'][best]['mae']:.1f} |")
        curves = {a: f["wf_curve"] for a, f in per.items() if f["wf_curve"]}
        steps = sorted({int(k) for c in curves.values() for k in c})
        lines += ["", "WF (weighted flips of the probe since step 0, mean over evaluated "
                  "cells) along each entropy-minimization adapter's trajectory:", "",
                  "| adapter | " + " | ".join(f"step {s}" for s in steps) + " |",
                  "|---|" + "---|" * len(steps)]
        for adapter, curve in curves.items():
            values = {int(k): v for k, v in curve.items()}
            lines.append(f"| {adapter} | " + " | ".join(
                f"{values[s]:.3g}" if s in values else "-" for s in steps) + " |")
        lines.append("")
    severity = summary.get("online_by_severity") or {}
    if severity:
        shown = [a for a in ADAPTERS if a in severity]
        lines += ["## Online accuracy per severity (mnist-cnn, seed 0)", "",
                  f"Corruptions: {', '.join(severity['datasets'])}.", "",
                  "| severity | " + " | ".join(shown) + " |", "|---|" + "---|" * len(shown)]
        for level in ("1", "3", str(SEVERITY)):
            lines.append(f"| {level} | " + " | ".join(
                f"{severity[a].get(level, float('nan')):.1f}" for a in shown) + " |")
        lines.append("")
    lost = losses(summary)
    lines += ["## Where a winner loses", "",
              "Each estimator chosen under some adapter (on calibration corruptions), and the "
              "adapters under which it ranks in the bottom half on the evaluated corruptions:",
              "", *lost, "",
              "![MAE per estimator and adapter; WF trajectories](adapters.png)", ""]
    return "\n".join(lines)


def figure(summary: dict[str, Any]) -> bytes:
    """Per model: a heat map of MAE (estimator x adapter), and the WF trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summary["models"])
    fig, axes = plt.subplots(len(models), 2, figsize=(16, 7 * len(models)),
                             gridspec_kw={"width_ratios": [3, 1]})
    for row, model in enumerate(models):
        per = summary["models"][model]
        names = sorted({n for f in per.values() for n in f["entries"]})
        grid = np.array([[per[a]["entries"].get(n, {}).get("mae", np.nan) for a in per]
                         for n in names])
        ax = axes[row][0]
        image = ax.imshow(np.minimum(grid, 30), cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(per)), list(per), rotation=45, ha="right")
        ax.set_yticks(range(len(names)), [_label(n) for n in names])
        for i in range(len(names)):
            for j in range(len(per)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if grid[i, j] > 15 else "black")
        ax.set_title(f"{model}: MAE (pp) vs each adapter's online accuracy (capped at 30)")
        fig.colorbar(image, ax=ax)
        ax = axes[row][1]
        for adapter, facts in per.items():
            if facts["wf_curve"]:
                curve = facts["wf_curve"]
                ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label=adapter)
        ax.set_xlabel("step")
        ax.set_ylabel("WF")
        ax.set_title(f"{model}: WF along each EM adapter's trajectory")
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("run", "severities", "report"))
    parser.add_argument("--part", type=int, choices=(1, 2), default=1)
    parser.add_argument("--stop-after", type=float, default=65.0, help="minutes")
    parser.add_argument("--eval-datasets", type=int, default=4)
    parser.add_argument("--work", type=Path, default=Path("/tmp/adapters-study"))
    parser.add_argument("--commands", type=Path, default=None,
                        help="a file with the exact commands run, printed in the report")
    args = parser.parse_args(argv)
    if args.what == "run":
        run(args.work, args.part, args.stop_after)
    elif args.what == "severities":
        severities(args.work, args.part, args.eval_datasets)
    else:
        report(args.work, args.commands.read_text().splitlines() if args.commands else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
