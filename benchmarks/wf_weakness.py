"""Why Weighted Flips is weak on mnist-c, measured on the cells of the quality study.

One command, after ``benchmarks/quality.py`` (it runs nothing, it reads
``runs/quality/<model>``)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/wf_weakness.py

Per model, on the evaluation cells (each split's values averaged over the stream seeds run)
and the meta-set cells, with ``WF@k`` the paper's score (``enigma``'s ``wf@k``: the sum over
flipped probe images of their step-0 confidence rank / n, n = 1,000) and ``U@k`` the flip rate
(``enigma-signals``' ``flips@k``):

1. how many evaluation splits have ``WF@K < 5`` at the last checkpoint K (the flips weigh less
   than five of the most confident images), and the spread of their source and bn accuracies;
2. Spearman correlations over the evaluation splits of ``WF@k`` with the bn accuracy and with
   the source accuracy, each checkpoint;
3. ``WF@k / (flip count at k)`` per split: the mean rank weight of the flipped images (about
   0.5 if images flipped regardless of confidence), its median and quartiles over the splits
   that flip;
4. ``WF@k`` against ``U@k`` as estimators of the bn and the source accuracy at each checkpoint:
   the map kind chosen by leave-one-dataset-out on the meta-set (``beyond_paper.choose_score``),
   fitted there, the evaluation MAE of each, the paired difference with a 95 % bootstrap
   interval (datasets, then cells: ``beyond_paper.ratio``); the calibration (nested LODO) error
   of each checkpoint says what the step count buys.

Writes ``benchmarks/results/wf_weakness.{md,json}``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
from beyond_paper import _scores, choose_score, ratio  # noqa: E402
from quality import protocol_facts, run_folders  # noqa: E402

from ttabench.records import Cell  # noqa: E402
from ttabench.scoring.leaderboard import load_cells  # noqa: E402
from ttabench.store import write_bytes_atomic, write_json_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("mnist-cnn", "mnist-resnet")
SMALL_WF = 5.0
COMMAND = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/wf_weakness.py"


def steps_of(cells: list[Cell]) -> list[int]:
    """The checkpoints k > 0 at which every cell has ``wf@k``."""
    common = set.intersection(*(set(_scores(c, "enigma")) for c in cells))
    return sorted(int(m.group(1)) for n in common if (m := re.match(r"^wf@(\d+)$", n)))


def per_split(evals: list[Cell], steps: list[int]) -> dict[str, dict[str, float]]:
    """Per evaluation split, the mean over its seeds of WF@k, the mean rank weight of the
    flipped images ``WF@k / (flip count at k)`` (NaN without flips), and the two accuracies."""
    rows: dict[str, list[dict[str, float]]] = defaultdict(list)
    for cell in evals:
        result = cell.estimators["enigma"].in_view("bn")
        assert result is not None
        curve = {c["step"]: c for c in result.extras["flip_curve"]}
        rows[cell.split["name"]].append({
            **{f"wf@{k}": curve[k]["wf"] for k in steps},
            **{f"weight@{k}": curve[k]["wf"] / curve[k]["u"] if curve[k]["u"] else np.nan
               for k in steps},
            "source": 100 * cell.targets["source"], "bn": 100 * cell.targets["bn"]})
    return {split: {key: float(np.mean([r[key] for r in rs])) for key in rs[0]}
            for split, rs in sorted(rows.items())}


def analyse(folder: Path) -> dict[str, Any]:
    cells = [c for c in load_cells(run_folders(folder)) if c.status == "ok"]
    calib = [c for c in cells if c.role == "calibration"]
    evals = [c for c in cells if c.role == "eval"]
    steps = steps_of(cells)
    last = steps[-1]
    splits = per_split(evals, steps)
    values = list(splits.values())
    small = [v for v in values if v[f"wf@{last}"] < SMALL_WF]
    out: dict[str, Any] = {
        "facts": protocol_facts(folder), "steps": steps, "splits": len(splits),
        "small": {"threshold": SMALL_WF, "step": last, "count": len(small),
                  "source_range": [min(v["source"] for v in small), max(v["source"] for v in small)]
                  if small else None,
                  "bn_range": [min(v["bn"] for v in small), max(v["bn"] for v in small)]
                  if small else None},
        "per_step": {}}
    for k in steps:
        wf = np.array([v[f"wf@{k}"] for v in values])
        weights = np.array([v[f"weight@{k}"] for v in values])
        flipping = np.isfinite(weights)
        weight = weights[flipping]
        row: dict[str, Any] = {
            "spearman_bn": float(spearmanr(wf, [v["bn"] for v in values])[0]),
            "spearman_source": float(spearmanr(wf, [v["source"] for v in values])[0]),
            "flipped_weight": [float(np.quantile(weight, q)) for q in (0.25, 0.5, 0.75)]
            if flipping.any() else None,
            "splits_flipping": int(flipping.sum())}
        for target in ("bn", "source"):
            wf_fit = choose_score(calib, evals, target, "enigma", [f"wf@{k}"])
            u_fit = choose_score(calib, evals, target, "enigma-signals", [f"flips@{k}"])
            row[target] = {"wf": wf_fit.choice, "wf_calib": wf_fit.calib,
                           "u": u_fit.choice, "u_calib": u_fit.calib,
                           **ratio(evals, target, wf_fit.estimates, u_fit.estimates)}
        out["per_step"][str(k)] = row
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Why Weighted Flips is weak on mnist-c", "",
             f"`{report['command']}` on {report['date']}, from the cells of "
             "`benchmarks/quality.py` (protocol in `benchmarks/results/quality.md`). WF@k: the "
             "paper's score (sum over flipped probe images of rank(step-0 confidence) / n, n = "
             "1,000 probe images); U@k: the flip rate. Each split's values are averaged over "
             "the stream seeds run.", ""]
    for model, r in report["models"].items():
        f, s = r["facts"], r["small"]
        lines += [f"## {model}", "",
                  f"{f['eval_cells']} evaluation cells ({r['splits']} splits, seeds "
                  f"{', '.join(map(str, f['seeds']))}); {f['meta_sets']} meta-set sets "
                  f"({f['meta_families']} families).", ""]
        if s["count"]:
            lines += [f"**{s['count']} of {r['splits']}** evaluation splits have WF@{s['step']} "
                      f"< {s['threshold']:g} (their flips weigh less than {s['threshold']:g} of "
                      f"the most confident images), while their source accuracy spans "
                      f"{s['source_range'][0]:.1f}-{s['source_range'][1]:.1f} % and their bn "
                      f"accuracy {s['bn_range'][0]:.1f}-{s['bn_range'][1]:.1f} %.", ""]
        else:
            lines += [f"No evaluation split has WF@{s['step']} < {s['threshold']:g}.", ""]
        lines += ["| k | Spearman(WF@k, bn) | Spearman(WF@k, source) | mean rank weight of "
                  "flipped images, median [quartiles] over splits | bn: WF@k MAE (kind, calib) "
                  "| bn: U@k MAE (kind, calib) | bn: WF - U [95 %] | source: WF@k MAE | source: "
                  "U@k MAE | source: WF - U [95 %] |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, row in r["per_step"].items():
            w = row["flipped_weight"]
            weight = "-" if w is None else f"{w[1]:.2f} [{w[0]:.2f}, {w[2]:.2f}]"
            cells = []
            for target in ("bn", "source"):
                t = row[target]
                wf_kind, u_kind = t["wf"].split("/")[1], t["u"].split("/")[1]
                cells += [f"{t['mae']:.2f} ({wf_kind}, {t['wf_calib']:.2f})",
                          f"{t['baseline_mae']:.2f} ({u_kind}, {t['u_calib']:.2f})",
                          f"{t['diff']:+.2f} [{t['diff_low']:+.2f}, {t['diff_high']:+.2f}]"]
            lines.append(f"| {k} | {row['spearman_bn']:.2f} | {row['spearman_source']:.2f} | "
                         f"{weight} | " + " | ".join(cells) + " |")
        lines += ["", "MAE in pp on the evaluation cells; kind: the map kind chosen by "
                  "leave-one-dataset-out on the meta-set; calib: that choice's nested LODO "
                  "error (pp). WF - U: paired difference of the two MAEs (negative: WF better), "
                  "95 % bootstrap over datasets, then cells.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "quality")
    args = parser.parse_args()
    narrowed = args.models != ",".join(MODELS)
    report = {"command": COMMAND + (f" --models {args.models}" if narrowed else ""),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "models": {m: analyse(args.runs / m) for m in args.models.split(",")}}
    write_json_atomic(RESULTS / "wf_weakness.json", report)
    write_bytes_atomic(RESULTS / "wf_weakness.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
