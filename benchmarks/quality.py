"""The offline quality benchmark: the plugin's candidates against the baselines on mnist-c,
one table per target.

One command runs (or, with ``--folder``, re-scores) a normal ``ttabench run`` of the
candidates (``--estimator``, default ``enigma``) with every baseline of plugins.toml and writes
benchmarks/results/quality.md and quality.json from its leaderboard: for each target
(``source``, the paper's; ``bn``; ``adapted``) every entry's MAE with its bootstrap interval
(datasets, then splits within them), the chosen baseline of that table (lowest leave-one-out
MAE on the calibration splits), the best baseline after the fact, and each candidate's paired
difference to the chosen baseline (Holm-corrected across the table's comparisons).

    python benchmarks/quality.py [--quick] [--estimator enigma,enigma-source] [--folder DIR]

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

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TTABENCH = [sys.executable, "-m", "ttabench"]


def run(estimators: str, quick: bool, folder: Path | None) -> Path:
    """The run folder: ``folder`` re-scored, else a fresh (resumable) run of the candidates."""
    if folder is not None:
        cmd = [*TTABENCH, "leaderboard", str(folder)]
    else:
        folder = ROOT / "runs" / ("quality-quick" if quick else "quality")
        cmd = [*TTABENCH, "run", "-e", estimators, "-o", str(folder), *(["--quick"] if quick else [])]
    print("$", " ".join(cmd[2:]), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return folder


def summarize(board: dict) -> list[dict]:
    """Per target: the table's baseline choice, its ranked rows and the candidates' standing."""
    out = []
    for block in board["targets"]:
        for table in block["tables"]:
            rows = [r for r in table["rows"] if r.get("mae") is not None]
            out.append({
                "target": block["target"],
                "group": {k: table[k] for k in ("suite", "model", "adapter")},
                "chosen_baseline": table.get("chosen_baseline"),
                "chosen_calib_loo": table.get("chosen_calib_loo"),
                "chosen_mae": table.get("chosen_mae"),
                "best_after_the_fact": table.get("best_after_the_fact"),
                "best_after_the_fact_mae": table.get("best_after_the_fact_mae"),
                "rows": [{k: r.get(k) for k in ("rank", "entry", "role", "mae", "ci_low",
                                                "ci_high", "worst", "calib_loo", "vs", "diff",
                                                "diff_low", "diff_high", "p_holm", "significant")}
                         for r in rows],
            })
    return out


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def markdown(tables: list[dict], board: dict, meta: dict) -> str:
    lines = ["# Quality on the offline suite (mnist-c, mnist-cnn): one table per target", "",
             f"`{meta['command']}` on {meta['date']} ({meta['machine']}, torch {meta['torch']}),"
             f" from the run folder `{meta['folder']}`.", "", board["statistics"], "",
             "Each table scores every estimator on the outputs of the model whose accuracy is "
             "the target (`source`: frozen model; `bn`: batch statistics, in the target's own "
             "batches; `adapted`: the adapter's online outputs); candidates (the plugin's "
             "trajectory estimators) appear in every table with maps fitted against that "
             "table's target.", ""]
    online = board["online"][0] if board["online"] else {}
    lines += [f"Mean accuracy: source {_f(online.get('source'), '.1f')} %, bn "
              f"{_f(online.get('bn'), '.1f')} %, adapted {_f(online.get('adapted'), '.1f')} %.", ""]
    lines += ["## Where the candidates stand against the chosen same-view baseline", "",
              "| target | candidate | MAE | chosen baseline | its MAE | difference [95% CI] | "
              "p (Holm) |", "|---|---|---|---|---|---|---|"]
    for t in tables:
        for r in t["rows"]:
            if r["role"] == "candidate":
                diff = ("-" if r["diff"] is None else
                        f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]")
                lines.append(f"| {t['target']} | {r['entry']} | {_f(r['mae'])} | "
                             f"{t['chosen_baseline']} | {_f(t['chosen_mae'])} | {diff} | "
                             f"{_f(r['p_holm'], '.3f')} |")
    for t in tables:
        lines += ["", f"## Target `{t['target']}`", "",
                  f"Chosen baseline (calibration leave-one-out {_f(t['chosen_calib_loo'])} pp): "
                  f"**{t['chosen_baseline']}**, {_f(t['chosen_mae'])} pp on evaluation. Best "
                  f"baseline after the fact (evaluation MAE, for reference only): "
                  f"{t['best_after_the_fact']}, {_f(t['best_after_the_fact_mae'])} pp.", "",
                  "| rank | entry | role | MAE | 95% CI | worst | calib LOO | vs chosen baseline |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in t["rows"]:
            diff = ("-" if r["diff"] is None else
                    f"{r['diff']:+.2f} [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}], p_holm "
                    f"{r['p_holm']:.3f}")
            lines.append(f"| {r['rank']} | {r['entry']} | {r['role']} | {_f(r['mae'])} | "
                         f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}] | {_f(r['worst'])} | "
                         f"{_f(r['calib_loo'])} | {diff} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimator", default="enigma", help="the candidates (comma list)")
    parser.add_argument("--quick", action="store_true", help="the --quick smoke protocol")
    parser.add_argument("--folder", type=Path, default=None,
                        help="re-score this finished run folder instead of running")
    args = parser.parse_args()
    folder = run(args.estimator, args.quick, args.folder)
    board = json.loads((folder / "leaderboard.json").read_text())
    meta = {"command": "python " + " ".join(["benchmarks/quality.py", *sys.argv[1:]]),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "torch": torch.__version__, "folder": str(folder)}
    tables = summarize(board)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({**meta, "tables": tables}, indent=2) + "\n")
    (RESULTS / "quality.md").write_text(markdown(tables, board, meta))
    print((RESULTS / "quality.md").read_text())


if __name__ == "__main__":
    main()
