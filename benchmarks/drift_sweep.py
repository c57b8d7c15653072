"""Embedding-drift sweep and exclusion experiment of entropy minimization on a small suite.

Reproduces the analysis half of "The Entropy Enigma" at small scale: for each adapter (Tent and
RDumb without reset by default), one long trajectory per split, the probe measured every
``--every`` steps; across splits, the correlation of the silhouette change with the accuracy
change in phase 1 (step 0 -> peak accuracy) and of the shift-distance change with the accuracy
change in phase 2 (peak -> end). The paper: Spearman 0.70 and -0.79 (ResNet-50, ImageNet-C).
Then the exclusion experiment (adapt without the images the source model gets right) on a few
splits. Writes ``<output>/drift_sweep.json``, ``drift_sweep.md`` and a few PNGs under
``<output>/drift/``.

    python benchmarks/drift_sweep.py                               # mnist-c / mnist-cnn
    python benchmarks/drift_sweep.py --suite tiny --model tiny-cnn --splits 'noise-*'
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.store import write_json_atomic
from ttabench_enigma.analysis.cli import (
    adapter_factory,
    analyze_split,
    describe_exclusion,
    load_source,
    run_exclusion,
    select_splits,
)
from ttabench_enigma.analysis.plots import plot_curves, plot_embeddings, plot_sweep
from ttabench_enigma.analysis.trajectory import phase_summary, sweep_correlations

HERE = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mnist-c")
    parser.add_argument("--model", default="mnist-cnn")
    parser.add_argument("--splits", default="*-5", help="glob over split names, or 'all'")
    parser.add_argument("--adapters", default="tent,rdumb")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--probe-size", type=int, default=500)
    parser.add_argument("--lr", type=float, default=None, help="default: the adapter's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exclusion-splits", type=int, default=5,
                        help="run the exclusion experiment on this many of the hardest splits "
                             "(lowest step-0 probe accuracy; 0: skip)")
    parser.add_argument("--exclusion-steps", type=int, default=150)
    parser.add_argument("--exclusion-top-k", type=int, default=1)
    parser.add_argument("--plots", type=int, default=1,
                        help="trajectory plots per adapter (the split with the largest phase-2 drop)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=str(HERE / "results"))
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


def fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


def run_adapter(args: argparse.Namespace, name: str, loaded, suite, reference, splits, plots: Path):
    """Sweep one adapter over the splits; plots for the split with the largest phase-2 drop."""
    make = adapter_factory(name, suite.num_classes, args.steps, False, args.lr)
    rows, frames, embeddings, labels = [], {}, {}, {}
    for spec in splits:
        started = time.perf_counter()
        store: dict[int, np.ndarray] = {}
        frame, probe_labels = analyze_split(
            loaded, suite, spec, make, reference, args.steps, args.every, args.probe_size,
            args.seed, progress=False, embeddings_out=store,
        )
        summary = phase_summary(frame)
        frames[spec.name], labels[spec.name] = frame, probe_labels
        embeddings[spec.name] = {
            s: store[s] for s in {0, summary["peak_step"], summary["end_step"]}
        }
        rows.append({"split": spec.name, **summary,
                     "flips_end": float(frame["flips_unweighted"].iloc[-1])})
        print(f"  {name} {spec.name}: acc {100 * summary['accuracy_start']:.1f} -> "
              f"{100 * summary['accuracy_peak']:.1f} (step {summary['peak_step']}) -> "
              f"{100 * summary['accuracy_end']:.1f}; sil {summary['d_silhouette_1']:+.3f}/"
              f"{summary['d_silhouette_2']:+.3f}; shift {summary['d_shift_1']:+.3f}/"
              f"{summary['d_shift_2']:+.3f} ({time.perf_counter() - started:.0f} s)", flush=True)
    table = pd.DataFrame(rows)
    correlations = sweep_correlations(table)
    plot_sweep(table, plots / f"{name}-sweep.png", title=f"{name} on {args.suite}")
    for split in table.sort_values("d_accuracy_2")["split"].head(args.plots):
        title = f"{name} on {split}"
        plot_curves(frames[split], plots / f"{name}-{split}-curves.png", title=title)
        plot_embeddings(embeddings[split], labels[split], sorted(embeddings[split]),
                        plots / f"{name}-{split}-embeddings.png", reference, title=title)
    exclusion = []
    hardest = table.sort_values("accuracy_start")["split"].head(args.exclusion_splits)
    for spec in [s for s in splits if s.name in set(hardest)]:
        try:
            result = run_exclusion(loaded, suite, spec, make, args.exclusion_steps,
                                   args.exclusion_top_k, args.seed, progress=False)
        except TTABenchError as exc:  # too few images left once the correct ones are removed
            print(f"  {name} {spec.name}: exclusion skipped: {exc}", flush=True)
            continue
        print(f"  {name} {spec.name}: {describe_exclusion(result)}", flush=True)
        exclusion.append({"split": spec.name, **result})
    return {"correlations": correlations, "splits": rows, "exclusion": exclusion,
            "params": make(copy.deepcopy(loaded.module)).params()}


def markdown(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [
        "# Embedding drift under entropy minimization",
        "",
        f"`python benchmarks/drift_sweep.py --suite {s['suite']} --model {s['model']} "
        f"--splits '{s['splits']}' --steps {s['steps']} --every {s['every']} "
        f"--probe-size {s['probe_size']}"
        + (f" --lr {s['lr']}" if s["lr"] is not None else "")
        + f" --exclusion-steps {s['exclusion_steps']}` ({report['elapsed_s']:.0f} s on "
        f"{s['threads']} CPU threads). Trajectories without reset; probe = first "
        f"{s['probe_size']} images of the seeded stream; phase boundary = step of peak "
        "probe accuracy.",
        "",
        "## Correlations across splits (paper, ResNet-50 on ImageNet-C: 0.70 and -0.79)",
        "",
        "| adapter | splits | phase 1 Spearman (d sil, d acc) | Pearson | "
        "phase 2 Spearman (d shift, d acc) | Pearson |",
        "|---|---|---|---|---|---|",
    ]
    for name, result in report["adapters"].items():
        c1, c2 = result["correlations"]["phase1"], result["correlations"]["phase2"]
        lines.append(f"| {name} | {c1['n']} | {fmt(c1['spearman'])} | {fmt(c1['pearson'])} | "
                     f"{fmt(c2['spearman'])} | {fmt(c2['pearson'])} |")
    lines += ["", "## Phases (means over splits; accuracy in %)", "",
              "| adapter | acc step 0 | acc peak | acc end | peak step (median) | "
              "d sil ph.1 | d sil ph.2 | d shift ph.1 | d shift ph.2 | splits that drop > 5 pp "
              "after the peak |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, result in report["adapters"].items():
        t = pd.DataFrame(result["splits"])
        drops = int((t["d_accuracy_2"] < -0.05).sum())
        lines.append(
            f"| {name} | {100 * t['accuracy_start'].mean():.1f} | "
            f"{100 * t['accuracy_peak'].mean():.1f} | {100 * t['accuracy_end'].mean():.1f} | "
            f"{t['peak_step'].median():.0f} | {t['d_silhouette_1'].mean():+.3f} | "
            f"{t['d_silhouette_2'].mean():+.3f} | {t['d_shift_1'].mean():+.3f} | "
            f"{t['d_shift_2'].mean():+.3f} | {drops} of {len(t)} |")
    lines += ["", "## Exclusion experiment (paper: +10.5 pp without the correct images, "
              "+12.4 pp with all)", "",
              "| adapter | split | removed / half | acc before | after, filtered | "
              "after, unfiltered |", "|---|---|---|---|---|---|"]
    for name, result in report["adapters"].items():
        for e in result["exclusion"]:
            lines.append(
                f"| {name} | {e['split']} | {e['removed']} / {e['adapt_images']} | "
                f"{100 * e['accuracy_before']:.1f} | {100 * e['accuracy_after_filtered']:.1f} "
                f"({100 * e['gain_filtered']:+.1f}) | {100 * e['accuracy_after_unfiltered']:.1f} "
                f"({100 * e['gain_unfiltered']:+.1f}) |")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    output = Path(args.output)
    plots = output / "drift"
    plots.mkdir(parents=True, exist_ok=True)
    suite = registry.make_suite(args.suite, args.data_dir)
    splits = select_splits(suite, args.splits, sweep=True)
    loaded, reference = load_source(args.model, suite)
    print(f"{len(splits)} splits of {args.suite}, model {loaded.model_id}", flush=True)
    adapters = {}
    for name in args.adapters.split(","):
        adapters[name] = run_adapter(args, name, loaded, suite, reference, splits, plots)
    report = {
        "settings": {**vars(args), "model_id": loaded.model_id,
                     "weights_hash": loaded.weights_hash, "torch": torch.__version__,
                     "machine": platform.machine(), "rdumb_reset_every": args.steps + 1},
        "adapters": adapters,
        "elapsed_s": time.perf_counter() - started,
    }
    write_json_atomic(output / "drift_sweep.json", nan_to_none(report))
    (output / "drift_sweep.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
