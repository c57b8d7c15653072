"""The offline quality benchmark: enigma and its variants against the baselines on mnist-c.

Runs (each a normal ``ttabench run`` into runs/quality-*, resumable):

- ``rdumb``: the default protocol of plugins.toml with the enigma variants that share its
  trajectory (enigma = WF, enigma-unweighted, enigma-source) and every baseline; the dense
  checkpoints of plugins.toml give the ``[best]`` entries (step chosen on calibration splits
  only);
- ``tent``: the same estimators with Tent instead of RDumb;
- ``ts``: ``enigma+ts`` (WF with step-0 confidences temperature-scaled, T fitted on the
  labelled source-validation split) on the RDumb trajectory;
- ``faithful`` (``--faithful``): the reference protocol (probe 1,000, snapshots at 0 and 990)
  on severities 1, 3, 5 (it costs five times the default run).

Then it writes benchmarks/results/quality.md and quality.json: for each target (``source``, the
paper's; ``bn``, what WF's snapshots see) every entry's MAE with its bootstrap interval over
splits, the ratio to the best baseline, and the paired bootstrap difference to it.

    python benchmarks/quality.py [--faithful]

Runs resume: a rerun with every cell finished only re-scores and rewrites the summary.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from ttabench.scoring.metrics import paired_difference

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TTABENCH = [sys.executable, "-m", "ttabench"]
VARIANTS = ["enigma", "enigma-unweighted", "enigma-source"]
BASELINE_PREFIXES = ("ac", "doc", "atc", "cot", "nuclear", "mano", "mde", "dispersion")


def run(name: str, extra: list[str], estimators: list[str] = VARIANTS) -> Path:
    out = ROOT / "runs" / f"quality-{name}"
    cmd = [*TTABENCH, "run", "-e", ",".join(estimators), "-o", str(out), *extra]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def is_baseline(entry: str) -> bool:
    return not entry.startswith("enigma")


def summarize(name: str, folder: Path, reference: dict | None = None) -> dict:
    """One run's tables. A run without baselines (Tent) borrows the best-baseline MAE of
    ``reference`` (the RDumb run): static baselines do not depend on the adapter."""
    board = json.loads((folder / "leaderboard.json").read_text())
    rows = [r for r in board["table"] if r.get("mae") is not None]
    out = {"run": name, "folder": str(folder.relative_to(ROOT)), "online": board["online"],
           "targets": {}}
    for target in ("source", "bn"):
        table = sorted((r for r in rows if r["target"] == target), key=lambda r: r["mae"])
        baselines = [r for r in table if is_baseline(r["estimator"])]
        best = baselines[0] if baselines else None
        if best is None and reference is not None:
            borrowed = reference["targets"][target]
            best = {"entry": borrowed["best_baseline"] + " (from the rdumb run)",
                    "mae": borrowed["best_baseline_mae"]}
        entries = []
        for r in table:
            entries.append({
                "entry": r["entry"], "declared": r["declared"], "mae": r["mae"],
                "ci": [r["ci_low"], r["ci_high"]], "worst": r["worst"], "n_cells": r["n_cells"],
                "spearman": r["spearman"],
                "ratio_to_best_baseline": r["mae"] / best["mae"] if best else None,
            })
        out["targets"][target] = {"best_baseline": best and best["entry"],
                                  "best_baseline_mae": best and best["mae"], "entries": entries}
    out["paired"] = [] if reference else paired_to_best_baseline(folder, out["targets"])
    return out


def paired_to_best_baseline(folder: Path, targets: dict) -> list[dict]:
    """Paired bootstrap MAE difference of every enigma entry to the best baseline, per target,
    on the same evaluation splits (negative: enigma better)."""
    pairs = pd.read_csv(folder / "pairs.csv")
    out = []
    for target, table in targets.items():
        best = table["best_baseline"]
        if best is None:
            continue
        base = pairs[(pairs.entry == best) & (pairs.target == target)].set_index("key")
        for entry in sorted({e["entry"] for e in table["entries"] if not is_baseline(e["entry"])}):
            mine = pairs[(pairs.entry == entry) & (pairs.target == target)].set_index("key")
            keys = mine.index.intersection(base.index)
            diff = paired_difference(mine.loc[keys, "estimate"], base.loc[keys, "estimate"],
                                     mine.loc[keys, "true"], list(mine.loc[keys, "dataset"]),
                                     n_boot=2000, seed=0)
            out.append({"entry": entry, "target": target, "vs": best, "diff": diff.difference,
                        "diff_low": diff.low, "diff_high": diff.high,
                        "significant": diff.significant})
    return out


def markdown(summaries: list[dict], meta: dict) -> str:
    lines = ["# Quality on the offline suite (mnist-c, mnist-cnn)", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}, torch {meta['torch']}).",
             "MAE in percentage points, averaged per corruption first, over the 75 evaluation "
             "splits; maps of score estimators fitted on the 21 calibration splits (4 holdout "
             "corruptions x 5 severities + clean). 95% bootstrap intervals over splits.", ""]
    for s in summaries:
        online = s["online"][0] if s["online"] else {}
        lines += [f"## {s['run']} (`{s['folder']}`)", "",
                  f"Mean accuracy: source {online.get('source', float('nan')):.1f} %, "
                  f"bn {online.get('bn', float('nan')):.1f} %, adapted "
                  f"{online.get('adapted', float('nan')):.1f} %.", ""]
        for target, t in s["targets"].items():
            lines += [f"### against `{target}` (best baseline: {t['best_baseline']})", "",
                      "| entry | declared | MAE | 95% CI | worst | Spearman | / best baseline |",
                      "|---|---|---|---|---|---|---|"]
            for e in t["entries"]:
                ratio = e["ratio_to_best_baseline"]
                rho = e["spearman"]
                lines.append(
                    f"| {e['entry']} | {e['declared']} | {e['mae']:.2f} | "
                    f"[{e['ci'][0]:.2f}, {e['ci'][1]:.2f}] | {e['worst']:.2f} | "
                    f"{'-' if rho is None else f'{rho:.2f}'} | "
                    f"{'-' if ratio is None else f'{ratio:.2f}'} |")
            lines.append("")
        lines += ["Paired bootstrap difference to the best baseline (entry MAE minus baseline "
                  "MAE on the same splits, same target; negative = entry better):", "",
                  "| entry | target | vs | difference | 95% CI | outside 0 |", "|---|---|---|---|---|---|"]
        for p in s["paired"]:
            if p["diff"] is None:
                continue
            lines.append(f"| {p['entry']} | {p['target']} | {p['vs']} | {p['diff']:.2f} | "
                         f"[{p['diff_low']:.2f}, {p['diff_high']:.2f}] | {p['significant']} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faithful", action="store_true", help="also run the reference protocol")
    parser.add_argument("--skip-tent", action="store_true")
    args = parser.parse_args()
    runs = [("rdumb", run("rdumb", []))]
    if not args.skip_tent:
        runs.append(("tent", run("tent", ["-a", "tent", "--no-baselines"])))
    runs.append(("rdumb, temperature-scaled WF",
                 run("ts", ["--no-baselines"], ["enigma+ts"])))
    if args.faithful:
        out = ROOT / "runs" / "quality-faithful"
        cmd = [*TTABENCH, "run", "-e", "enigma", "--set", "estimator.enigma.faithful=true",
               "--set", "estimator.enigma.checkpoints=[0, 990]", "--set",
               "estimator.enigma.estimate_at=990", "--severities", "1", "--severities", "3",
               "--severities", "5", "--no-baselines", "-o", str(out)]
        print("$", " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
        runs.append(("faithful", out))
    meta = {"command": "python " + " ".join(sys.argv),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "torch": torch.__version__}
    first = summarize(*runs[0])
    summaries = [first] + [summarize(name, folder, reference=first) for name, folder in runs[1:]]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({**meta, "runs": summaries}, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(markdown(summaries, meta))
    print((RESULTS / "quality.md").read_text())


if __name__ == "__main__":
    main()
