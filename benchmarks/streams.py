"""Per-window accuracy estimation under every stream kind, on mnist-c, through the one runner.

    python benchmarks/streams.py            # -> benchmarks/results/streams.{json,md}

For each stream kind (reset-each-split, continual, gradual, mixed, continual+correlated) RDumb
(the default adapter, ``plugins.toml``'s learning rate) adapts mnist-cnn; every estimator is
scored per window of ``WINDOW`` steps against the online accuracy of those steps, all in the
same view (the adapted model's online outputs: a static baseline is computed on each window's
online logits). Entries: WF (``enigma``, its flip score at each window's last step, snapshots
every ``WINDOW`` steps), AETTA, enigma-online and the three static baselines with the lowest
per-window MAE on the calibration windows of the reset-each-split stream (chosen once, before
any evaluation window is looked at). A score estimator (WF, nuclear, mano, mde, dispersion)
gets a linear map fitted on the same kind's calibration windows (the 4 holdout corruptions at
severities 3-5); a direct one is scored as it is.

Evaluation: the 15 corruptions at severity 5 (reset-each-split: a cell each; the other kinds:
one stream through them, ``STEPS_PER_SPLIT`` steps per split, orders ``ORDERS`` for the
ordered kinds), seeds ``SEEDS``. MAE (pp) is averaged over the windows of each (dataset, seed),
then over seeds and datasets; a window's dataset is the corruption of its split (the mixed
stream has one: ``mixed``). 95% intervals resample datasets, then seeds within each (2000
resamples). Cells are kept under ``--work`` (default /tmp/streams-bench), so a rerun resumes;
``--jobs`` worker processes (default two), one thread each. ``--seeds``, ``--orders``, ``--reset-steps``,
``--eval-corruptions`` and ``--calibration-severities`` shrink the protocol (the defaults are the
full one); the results file prints the command that made it.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from continual import (
    EVAL,
    EVAL_SEVERITIES,
    HOLDOUT,
    HOLDOUT_SEVERITIES,
    repository_config,
    two_level_interval,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SUITE, MODEL = "mnist-c", "mnist-cnn"
KINDS = ("reset-each-split", "continual", "gradual", "mixed", "continual+correlated")
SEEDS = (0, 1, 2)
ORDERS = (0, 1, 2)
WINDOW = 20
RESET_STEPS = 200
STEPS_PER_SPLIT = 20
TRAJECTORY = ("enigma", "aetta", "enigma-online")
BEST_STATIC = 3


@dataclass(frozen=True)
class Protocol:
    """What the study runs (the script's options): stream seeds, split orders of the ordered
    kinds, steps of a reset-each-split cell, the evaluation corruptions (at severity 5) and the
    severities of the calibration corruptions."""

    seeds: tuple[int, ...] = SEEDS
    orders: tuple[int, ...] = ORDERS
    reset_steps: int = RESET_STEPS
    eval_corruptions: tuple[str, ...] = EVAL
    calibration_severities: tuple[int, ...] = tuple(HOLDOUT_SEVERITIES)


def stream_cells(work: Path, kind: str, role: str, protocol: Protocol, jobs: int) -> list[Any]:
    """The cells of one stream kind and role, run through the one runner into ``work`` by
    ``jobs`` worker processes."""
    from ttabench.runner.benchmark import Benchmark, collect_cells, pending_cells
    from ttabench.runner.executor import LocalBackend, run_cells
    from ttabench.runner.pool import PoolBackend
    from ttabench.spec import RunSpec, StreamSpec

    config = repository_config()
    stream = StreamSpec.from_table({"kind": kind, "window": WINDOW,
                                    "steps_per_split": STEPS_PER_SPLIT,
                                    "order_seeds": list(protocol.orders)})
    splits, severities = ((protocol.eval_corruptions, EVAL_SEVERITIES) if role == "eval" else
                          (HOLDOUT, list(protocol.calibration_severities)))
    length = (protocol.reset_steps if stream.resets
              else STEPS_PER_SPLIT * len(splits) * len(severities))
    estimators = [*TRAJECTORY, *config["run"]["baselines"]]
    params = {name: dict(config.get("estimator", {}).get(name, {})) for name in estimators}
    params["enigma"].update(checkpoints=list(range(0, length + 1, WINDOW)), estimate_at=length)
    params["enigma-online"] = {"window": WINDOW}
    spec = RunSpec(suite=SUITE, model=MODEL, adapters=["rdumb"],
                   adapter_params={"rdumb": dict(config["adapter"]["rdumb"])},
                   estimators=estimators, estimator_params=params, baselines=config["run"]["baselines"],
                   seeds=list(protocol.seeds), splits=list(splits), severities=severities, device="cpu",
                   threads=1, jobs=jobs, steps=protocol.reset_steps if stream.resets else 0,
                   stream=stream)
    bench = Benchmark(spec)
    plans = [p for p in bench.plan() if p.split.role == role]
    todo = pending_cells(plans, work, None)
    if todo:
        backend = PoolBackend(min(jobs, len(todo))) if jobs > 1 else LocalBackend()
        run_cells(bench, todo, work, backend, progress=True)
    cells = collect_cells(work, plans)
    if len(cells) != len(plans) or any(c.status != "ok" for c in cells):
        raise SystemExit(f"{kind} {role}: unfinished or failed cells in {work}")
    return cells


def windows(cells: list[Any], suite: Any) -> list[dict[str, Any]]:
    """Every complete window of ``cells``: its accuracy, dataset, seed and each estimator's
    result (value, estimate)."""
    datasets = {s.name: s.dataset for s in suite.splits()}
    out = []
    for cell in cells:
        order = cell.protocol["stream"].get("order")
        record = cell.windows
        for w, accuracy in enumerate(record.accuracy):
            if order is None:
                dataset = cell.dataset
            elif cell.protocol["stream"]["kind"].startswith("mixed"):
                dataset = "mixed"
            else:
                dataset = datasets[order[record.segment_per_step[w * record.window]]]
            out.append({"accuracy": accuracy, "dataset": dataset, "seed": cell.seed,
                        "results": {n: rec.windows[w] for n, rec in cell.estimators.items()
                                    if w < len(rec.windows) and rec.windows[w].failed is None}})
    return out


def estimates(name: str, kind: str, calibration: list[dict[str, Any]],
              evaluation: list[dict[str, Any]]) -> np.ndarray | str:
    """The estimator's accuracy estimate on every evaluation window: as given (direct), or
    through a linear map of its value fitted on the calibration windows (score); else why
    there is none."""
    from ttabench.errors import TTABenchError
    from ttabench.scoring.map_kinds import fit_map_kind

    if any(name not in w["results"] for w in evaluation):
        return "no estimate in every window"
    if kind == "direct":
        return np.array([w["results"][name].estimate for w in evaluation], dtype=float)
    points = [(w["results"][name].value, w["accuracy"]) for w in calibration
              if name in w["results"]]
    try:
        fitted = fit_map_kind("lin", [x for x, _ in points], [y for _, y in points])
    except TTABenchError as err:
        return f"no map: {err}"
    return fitted(np.array([w["results"][name].value for w in evaluation], dtype=float))


def score(errors: np.ndarray, evaluation: list[dict[str, Any]]) -> dict[str, Any]:
    """MAE (pp) averaged per (dataset, seed), then over seeds, then datasets; its interval."""
    units: dict[tuple[str, int], list[float]] = {}
    for error, window in zip(errors, evaluation):
        units.setdefault((window["dataset"], window["seed"]), []).append(float(error))
    means = {key: float(np.mean(v)) for key, v in units.items()}
    by_dataset = {}
    for (dataset, _), value in means.items():
        by_dataset.setdefault(dataset, []).append(value)
    mae = float(np.mean([np.mean(v) for v in by_dataset.values()]))
    lo, hi = two_level_interval(means)
    return {"mae_pp": 100 * mae, "interval_pp": [100 * lo, 100 * hi],
            "windows": len(evaluation), "datasets": len(by_dataset)}


def loo_mae(name: str, kind: str, windows_: list[dict[str, Any]]) -> float | None:
    """Per-window MAE on calibration windows, a map's leave-one-dataset-out (choice of the
    best static baselines, on calibration data only)."""
    from ttabench.scoring.map_kinds import loo_predictions

    have = [w for w in windows_ if name in w["results"]]
    if len(have) < len(windows_):
        return None
    truth = np.array([w["accuracy"] for w in have])
    if kind == "direct":
        est = np.array([w["results"][name].estimate for w in have], dtype=float)
    else:
        groups = [w["dataset"] for w in have]
        if len(set(groups)) < 2:  # nothing to leave out
            return None
        x = np.array([w["results"][name].value for w in have], dtype=float)
        est = loo_predictions("lin", x, truth, groups)
    return float(np.mean(np.abs(est - truth)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/streams-bench"))
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes, one thread each (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="stream seeds (default: %(default)s)")
    parser.add_argument("--orders", type=int, nargs="+", default=list(ORDERS),
                        help="split orders of the ordered kinds (default: %(default)s)")
    parser.add_argument("--reset-steps", type=int, default=RESET_STEPS,
                        help="steps of a reset-each-split cell (default: %(default)s)")
    parser.add_argument("--eval-corruptions", nargs="+", default=list(EVAL), choices=EVAL,
                        help="evaluation corruptions, at severity 5 (default: all 15)")
    parser.add_argument("--calibration-severities", type=int, nargs="+",
                        default=list(HOLDOUT_SEVERITIES), choices=HOLDOUT_SEVERITIES,
                        help="severities of the 4 holdout corruptions (default: %(default)s)")
    args = parser.parse_args(argv)
    protocol = Protocol(tuple(args.seeds), tuple(args.orders), args.reset_steps,
                        tuple(args.eval_corruptions), tuple(args.calibration_severities))
    command = shlex.join(["python", "benchmarks/streams.py",
                          *(sys.argv[1:] if argv is None else argv)])
    from ttabench import registry
    from ttabench.store import write_bytes_atomic, write_json_atomic

    suite = registry.make_suite(SUITE)
    config = repository_config()
    kinds = {name: registry.get("estimators", name).kind
             for name in (*TRAJECTORY, *config["run"]["baselines"])}
    static = [n for n in config["run"]["baselines"]  # those computed in the adapted view too
              if registry.get("estimators", n).view in (None, "adapted")]
    data = {}
    for kind in KINDS:
        work = args.work / kind.replace("+", "-")
        data[kind] = {role: windows(stream_cells(work, kind, role, protocol, args.jobs), suite)
                      for role in ("calibration", "eval")}
    reset_calibration = data["reset-each-split"]["calibration"]
    ranked = sorted((m, n) for n in static
                    if (m := loo_mae(n, kinds[n], reset_calibration)) is not None)
    chosen = [n for _, n in ranked[:BEST_STATIC]]
    summary: dict[str, Any] = {
        "command": command, "window": WINDOW, "seeds": args.seeds, "orders": args.orders,
        "eval_corruptions": args.eval_corruptions,
        "calibration_severities": args.calibration_severities,
        "steps": {"reset-each-split": args.reset_steps, "per_split": STEPS_PER_SPLIT},
        "static_choice": {"calibration_mae_pp": {n: 100 * m for m, n in ranked},
                          "chosen": chosen},
        "kinds": {}}
    for kind in KINDS:
        calibration, evaluation = data[kind]["calibration"], data[kind]["eval"]
        truth = np.array([w["accuracy"] for w in evaluation])
        rows = {}
        for name in (*TRAJECTORY, *chosen):
            est = estimates(name, kinds[name], calibration, evaluation)
            rows[name] = ({"missing": est} if isinstance(est, str)
                          else score(np.abs(est - truth), evaluation))
        summary["kinds"][kind] = {"online_accuracy": float(truth.mean()), "entries": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "streams.json", summary)
    write_bytes_atomic(RESULTS / "streams.md", markdown(summary))
    print(markdown(summary))
    return 0


def reductions(summary: dict[str, Any]) -> str:
    """One sentence: what this run left out of the full protocol (the script's defaults)."""
    full = Protocol()
    cut = []
    if tuple(summary["seeds"]) != full.seeds:
        cut.append(f"seeds {summary['seeds']} instead of {list(full.seeds)}")
    if tuple(summary["orders"]) != full.orders:
        cut.append(f"split orders {summary['orders']} instead of {list(full.orders)} (continual, "
                   "gradual, continual+correlated)")
    if summary["steps"]["reset-each-split"] != full.reset_steps:
        cut.append(f"{summary['steps']['reset-each-split']} steps per reset-each-split cell "
                   f"instead of {full.reset_steps}")
    if tuple(summary["eval_corruptions"]) != full.eval_corruptions:
        cut.append(f"{len(summary['eval_corruptions'])} of the {len(full.eval_corruptions)} "
                   "evaluation corruptions")
    if tuple(summary["calibration_severities"]) != full.calibration_severities:
        cut.append(f"calibration severities {summary['calibration_severities']} instead of "
                   f"{list(full.calibration_severities)}")
    if not cut:
        return "The full protocol (nothing reduced)."
    return ("**Reduced from the full protocol** (`python benchmarks/streams.py` with no "
            "options): " + "; ".join(cut) + ".")


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# Per-window estimates under every stream kind (mnist-c, mnist-cnn, RDumb)", "",
        f"Produced by `{summary['command']}` (cells through the one runner, "
        "`ttabench.runner`; enigma-online's coefficients from "
        "`ttabench_enigma/guards/mnist-cnn.json`, fitted by `python benchmarks/continual.py "
        "fit` on calibration streams). Each stream is what `ttabench run -s mnist-c -m "
        f"mnist-cnn -a rdumb -e enigma,aetta,enigma-online --stream KIND --window "
        f"{summary['window']} --steps-per-split {summary['steps']['per_split']} "
        + " ".join(f"--order-seed {o}" for o in summary["orders"]) + " "
        + " ".join(f"--seed {s}" for s in summary["seeds"])
        + " --set estimator.enigma.checkpoints=[0,20,...]` runs (RDumb at plugins.toml's lr, "
        "the default baselines) over "
        + (f"the {len(EVAL)}" if len(summary["eval_corruptions"]) == len(EVAL) else
           f"{len(summary['eval_corruptions'])} of the {len(EVAL)}")
        + f" evaluation corruptions at severity 5 ({', '.join(summary['eval_corruptions'])}) and "
        f"the 4 holdout corruptions at severities "
        f"{', '.join(map(str, summary['calibration_severities']))} (calibration); "
        "reset-each-split runs "
        f"{summary['steps']['reset-each-split']} steps per split (a cell per split and seed); "
        "the other kinds one cell per role, order (not mixed) and seed.", "",
        f"Windows of {summary['window']} steps; truth: the adapted model's online accuracy in "
        "the window; every entry reads the same (adapted, online) view. MAE in percentage "
        "points, averaged per (dataset, seed), then over seeds, then datasets (a window's "
        "dataset is the corruption of its split; the mixed stream has one). 95% intervals: "
        "2000 bootstrap resamples of datasets, then seeds within each. Score estimators (WF; "
        "nuclear, mano, mde, dispersion) are mapped by a linear map fitted on the same kind's "
        "calibration windows; direct ones are scored as they are. WF's score for a window is "
        "its flip score at the window's last step.", "",
        "The three static baselines, chosen on the reset-each-split stream's calibration "
        "windows (leave-one-dataset-out for mapped ones): "
        + ", ".join(f"{n} ({summary['static_choice']['calibration_mae_pp'][n]:.2f} pp)"
                    for n in summary["static_choice"]["chosen"]) + ".", "",
        reductions(summary), ""]
    names = list(next(iter(summary["kinds"].values()))["entries"])
    lines += ["| stream | online acc. | " + " | ".join(names) + " |",
              "|---|---|" + "---|" * len(names)]
    for kind, block in summary["kinds"].items():
        cells = []
        for name in names:
            row = block["entries"][name]
            cells.append("-" if "missing" in row else
                         f"{row['mae_pp']:.2f} [{row['interval_pp'][0]:.2f}, "
                         f"{row['interval_pp'][1]:.2f}]")
        lines.append(f"| {kind} | {100 * block['online_accuracy']:.1f}% | " + " | ".join(cells) + " |")
    base = summary["kinds"].get("reset-each-split", {}).get("entries", {})
    lines += ["", "How each entry's MAE moves with the stream: its MAE minus its reset-each-split "
              "MAE (pp; a difference of means over different windows, no interval):", "",
              "| stream | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for kind, block in summary["kinds"].items():
        if kind == "reset-each-split":
            continue
        cells = [("-" if "missing" in block["entries"][n] or "missing" in base.get(n, {"missing": 1})
                  else f"{block['entries'][n]['mae_pp'] - base[n]['mae_pp']:+.2f}") for n in names]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    missing = [f"{name} under {kind}: {row['missing']}" for kind, block in summary["kinds"].items()
               for name, row in block["entries"].items() if "missing" in row]
    if missing:
        lines += ["", "Without numbers (`-`): " + "; ".join(missing) + "."]
    lines += ["", "Windows and datasets per stream: " + "; ".join(
        f"{kind} {next(r for r in b['entries'].values() if 'windows' in r)['windows']} windows, "
        f"{next(r for r in b['entries'].values() if 'datasets' in r)['datasets']} datasets"
        for kind, b in summary["kinds"].items()) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
