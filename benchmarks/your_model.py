"""Your model, your data, end to end on the offline suite: calibrate ``mnist-cnn`` from its
labelled source-validation images only, then estimate each ``mnist-c`` evaluation split as a
folder of unlabelled images, and compare with the benchmark's own numbers.

Steps (each resumable: a rerun skips what is finished; every result file is written
atomically):

1. the 500 labelled source-validation digits of ``mnist-c`` written as PNG class folders
   ``WORK/labelled/<digit>/`` (the only labelled images the calibration sees);
2. ``ttabench calibrate -m mnist-cnn --labelled WORK/labelled --set-size 2000 -o
   WORK/calibration.json --cells WORK/calibrate-cells`` with the repository's ``plugins.toml``
   (its estimators, baselines, adapter and parameters); sets of 2000 images, as many as an
   evaluation split holds;
3. each of the 75 evaluation splits written as a flat folder of 2000 PNGs (no labels), and
   ``ttabench estimate --calibration WORK/calibration.json --data WORK/splits/<split> --all
   --json`` on it (one process per split), its report kept in
   ``WORK/estimates/n<n-boot>-b<bootstrap>/<split>.json`` (reports of other settings are kept
   apart, never mixed into one table);
4. the benchmark's own run, ``ttabench run -o WORK/benchmark`` (the default protocol of the
   same ``plugins.toml``; or ``--bench-run DIR``, a finished one): its leaderboard gives the
   benchmark's MAE of the same entries; each split's true ``source`` accuracy is the frozen
   model's on its labelled images;
5. the report: per calibrated estimator (its best entry; the chosen one first) the MAE over the
   75 splits (pp, per-dataset averaged, as the leaderboard averages) beside the leaderboard's
   MAE of the same entry, the share of splits whose true accuracy the 95% interval covers and
   the interval's mean width; written to ``benchmarks/results/your_model.{md,json}``.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/your_model.py [--work runs/your-model]
        [--jobs 2] [--n-boot 200] [--bootstrap 5] [--limit N] [--note TEXT]

The splits are estimated in a seeded stratified order (``stratified_order``: every 15 in a
row hold each corruption once and each severity three times), so ``--splits N`` (N >= 15) is a
stratified subset, every corruption in it, where time does not allow all 75; the benchmark's
MAE is then given over the same splits too (from the run's ``pairs.csv``). ``--limit N``
estimates only the first N splits of that order (a smoke run: its report goes to
``WORK/smoke/``, its figures are not findings). ``--note TEXT`` is printed in the report (what
was reduced from the defaults and why). The report names the commit the code was at.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ttabench import registry
from ttabench.api import to_unit_float
from ttabench.errors import TTABenchError
from ttabench.paths import cache_dir
from ttabench.records import Cell, read_cell
from ttabench.runner.cells import git_revision
from ttabench.scoring.maps import direct_estimate, record, role
from ttabench.scoring.maps import truth as cell_truth
from ttabench.scoring.metrics import mae_by_dataset
from ttabench.store import write_bytes_atomic, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TTABENCH = str(Path(sys.executable).with_name("ttabench"))


def run(args: list[str], log: Path) -> None:
    """Run a ttabench command, its output appended to ``log``; a failure stops the script."""
    with open(log, "a") as handle:
        handle.write(f"\n$ {shlex.join(args)}\n")
        handle.flush()
        done = subprocess.run(args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{shlex.join(args)} failed (exit {done.returncode}); see {log}")


def write_pngs(folder: Path, images: np.ndarray, names: list[str]) -> None:
    """uint8 NHWC images as PNG files (``names`` relative to ``folder``), unless the folder is
    complete already (a marker file written last)."""
    marker = folder / ".complete"
    if marker.is_file():
        return
    for image, name in zip(images, names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(path)
    write_bytes_atomic(marker, f"{len(names)}\n")


def export(work: Path) -> tuple[Any, list[Any]]:
    """Steps 1 and 3's folders: the labelled digits and every evaluation split."""
    suite = registry.make_suite("mnist-c")
    images, labels = suite.source_val().arrays()
    write_pngs(work / "labelled", images.transpose(0, 2, 3, 1),
               [f"{int(y)}/{i:04d}.png" for i, y in enumerate(labels)])
    splits = [s for s in suite.splits() if s.role == "eval"]
    for split in splits:
        pixels, _ = suite.dataset(split).arrays()
        write_pngs(work / "splits" / split.name, pixels.transpose(0, 2, 3, 1),
                   [f"{i:04d}.png" for i in range(len(pixels))])
    return suite, splits


@torch.no_grad()
def true_accuracies(suite: Any, splits: list[Any]) -> dict[str, float]:
    """Each evaluation split's true ``source`` accuracy: the frozen ``mnist-cnn`` (eval mode,
    running statistics) on its labelled images, as a run's ``source`` target counts it."""
    model = registry.load_model("mnist-cnn", cache_dir()).module.eval()
    out = {}
    for split in splits:
        images, labels = suite.dataset(split).arrays()
        x = to_unit_float(torch.from_numpy(images))
        predicted = torch.cat([model(x[i:i + 500]).argmax(1) for i in range(0, len(x), 500)])
        out[split.name] = float((predicted == torch.from_numpy(labels)).double().mean())
    return out


def stratified_order(splits: list[Any], seed: int) -> list[Any]:
    """The splits in rounds: round r holds, for the d-th dataset (sorted by name), its split of
    severity rank ``perm[(r + d) % k]`` (k splits per dataset, ``perm`` a permutation of range
    k drawn from ``numpy.random.default_rng(seed)``), so every round holds each dataset once
    and, over 15 datasets of 5 severities, each severity three times. Datasets with fewer
    splits drop out of the later rounds."""
    by_dataset: dict[str, list[Any]] = {}
    for split in splits:
        by_dataset.setdefault(split.dataset, []).append(split)
    groups = [sorted(by_dataset[d], key=lambda s: (s.severity, s.name))
              for d in sorted(by_dataset)]
    k = max(len(g) for g in groups)
    perm = np.random.default_rng(seed).permutation(k)
    order = []
    for r in range(k):
        for d, group in enumerate(groups):
            rank = int(perm[(r + d) % k])
            if rank < len(group):
                order.append(group[rank])
    return order


def benchmark_pairs(bench: Path, splits: list[str]) -> tuple[dict[str, float],
                                                             dict[str, float]]:
    """From the run's ``pairs.csv`` (``source`` target): each entry's MAE over ``splits``
    only (per-dataset averaged; entries without every one of them left out), and each split's
    true accuracy as the run counted it."""
    wanted = set(splits)
    per_entry: dict[str, dict[str, tuple[float, float, str]]] = {}
    with open(bench / "pairs.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["target"] == "source" and row["split"] in wanted:
                per_entry.setdefault(row["entry"], {})[row["split"]] = (
                    float(row["estimate"]), float(row["true"]), row["dataset"])
    maes, truth = {}, {}
    for entry, got in per_entry.items():
        if set(got) != wanted:
            continue
        rows = [got[s] for s in splits]
        maes[entry] = mae_by_dataset([r[0] for r in rows], [r[1] for r in rows],
                                     [r[2] for r in rows])
        truth.update({s: got[s][1] for s in splits})
    return maes, truth


def benchmark_direct(bench: Path, splits: list[str], entries: list[str]) -> tuple[
        dict[str, float], dict[str, float]]:
    """Before the run has finished (no ``pairs.csv`` yet): the MAE over ``splits`` of each
    direct entry (an accuracy the estimator gives itself, no map) from the run's finished
    evaluation cells, read as its leaderboard reads them (``record``, ``direct_estimate``,
    ``truth`` of ``ttabench.scoring.maps``, target ``source``), and each split's truth there.
    Mapped entries need the run's calibration cells and are left out; so is every entry when a
    split's cell is not finished yet."""
    wanted = set(splits)
    found: dict[str, Cell] = {}
    for path in sorted((bench / "cells").glob("*.json")):
        try:
            cell = read_cell(path)
        except TTABenchError:
            continue
        if cell.status == "ok" and role(cell) == "eval" and cell.split["name"] in wanted:
            found[cell.split["name"]] = cell
    if set(found) != wanted:
        return {}, {}
    cells = [found[s] for s in splits]
    truth_of = {s: cell_truth(found[s], "source") for s in splits}
    maes = {}
    for entry in entries:
        got = []
        for cell in cells:
            rec = cell.estimators.get(entry)
            res = record(cell, entry, "source")
            got.append(None if rec is None or res is None else direct_estimate(res, rec.kind))
        if all(v is not None for v in got) and all(t is not None for t in truth_of.values()):
            maes[entry] = mae_by_dataset([float(v or 0) for v in got],
                                         [float(truth_of[s] or 0) for s in splits],
                                         [c.dataset for c in cells])
    return maes, {s: float(t) for s, t in truth_of.items() if t is not None}


def leaderboard_maes(bench: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """The ``source`` table of the benchmark's leaderboard: MAE per entry, and its choices
    (none while the run has not finished: no ``leaderboard.json`` yet)."""
    if not (bench / "leaderboard.json").is_file():
        return {}, {}
    board = json.loads((bench / "leaderboard.json").read_text())
    table = next(t for t in board["targets"] if t["target"] == "source")["tables"][0]
    maes = {row["entry"]: row["mae"] for row in table["rows"] if row.get("mae") is not None}
    choice = {k: table.get(k) for k in ("chosen_baseline", "chosen_mae", "chosen_candidate",
                                        "candidate_mae", "best_after_the_fact",
                                        "best_after_the_fact_mae")}
    return maes, choice


def estimates_folder(work: Path, n_boot: int, bootstrap: int) -> Path:
    """Where the estimate reports of one bootstrap setting are kept."""
    return work / "estimates" / f"n{n_boot}-b{bootstrap}"


def estimate_all(work: Path, calibration: Path, splits: list[Any],
                 args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Step 3: ``ttabench estimate ... --all --json`` on every split's folder, ``args.jobs``
    processes at a time (one thread each); a report kept (for the same ``--n-boot`` and
    ``--bootstrap``) is not computed again."""
    kept = estimates_folder(work, args.n_boot, args.bootstrap)
    pending = [s for s in splits if not (kept / f"{s.name}.json").is_file()]
    running: list[tuple[Any, subprocess.Popen[str]]] = []
    finished = len(splits) - len(pending)
    while pending or running:
        while pending and len(running) < args.jobs:
            split = pending.pop(0)
            running.append((split, subprocess.Popen(
                [TTABENCH, "estimate", "--calibration", str(calibration), "--data",
                 str(work / "splits" / split.name), "--all", "--json", "--n-boot",
                 str(args.n_boot), "--bootstrap", str(args.bootstrap), "--threads", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)))
        split, process = running.pop(0)
        out, err = process.communicate()
        if process.returncode:
            raise SystemExit(f"estimate on {split.name} failed: {err.strip()}")
        write_bytes_atomic(kept / f"{split.name}.json", out)
        finished += 1
        print(f"[{finished}/{len(splits)}] {split.name}", flush=True)
    return {s.name: json.loads((kept / f"{s.name}.json").read_text()) for s in splits}


def summarise(calibration: dict[str, Any], reports: dict[str, dict[str, Any]],
              truth: dict[str, float], datasets: dict[str, str],
              board: dict[str, float], same: dict[str, float] | None = None
              ) -> list[dict[str, Any]]:
    """Per calibrated estimator's best entry: MAE, coverage and width over the splits, beside
    the benchmark's MAE of the same entry (``board``: the leaderboard's, over all its splits;
    ``same``: over these splits)."""
    names = [r["entry"] for r in next(iter(reports.values()))["all"]]
    rows = []
    for name in names:
        got = [(split, next(r for r in rep["all"] if r["entry"] == name))
               for split, rep in reports.items()]
        est = np.array([r["estimate"] for _, r in got])
        true = np.array([truth[s] for s, _ in got])
        low = np.array([r["interval"][0] for _, r in got])
        high = np.array([r["interval"][1] for _, r in got])
        sampling = np.array([r["sampling_interval"][1] - r["sampling_interval"][0]
                             for _, r in got])
        entry = next(e for e in calibration["entries"] if e["name"] == name)
        rows.append({
            "entry": name, "chosen": name == calibration["chosen"],
            "calibration_lodo_mae": entry["lodo_mae"], "error_q95_pp": 100 * entry["error_q95"],
            "mae": mae_by_dataset(est, true, [datasets[s] for s, _ in got]),
            "benchmark_mae": board.get(name),
            "benchmark_mae_same_splits": (same or {}).get(name),
            "coverage": float(np.mean((low <= true) & (true <= high))),
            "sampling_coverage": float(np.mean(
                [r["sampling_interval"][0] <= truth[s] <= r["sampling_interval"][1]
                 for s, r in got])),
            "mean_width_pp": 100 * float(np.mean(high - low)),
            "mean_sampling_width_pp": 100 * float(np.mean(sampling)),
            "n_splits": len(got)})
    return sorted(rows, key=lambda r: (not r["chosen"], r["calibration_lodo_mae"]))


def markdown(result: dict[str, Any]) -> str:
    c = result["benchmark_choice"]
    lines = [
        "# Your model, your data: calibrate on labelled images, estimate on unlabelled folders",
        "",
        f"`{result['command']}` at commit `{result['commit']}`, on {result['date']} "
        f"({result['machine']}); {result['seconds']['total']:.0f} s in all (steps already "
        "finished by an earlier, interrupted invocation are kept, not timed again).",
        "",
        *([f"**Note:** {result['note']}", ""] if result.get("note") else []),
        f"`mnist-cnn` calibrated by `ttabench calibrate` from the {result['labelled']} labelled "
        "source-validation digits of `mnist-c` only (PNG class folders; its meta-set: "
        f"{result['meta_set']['n_sets']} sets of {result['meta_set']['set_size']} images, "
        f"{result['n_families']} families, none an evaluation corruption), with the "
        "repository's `plugins.toml` (estimators, baselines, adapter, parameters); then each of "
        f"the {result['n_splits']} evaluation splits (2,000 images) estimated by `ttabench "
        "estimate --calibration ... --all` as a folder of unlabelled PNGs. True accuracy: the "
        "split's `source` accuracy (the frozen model on its labelled images). The "
        "benchmark's numbers: the `source` table of `ttabench run` with the same "
        "`plugins.toml` (its maps fitted on the same meta-set built from the same 500 digits).",
        "",
        *([f"**The benchmark run `{result['bench_run']}` had not finished** (no "
           "`leaderboard.json`): the leaderboard's column is empty and the benchmark's MAE on "
           "the same splits is given for the direct entries only (from its finished evaluation "
           "cells; a mapped entry needs its calibration cells); rerun this command once it has "
           "finished (every estimate is kept).", ""] if not result.get("bench_finished", True)
          else []),
        f"Chosen by the calibration: **{result['chosen']}** (leave-one-dataset-out MAE on the "
        f"meta-set {result['rows'][0]['calibration_lodo_mae']:.2f} pp). The benchmark's own "
        f"choices on the same meta-set: baseline {c.get('chosen_baseline')} "
        f"({_fmt(c.get('chosen_mae'))} pp on evaluation), candidate "
        f"{c.get('chosen_candidate')} ({_fmt(c.get('candidate_mae'))} pp); best baseline after "
        f"the fact {c.get('best_after_the_fact')} ({_fmt(c.get('best_after_the_fact_mae'))} pp).",
        "",
        "| entry (each estimator's best map) | calibration LODO MAE | MAE over the splits "
        "(your-model path) | benchmark's MAE, same entry, same splits | leaderboard MAE (all "
        "its splits) | 95% interval coverage | mean width (pp) | coverage of the image "
        "bootstrap alone | its mean width (pp) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        name = f"**{r['entry']}** (chosen)" if r["chosen"] else r["entry"]
        lines.append(f"| {name} | {r['calibration_lodo_mae']:.2f} | {r['mae']:.2f} | "
                     f"{_fmt(r.get('benchmark_mae_same_splits'))} | "
                     f"{_fmt(r['benchmark_mae'])} | {100 * r['coverage']:.1f} % | "
                     f"{r['mean_width_pp']:.1f} | {100 * r['sampling_coverage']:.1f} % | "
                     f"{r['mean_sampling_width_pp']:.1f} |")
    lines += ["", "MAE in percentage points, per-dataset averaged (the 15 corruption families "
              "weigh the same). The interval: the image bootstrap (a static estimator: "
              f"{result['n_boot']} resamples, percentile; a trajectory estimator: "
              f"{result['bootstrap']} resamples each adapted once, normal) combined in "
              "quadrature with the map's calibration error (95% quantile of its "
              "leave-one-dataset-out errors on the meta-set). Coverage: the share of the "
              "splits whose true accuracy lies in the interval.", ""]
    if result.get("splits"):
        lines += [f"Splits estimated ({result['n_splits']}, the first of the seeded stratified "
                  f"order, seed {result.get('split_seed', 0)}): "
                  + ", ".join(result["splits"]) + ".", ""]
    if result.get("truth_check_pp") is not None:
        lines += ["True accuracies: the largest difference between this script's and the "
                  f"benchmark run's (`pairs.csv`) over these splits is "
                  f"{result['truth_check_pp']:.4f} pp.", ""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "your-model")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=5)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--splits", type=int, default=None,
                        help="Estimate only the first N splits of the seeded stratified order "
                             "(at least one per corruption; default: all)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--note", default=None,
                        help="Printed in the report: what was reduced from the defaults and why")
    parser.add_argument("--bench-run", type=Path, default=None,
                        help="A finished `ttabench run` folder of the default protocol whose "
                             "leaderboard gives the benchmark's numbers (default: run it into "
                             "WORK/benchmark)")
    args = parser.parse_args()
    command = "python benchmarks/your_model.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    suite, splits = export(work)
    seconds["export"] = time.perf_counter() - t
    t = time.perf_counter()
    calibration_file = work / "calibration.json"
    run([TTABENCH, "calibrate", "-m", "mnist-cnn", "--labelled", str(work / "labelled"),
         "--set-size", "2000", "-o", str(calibration_file), "--cells",
         str(work / "calibrate-cells"), "--jobs", str(args.jobs)], log)
    seconds["calibrate"] = time.perf_counter() - t
    t = time.perf_counter()
    order = stratified_order(splits, args.split_seed)
    n_datasets = len({s.dataset for s in splits})
    if args.splits is not None and not n_datasets <= args.splits <= len(splits):
        raise SystemExit(f"--splits {args.splits}: from {n_datasets} (every corruption once) "
                         f"to {len(splits)}")
    chosen = order[: args.limit or args.splits or len(order)]
    reports = estimate_all(work, calibration_file, chosen, args)
    seconds["estimates"] = time.perf_counter() - t
    t = time.perf_counter()
    bench = args.bench_run.resolve() if args.bench_run else work / "benchmark"
    if not args.bench_run:
        run([TTABENCH, "run", "-o", str(bench), "--jobs", str(args.jobs)], log)
    seconds["benchmark"] = time.perf_counter() - t
    calibration = json.loads(calibration_file.read_text())
    truth = true_accuracies(suite, chosen)
    board, choice = leaderboard_maes(bench)
    names = [s.name for s in chosen]
    direct = [e["name"] for e in calibration["entries"] if e["map"]["kind"] == "direct"]
    same, bench_truth = (benchmark_pairs(bench, names) if (bench / "pairs.csv").is_file()
                         else benchmark_direct(bench, names, direct))
    rows = summarise(calibration, reports, truth, {s.name: s.dataset for s in chosen}, board,
                     same)
    seconds["total"] = sum(seconds.values())
    result = {
        "command": command, "commit": git_revision(), "note": args.note,
        "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
        "machine": f"{os.uname().machine}, {os.cpu_count()} cores",
        "labelled": len(list((work / "labelled").rglob("*.png"))),
        "meta_set": calibration["meta_set"],
        "n_families": len(calibration["meta_set"]["recipe"]["families"]),
        "n_splits": len(chosen), "chosen": calibration["chosen"], "rows": rows,
        "benchmark_choice": choice, "n_boot": args.n_boot, "bootstrap": args.bootstrap,
        "seconds": seconds, "smoke_run": bool(args.limit), "bench_run": str(bench),
        "bench_finished": (bench / "leaderboard.json").is_file(),
        "splits": names if len(chosen) < len(splits) else None, "split_seed": args.split_seed,
        "truth_check_pp": (100 * max(abs(truth[s] - bench_truth[s]) for s in names)
                           if bench_truth else None),
    }
    # a smoke run (--limit) is no finding: its report stays in the work folder
    where = work / "smoke" if args.limit else RESULTS
    write_json_atomic(where / "your_model.json", result)
    write_bytes_atomic(where / "your_model.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
