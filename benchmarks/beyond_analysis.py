"""Analysis of the beyond-the-paper study: candidates vs the best same-view baseline.

Per (model, stream seed, target) with target ``source`` (view: frozen eval-mode logits, frozen
source-val) or ``bn`` (view: batch-statistics logits in the run's batches, source-val through
the batch-statistics model in batches of 64):

1. scores per split: every host baseline (``ttabench.estimators``) on the target's view, the
   ``agreement`` baseline, and the candidates: every score of ``enigma-signals`` on the
   three-snapshot budget (steps 0, 50, 100), WF and WF-source (the paper's), and two
   analysis-only signals (probe embedding drift, and the shift-distance proxy: cosine between
   predicted-class feature means and the classifier's weight vectors);
0. before any of it, the adapter's learning rate: per model, the lr of ``LRS`` whose budget
   signals reach the lowest calibration LOO MAE on stream seed 0 (mean of the two targets;
   real calibration datasets only, ``choose_lr``); every other split and seed is then run
   at that lr only;
2. choices by calibration leave-one-dataset-out only: each entry's map kind
   (``ttabench.scoring.map_kinds``; a direct baseline may also stay unmapped) and whether the
   synthetic holdout compositions join the fit; LOO error = per-dataset MAE on the five real
   calibration datasets, each predicted by a map fitted without it;
3. the best baseline and the best candidate of each pool (lowest LOO), fitted on all of
   calibration, scored once on the evaluation splits (MAE averaged per dataset);
4. paired per-dataset differences (candidate minus baseline, absolute errors averaged over a
   dataset's splits and the three seeds), percentile bootstrap over the 15 datasets;
5. architecture transfer: the map (and signal) chosen and fitted on model A applied to model
   B, against refitting the same signal on B.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from beyond_collect import (  # noqa: E402
    CAL_SEVERITIES,
    CHUNK,
    EVAL_SEVERITIES,
    LRS,
    PROBE,
    STEPS,
    load_npz,
)

from ttabench.api import EstimateResult, Outputs, TrajectoryContext  # noqa: E402
from ttabench.errors import TTABenchError  # noqa: E402
from ttabench.estimators import classic  # noqa: E402
from ttabench.estimators import scores as score_estimators
from ttabench.scoring.map_kinds import MAP_KINDS, fit_map_kind, loo_predictions  # noqa: E402
from ttabench.scoring.metrics import mae_by_dataset  # noqa: E402
from ttabench.store import write_bytes_atomic, write_json_atomic  # noqa: E402
from ttabench_enigma.estimator import WeightedFlips, WeightedFlipsSource  # noqa: E402
from ttabench_enigma.signals import TrajectorySignals  # noqa: E402

TARGETS = ("source", "bn")
BUDGET = (0, 50, 100)
BASELINES = {
    "ac": classic.AverageConfidence, "doc": classic.DifferenceOfConfidences,
    "atc-mc": classic.ATCMaxConf, "atc-ne": classic.ATCNegEntropy, "cot": classic.COT,
    "cott": classic.COTT, "ac+ts": classic.AverageConfidenceTS,
    "doc+ts": classic.DifferenceOfConfidencesTS, "atc-mc+ts": classic.ATCMaxConfTS,
    "atc-ne+ts": classic.ATCNegEntropyTS, "cot+ts": classic.COTTS,
    "nuclear": score_estimators.NuclearNorm, "mano": score_estimators.MaNo,
    "mde": score_estimators.MDE, "dispersion": score_estimators.Dispersion,
}
REAL_CAL = re.compile(r"^(clean|speckle_noise|gaussian_blur|spatter|saturate)$")
N_BOOT = 10_000


# --------------------------------------------------------------------------- per-split scores


def _estimate(est: Any, target: Outputs, val: Outputs) -> EstimateResult:
    return est.estimate(target, val)


def _trajectory(est: Any, raw: dict[str, np.ndarray]) -> dict[str, float]:
    """Feed the cached probe snapshots to a trajectory estimator; its scores."""
    steps = list(raw["checkpoints"])
    for step in est.plan().checkpoints:
        est.on_snapshot(step, torch.from_numpy(raw["probe_logits"][steps.index(step)]))
    source = torch.from_numpy(raw["frozen_logits"][raw["probe_index"]])
    context = TrajectoryContext(num_classes=source.shape[1], steps_run=max(steps),
                                probe_size=len(source), probe_source_logits=source,
                                dataset_size=len(raw["labels"]))
    result = est.compute(context)
    return {"value": result.value, **result.scores}


def feature_drift(raw: dict[str, np.ndarray]) -> dict[str, float]:
    """Probe embedding drift from step 0: mean (1 - cos) and mean relative L2 at 50 and 100."""
    steps = list(raw["checkpoints"])
    h0 = torch.from_numpy(raw["probe_features"][0].astype(np.float64))
    out = {}
    for k in (50, 100):
        hk = torch.from_numpy(raw["probe_features"][steps.index(k)].astype(np.float64))
        out[f"fcos@{k}"] = float((1 - torch.cosine_similarity(h0, hk, dim=1)).mean())
        out[f"fl2@{k}"] = float((hk - h0).norm(dim=1).mean() / h0.norm(dim=1).mean())
    return out


def shift_proxy(features: np.ndarray, logits: np.ndarray, weight: np.ndarray) -> float:
    """sum_k n_k / N * cos(mu_k, w_k): predicted-class feature means against the classifier's
    weight vectors (no training data)."""
    pred = logits.argmax(1)
    total = 0.0
    for k in np.unique(pred):
        mu = features[pred == k].mean(0)
        w = weight[k]
        total += (pred == k).mean() * float(mu @ w / (np.linalg.norm(mu) * np.linalg.norm(w)))
    return total


@dataclass
class SplitScores:
    name: str
    dataset: str
    role: str  # eval | calibration | synthetic
    truth: dict[str, float]
    baselines: dict[str, dict[str, tuple[float, bool]]]  # target -> name -> (value, direct)
    candidates: dict[str, dict[str, float]]  # pool -> score name -> value
    timing: dict[str, float]


def _truth(raw: dict[str, np.ndarray]) -> dict[str, float]:
    """The labelled accuracies of the two targets on a split."""
    labels = raw["labels"]
    bn_labels = labels[raw["bn_order"][:len(raw["bn_logits"])]]
    return {"source": float((raw["frozen_logits"].argmax(1) == labels).mean()),
            "bn": float((raw["bn_logits"].argmax(1) == bn_labels).mean())}


def split_scores(name: str, raw: dict[str, np.ndarray], val: dict[str, np.ndarray],
                 weight: np.ndarray, role: str, dataset: str) -> SplitScores:
    n_bn = len(raw["bn_logits"])
    truth = _truth(raw)
    views = {
        "source": (Outputs(torch.from_numpy(raw["frozen_logits"]),
                           features=torch.from_numpy(raw["frozen_features"])),
                   Outputs(torch.from_numpy(val["frozen_logits"]),
                           torch.from_numpy(val["labels"]),
                           torch.from_numpy(val["frozen_features"]))),
        "bn": (Outputs(torch.from_numpy(raw["bn_logits"]),
                       features=torch.from_numpy(raw["bn_features"])),
               Outputs(torch.from_numpy(val["bn_logits"]),
                       torch.from_numpy(val["labels"][val["bn_order"][:len(val["bn_logits"])]]),
                       torch.from_numpy(val["bn_features"]))),
    }
    agreement = float((raw["frozen_logits"][raw["bn_order"][:n_bn]].argmax(1)
                       == raw["bn_logits"].argmax(1)).mean())
    baselines: dict[str, dict[str, tuple[float, bool]]] = {}
    for target, (outputs, val_outputs) in views.items():
        table = {"agreement": (agreement, False)}
        for base, cls in BASELINES.items():
            result = _estimate(cls(), outputs, val_outputs)
            table[base] = (float(result.value), cls.kind == "direct")
        baselines[target] = table
    t = time.perf_counter()
    budget = _trajectory(TrajectorySignals(probe_size=len(raw["probe_index"]),
                                           checkpoints=BUDGET), raw)
    signal_seconds = time.perf_counter() - t
    probe = len(raw["probe_index"])
    wf = _trajectory(WeightedFlips(probe_size=probe, checkpoints=BUDGET), raw)
    wfs = _trajectory(WeightedFlipsSource(probe_size=probe, checkpoints=BUDGET), raw)
    budget.pop("value")
    candidates = {
        "budget": budget,
        "paper": {"wf@100": wf["wf@100"], "wfa@100": wfs["wfa@100"]},
        "analysis-only": {**feature_drift(raw),
                          "proxy-source": shift_proxy(raw["frozen_features"],
                                                      raw["frozen_logits"], weight),
                          "proxy-bn": shift_proxy(raw["bn_features"], raw["bn_logits"], weight)},
    }
    steps = list(raw["checkpoints"])
    snap = raw["snapshot_seconds"]
    timing = {"steps": float(raw["step_seconds"]), "snapshot0": float(snap[0]),
              "snapshot_budget": float(sum(snap[steps.index(k)] for k in BUDGET)),
              "snapshot_later_mean": float(np.mean([snap[steps.index(k)] for k in BUDGET[1:]])),
              "signals": signal_seconds}
    return SplitScores(name, dataset, role, truth, baselines, candidates, timing)


def _dataset_of(name: str) -> str:
    return name.rsplit("-", 1)[0] if name[-1].isdigit() else name


def lr_folder(lr: float) -> str:
    return f"lr{lr:g}"


def is_real_calibration(name: str) -> bool:
    return bool(REAL_CAL.match(_dataset_of(name)))


def lr_loo(folder: Path) -> dict[str, float]:
    """Calibration LOO MAE (pp) of the best budget signal per target, for the splits of one lr
    (real calibration datasets only)."""
    rows = []
    for file in sorted(folder.glob("*.npz")):
        if not is_real_calibration(file.stem):
            continue
        raw = load_npz(file)
        signals = _trajectory(TrajectorySignals(probe_size=len(raw["probe_index"]),
                                                checkpoints=BUDGET), raw)
        signals.pop("value")
        rows.append(SplitScores(file.stem, _dataset_of(file.stem), "calibration", _truth(raw),
                                {}, {"budget": signals}, {}))
    pool = _entries(rows, "bn")["budget"]
    return {target: best_choice(rows, target, pool).loo for target in TARGETS}


def choose_lr(seed_folder: Path) -> dict[str, Any]:
    """The lr of ``LRS`` with the lowest mean (over targets) calibration LOO MAE (a tie goes
    to the first lr of ``LRS``); written to ``lr_choice.json`` in the (model, seed) folder."""
    path = seed_folder / "lr_choice.json"
    if path.is_file():
        return json.loads(path.read_text())
    loo = {f"{lr:g}": lr_loo(seed_folder / lr_folder(lr)) for lr in LRS}
    chosen = min(LRS, key=lambda lr: float(np.mean(list(loo[f"{lr:g}"].values()))))
    record = {"chosen": chosen, "loo": loo}
    write_json_atomic(path, record)
    return record


def model_seed_scores(cache: Path, model: str, seed: int) -> list[SplitScores]:
    """Scores of every cached split of one (model, seed) at its chosen lr, cached themselves
    as JSON."""
    seed_folder = cache / model / f"seed{seed}"
    folder = seed_folder / lr_folder(choose_lr(cache / model / "seed0")["chosen"])
    path = cache.parent / "scores" / f"{model}-seed{seed}.json"
    if path.is_file():
        return [SplitScores(**row) for row in json.loads(path.read_text())]
    from beyond_paper import MODELS

    loaded = MODELS[model]()
    weight = loaded.module.get_submodule(loaded.classifier).weight.detach().numpy()
    val = load_npz(seed_folder / "source_val.npz")
    rows = []
    for file in sorted(folder.glob("*.npz")):
        if file.stem == "source_val":
            continue
        dataset = _dataset_of(file.stem)
        role = ("synthetic" if "+" in dataset else
                "calibration" if REAL_CAL.match(dataset) else "eval")
        rows.append(split_scores(file.stem, load_npz(file), val, weight, role, dataset))
    write_json_atomic(path, [row.__dict__ for row in rows])
    return rows


# --------------------------------------------------------------------------- choices


@dataclass(frozen=True)
class Choice:
    """An entry: a score (or a direct estimate when ``kind == 'raw'``), a map kind, whether
    the synthetic calibration splits join the fit, and its calibration LOO MAE (pp)."""

    entry: str
    kind: str
    synthetic: bool
    loo: float


def best_choice(rows: list[SplitScores], target: str, entries: dict[str, Any],
                direct: set[str] = frozenset()) -> Choice:
    """The (entry, map kind, synthetic) with the lowest calibration leave-one-dataset-out MAE;
    ``entries`` maps an entry name to a function of a SplitScores row."""
    cal = [r for r in rows if r.role == "calibration"]
    syn = [r for r in rows if r.role == "synthetic"]
    y = np.array([r.truth[target] for r in cal])
    y_syn = np.array([r.truth[target] for r in syn])
    groups = [r.dataset for r in cal]
    best: Choice | None = None
    for name, get in entries.items():
        x = np.array([get(r) for r in cal], dtype=np.float64)
        x_syn = np.array([get(r) for r in syn], dtype=np.float64)
        if not (np.isfinite(x).all() and np.isfinite(x_syn).all()):
            continue
        options = [(kind, s) for kind in MAP_KINDS for s in ((False, True) if syn else (False,))]
        if name in direct:
            options.append(("raw", False))
        for kind, synthetic in options:
            if kind == "raw":
                loo = mae_by_dataset(np.clip(x, 0, 1), y, groups)
            else:
                try:
                    pred = loo_predictions(kind, x, y, groups,
                                           extra=(x_syn, y_syn) if synthetic else None)
                except TTABenchError:
                    continue  # too few distinct scores for this map
                loo = mae_by_dataset(pred, y, groups)
            if best is None or loo < best.loo:
                best = Choice(name, kind, synthetic, loo)
    assert best is not None
    return best


def fitted_predict(choice: Choice, fit_rows: list[SplitScores], apply_rows: list[SplitScores],
                   target: str, get) -> np.ndarray:
    """The choice's map fitted on ``fit_rows``' calibration (+ synthetic) splits, applied."""
    x_apply = np.array([get(r) for r in apply_rows], dtype=np.float64)
    if choice.kind == "raw":
        return np.clip(x_apply, 0, 1)
    train = [r for r in fit_rows if r.role == "calibration"
             or (choice.synthetic and r.role == "synthetic")]
    fitted = fit_map_kind(choice.kind, [get(r) for r in train], [r.truth[target] for r in train])
    return fitted(x_apply)


def _entries(rows: list[SplitScores], target: str) -> dict[str, dict[str, Any]]:
    """Entry getters per pool: the baselines of the target's view, and each candidate pool."""
    first = rows[0]
    if not first.baselines:
        return {pool: {name: (lambda r, p=pool, n=name: r.candidates[p][n])
                       for name in first.candidates[pool]} for pool in first.candidates}
    pools: dict[str, dict[str, Any]] = {
        "baseline": {name: (lambda r, n=name: r.baselines[target][n][0])
                     for name in first.baselines[target]},
        "baseline-poly": {name: (lambda r, n=name: r.baselines[target][n][0])
                          for name in first.baselines[target]},
    }
    for pool in first.candidates:
        pools[pool] = {name: (lambda r, p=pool, n=name: r.candidates[p][n])
                       for name in first.candidates[pool]}
    return pools


IDEAS = {  # idea -> (pool, regex over score names)
    "WF (paper, 3 snapshots)": ("paper", r"^wfa?@"),
    "flip rate F(t)": ("budget", r"^flips@"),
    "AUC / first flip / flip-backs": ("budget", r"^(auc|first_flip|flip_backs)$"),
    "margin/entropy-weighted flips": ("budget", r"^[me]flips@"),
    "per-class flip rates": ("budget", r"^(cflips|cmax)@"),
    "logit drift (cos, L2)": ("budget", r"^(cos|l2)@"),
    "agreement combinations": ("budget", r"^(fa|ca)@"),
    "probe embedding drift": ("analysis-only", r"^f(cos|l2)@"),
    "shift-distance proxy": ("analysis-only", r"^proxy-"),
    "all budget signals": ("budget", r"."),
}


def _select(pool: dict[str, Any], pattern: str) -> dict[str, Any]:
    return {k: v for k, v in pool.items() if re.search(pattern, k)}


def analyse_one(rows: list[SplitScores], target: str) -> dict[str, Any]:
    """Choices and eval MAEs of one (model, seed, target)."""
    pools = _entries(rows, target)
    direct = {n for n, (_, d) in rows[0].baselines[target].items() if d}
    eval_rows = [r for r in rows if r.role == "eval"]
    y = np.array([r.truth[target] for r in eval_rows])
    datasets = [r.dataset for r in eval_rows]
    out: dict[str, Any] = {}

    def score(label: str, pool: dict[str, Any], direct_names=frozenset(), poly_real=False):
        if poly_real:
            choice = _best_poly_real(rows, target, pool, direct_names)
        else:
            choice = best_choice(rows, target, pool, direct_names)
        pred = fitted_predict(choice, rows, eval_rows, target, pool[choice.entry])
        out[label] = {"choice": choice.__dict__, "mae": mae_by_dataset(pred, y, datasets),
                      "abs_err": np.abs(pred - y).tolist()}

    score("best baseline", pools["baseline"], direct)
    score("best baseline (lin/quad, real calibration only)", pools["baseline"], direct, True)
    each = {}
    for name, get in pools["baseline"].items():  # each baseline with its own LOO-chosen map
        choice = best_choice(rows, target, {name: get}, direct)
        pred = fitted_predict(choice, rows, eval_rows, target, get)
        each[name] = {"choice": choice.__dict__, "mae": mae_by_dataset(pred, y, datasets),
                      "abs_err": np.abs(pred - y).tolist()}
    out["best baseline after the fact (eval-chosen, reference only)"] = min(
        each.values(), key=lambda row: row["mae"])
    for idea, (pool, pattern) in IDEAS.items():
        score(idea, _select(pools[pool], pattern))
    out["_eval"] = {"datasets": datasets, "truth": y.tolist()}
    return out


def _best_poly_real(rows, target, pool, direct) -> Choice:
    """The best baseline when maps are the host's lin/quad fitted on real calibration only."""
    cal = [r for r in rows if r.role == "calibration"]
    y = np.array([r.truth[target] for r in cal])
    groups = [r.dataset for r in cal]
    best = None
    for name, get in pool.items():
        x = np.array([get(r) for r in cal])
        options = ["lin", "quad"] + (["raw"] if name in direct else [])
        for kind in options:
            pred = np.clip(x, 0, 1) if kind == "raw" else loo_predictions(kind, x, y, groups)
            loo = mae_by_dataset(pred, y, groups)
            if best is None or loo < best.loo:
                best = Choice(name, kind, False, loo)
    return best


# --------------------------------------------------------------------------- statistics


def per_dataset(abs_err: list[float], datasets: list[str]) -> dict[str, float]:
    sums: dict[str, list[float]] = defaultdict(list)
    for e, d in zip(abs_err, datasets):
        sums[d].append(e)
    return {d: float(np.mean(v)) for d, v in sums.items()}


def paired_over_datasets(a: dict[str, float], b: dict[str, float], seed: int = 0
                         ) -> dict[str, float]:
    """Mean per-dataset difference a - b (pp) with a 95 % percentile bootstrap over datasets,
    and the MAE ratio a / b with its bootstrap interval."""
    names = sorted(a)
    da, db = np.array([a[n] for n in names]), np.array([b[n] for n in names])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(names), size=(N_BOOT, len(names)))
    diffs = 100 * (da[idx].mean(1) - db[idx].mean(1))
    ratios = da[idx].mean(1) / db[idx].mean(1)
    return {"diff": float(100 * (da.mean() - db.mean())),
            "diff_low": float(np.quantile(diffs, 0.025)),
            "diff_high": float(np.quantile(diffs, 0.975)),
            "ratio": float(da.mean() / db.mean()),
            "ratio_low": float(np.quantile(ratios, 0.025)),
            "ratio_high": float(np.quantile(ratios, 0.975))}


# --------------------------------------------------------------------------- report


def _transfer(all_rows: dict[tuple[str, int], list[SplitScores]], models: list[str],
              seeds: list[int], target: str, label: str) -> list[dict[str, Any]]:
    """Map chosen and fitted on model A, applied to model B, against refitting on B."""
    table = []
    for a in models:
        for b in models:
            if a == b:
                continue
            moved, refit = [], []
            for seed in seeds:
                rows_a, rows_b = all_rows[(a, seed)], all_rows[(b, seed)]
                pool_name, pattern = IDEAS.get(label, ("baseline", r"."))
                pools_a = _entries(rows_a, target)
                pool = _select(pools_a[pool_name], pattern)
                direct = ({n for n, (_, d) in rows_a[0].baselines[target].items() if d}
                          if pool_name == "baseline" else frozenset())
                choice = best_choice(rows_a, target, pool, direct)
                get = pool[choice.entry]
                eval_b = [r for r in rows_b if r.role == "eval"]
                y = np.array([r.truth[target] for r in eval_b])
                ds = [r.dataset for r in eval_b]
                moved.append(mae_by_dataset(fitted_predict(choice, rows_a, eval_b, target, get),
                                            y, ds))
                refit.append(mae_by_dataset(fitted_predict(choice, rows_b, eval_b, target, get),
                                            y, ds))
            table.append({"from": a, "to": b, "entry": label,
                          "transferred": float(np.mean(moved)), "refit": float(np.mean(refit))})
    return table


def write_report(cache: Path, models: list[str], seeds: list[int], results: Path) -> None:
    all_rows = {(m, s): model_seed_scores(cache, m, s) for m in models for s in seeds}
    report: dict[str, Any] = {"models": models, "seeds": seeds, "tables": {}, "transfer": {},
                              "n_splits": {f"{m}/seed{s}": len(r) for (m, s), r in all_rows.items()}}
    for model in models:
        for target in TARGETS:
            per_seed = {s: analyse_one(all_rows[(model, s)], target) for s in seeds}
            labels = [k for k in per_seed[seeds[0]] if not k.startswith("_")]
            table = {}
            base_ds = _seed_mean_by_dataset(per_seed, "best baseline")
            for label in labels:
                ds = _seed_mean_by_dataset(per_seed, label)
                table[label] = {
                    "mae_per_seed": [per_seed[s][label]["mae"] for s in seeds],
                    "mae": float(np.mean([per_seed[s][label]["mae"] for s in seeds])),
                    "choices": [per_seed[s][label]["choice"] for s in seeds],
                    "vs_best_baseline": paired_over_datasets(ds, base_ds),
                }
            report["tables"][f"{model}/{target}"] = table
    for target in TARGETS:
        report["transfer"][target] = (
            _transfer(all_rows, models, seeds, target, "best baseline")
            + _transfer(all_rows, models, seeds, target, "all budget signals"))
    report["overhead"] = _overhead(all_rows)
    report["lr"] = {m: choose_lr(cache / m / "seed0") for m in models}
    report["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    report["command"] = ("OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python "
                         "benchmarks/beyond_paper.py")
    write_json_atomic(results / "quality_beyond.json", report)
    write_bytes_atomic(results / "quality_beyond.md", render_markdown(report))
    write_json_atomic(results / "beyond_overhead.json", report["overhead"])


def _seed_mean_by_dataset(per_seed: dict[int, dict[str, Any]], label: str) -> dict[str, float]:
    maps = [per_dataset(res[label]["abs_err"], res["_eval"]["datasets"])
            for res in per_seed.values()]
    return {d: float(np.mean([m[d] for m in maps])) for d in maps[0]}


def _overhead(all_rows: dict[tuple[str, int], list[SplitScores]]) -> dict[str, Any]:
    """Trajectory cost over the adapter's own steps, from the timings of the same run."""
    out = {}
    for model in sorted({m for m, _ in all_rows}):
        rows = [r for (m, _), rs in all_rows.items() if m == model for r in rs]
        steps = sum(r.timing["steps"] for r in rows)
        budget = sum(r.timing["snapshot_budget"] + r.timing["signals"] for r in rows)
        full0 = sum(r.timing["snapshot_later_mean"] - r.timing["snapshot0"] for r in rows)
        out[model] = {"splits": len(rows), "adapter_steps_s": steps,
                      "trajectory_extra_s": budget,
                      "ratio_budget_3_snapshots": (steps + budget) / steps,
                      "ratio_if_step0_were_computed": (steps + budget + full0) / steps}
    return out


#: The reading of the numbers above, written after the run that produced them (rerunning
#: with other settings may change what they say).
WHY: list[str] = [
    "Why the target is not reached (run of 2026-12-02; numbers from the tables above):",
    "",
    "- The pre-declared candidate (every budget signal, map and synthetic on/off chosen by "
    "calibration LOO) misses 0.70 on all four tables: 0.82 and 1.04 (mnist-cnn source / bn), "
    "0.74 and 1.03 (mnist-resnet). Where it gets close, calibration chose a step-0 signal "
    "(`agree`, the frozen/batch-statistics agreement on the probe, or `conf0`): the "
    "trajectory itself adds nothing the LOO can find.",
    "- The lr grid confirms it: on mnist-resnet the three lrs tie exactly (the best "
    "calibration signal does not depend on the lr), the tie goes to the first lr (1e-3); on "
    "mnist-cnn 2.5e-3 wins by 0.1 pp of mean LOO over 6.25e-3 (0.4 pp over 1e-3).",
    "- Flip signals measure instability; on this 10-class suite it tracks the bn accuracy at "
    "5.6-6.6 pp (mnist-cnn) while static baselines on the batch-statistics outputs sit at "
    "2.4-3.1 pp. The flip variants move the error by at most 0.9 pp (per-class rates 5.60, "
    "area / first flip / flip-backs 6.06, margin or entropy weights 6.59, against 6.47 for "
    "the plain rate on mnist-cnn/bn), all 1.8-2.1x the baseline.",
    "- Five real calibration datasets make every LOO choice fragile: on mnist-resnet/bn the "
    "LOO picks `agreement/quad` (19.8 pp) while `ac+ts/iso` would give 2.2 pp; ratios against "
    "that failed pick (per-class flips 0.30, flip rate 0.58) are artifacts, 2.8x and 5.3x the "
    "after-the-fact baseline.",
    "- The only idea below 0.70 with an interval below 1 besides that artifact is the "
    "paper's WF-source (`wfa@100`) on mnist-cnn/source, 0.48 [0.29, 0.82] (and the agreement "
    "combinations, 0.51); but choosing that pool is an after-the-fact choice, it is 0.91x "
    "the after-the-fact baseline (agreement), and on mnist-resnet/source it is 1.08x.",
    "- Embedding drift of the probe (`fcos`, `fl2`; 1.07 / 3.47 / 2.57 / 1.05) is never "
    "better than logit drift (1.09 / 4.03 / 2.79 / 1.02) by more than its interval, and the "
    "shift-distance proxy (1.13 / 1.55 / 2.72 / 1.27) never comes near 0.70: neither is kept "
    "as a named score of `enigma-signals` (both stay analysis-only here).",
    "- Transfer: the map chosen and fitted on one model is as good as refitting (within "
    "0.1 pp, or better) in 3 of 8 rows; refitting helps in the other 5 (the bn signal "
    "mnist-cnn -> mnist-resnet: 3.99 -> 2.23 pp); on the bn rows mnist-resnet -> "
    "mnist-cnn both are poor (11-18 pp): the entry chosen on mnist-resnet is the failing "
    "`agreement`/`agree` pick, which refitting cannot rescue.",
]


def _fmt_choice(choices: list[dict[str, Any]]) -> str:
    parts = [f"{c['entry']}/{c['kind']}{'+syn' if c['synthetic'] else ''}" for c in choices]
    return ", ".join(parts) if len(set(parts)) > 1 else parts[0]


def render_markdown(report: dict[str, Any]) -> str:
    chosen_lrs = ", ".join(f"{m} {r['chosen']:g}" for m, r in report["lr"].items())
    lines = [
        "# Beyond the paper: trajectory signals vs the best same-view baseline",
        "",
        f"Command: `{report['command']}` ({report['date']}). Suite: mnist-c, "
        f"1,000 images per split; evaluation: 15 corruptions x severities "
        f"{', '.join(map(str, EVAL_SEVERITIES))} ({15 * len(EVAL_SEVERITIES)} splits); "
        f"calibration: 4 holdout corruptions x severities {', '.join(map(str, CAL_SEVERITIES))} "
        f"and clean ({4 * len(CAL_SEVERITIES) + 1} splits), plus 6 synthetic compositions of "
        f"two holdout corruptions at severity 4. RDumb, batch 64, {STEPS} steps, probe "
        f"{PROBE} (stream draw) in chunks of {CHUNK}, snapshots at 0, 50, 100; lr "
        f"{chosen_lrs} chosen on "
        f"calibration (below). Stream seeds {', '.join(map(str, report['seeds']))}.",
        "",
        "Every choice (lr; score, step, map kind in lin/quad/iso/logit-lin/logit-quad or none "
        "for a direct baseline, synthetic points on/off) is made by leave-one-dataset-out "
        "MAE on the 5 real calibration datasets (lr: on seed 0, for all seeds; the rest per "
        "seed); evaluation splits are used only for the numbers below. MAE in pp, per-dataset "
        "averaged, mean over seeds. "
        "Ratio and difference: per-dataset errors averaged over seeds, entry vs the best "
        "same-view baseline, 95 % percentile bootstrap over the 15 datasets (uncorrected).",
        "",
    ]
    lines += ["## Summary: the 0.7x target (ratio of MAEs vs the best same-view baseline "
              "chosen on calibration LOO)", "",
              "| model / target | best baseline (LOO) | LOO-chosen signal (all budget signals) "
              "| closest idea (after the fact) | target 0.70 met by the LOO-chosen signal |",
              "|---|---|---|---|---|"]
    for key, table in report["tables"].items():
        ideas = {k: v for k, v in table.items() if not k.startswith("best baseline")}
        closest = min(ideas, key=lambda k: ideas[k]["mae"])
        chosen = table["all budget signals"]
        lines.append(
            f"| {key} | {table['best baseline']['mae']:.2f} | {chosen['mae']:.2f} "
            f"(ratio {chosen['vs_best_baseline']['ratio']:.2f}) | {closest}: "
            f"{ideas[closest]['mae']:.2f} (ratio {ideas[closest]['vs_best_baseline']['ratio']:.2f}) "
            f"| {'yes' if chosen['vs_best_baseline']['ratio'] <= 0.70 else 'no'} |")
    lines.append("")
    for key, table in report["tables"].items():
        model, target = key.split("/")
        view = "frozen logits, frozen source-val" if target == "source" else \
            "batch-statistics logits (run batches), source-val through the bn model"
        lines += [f"## {model}, target `{target}` (baseline view: {view})", "",
                  "| entry | MAE per seed | MAE | ratio [95 %] | diff pp [95 %] | choice (per seed) |",
                  "|---|---|---|---|---|---|"]
        for label, row in table.items():
            v = row["vs_best_baseline"]
            lines.append(
                f"| {label} | {' / '.join(f'{m:.2f}' for m in row['mae_per_seed'])} | "
                f"{row['mae']:.2f} | {v['ratio']:.2f} [{v['ratio_low']:.2f}, "
                f"{v['ratio_high']:.2f}] | {v['diff']:+.2f} [{v['diff_low']:+.2f}, "
                f"{v['diff_high']:+.2f}] | {_fmt_choice(row['choices'])} |")
        lines.append("")
    keys = list(report["tables"])
    lines += ["## How close each idea came: MAE ratio to the best same-view baseline (LOO), "
              "mean of 3 seeds [95 % bootstrap over datasets]", "",
              "| idea | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for idea in IDEAS:
        cells = []
        for key in keys:
            v = report["tables"][key][idea]["vs_best_baseline"]
            cells.append(f"{v['ratio']:.2f} [{v['ratio_low']:.2f}, {v['ratio_high']:.2f}]")
        lines.append(f"| {idea} | " + " | ".join(cells) + " |")
    lines += ["", *WHY, ""]
    lines += ["## Architecture transfer (map chosen and fitted on one model, applied to the "
              "other, vs refit on the other's calibration)", "",
              "| target | entry | from -> to | transferred MAE | refit MAE |", "|---|---|---|---|---|"]
    for target, rows in report["transfer"].items():
        for row in rows:
            lines.append(f"| {target} | {row['entry']} | {row['from']} -> {row['to']} | "
                         f"{row['transferred']:.2f} | {row['refit']:.2f} |")
    lines += ["", "## Learning rate chosen on calibration (stream seed 0, real calibration "
              "datasets, best budget signal's LOO MAE in pp)", "",
              "| model | lr | LOO source | LOO bn | mean | chosen |", "|---|---|---|---|---|---|"]
    for model, row in report["lr"].items():
        for lr, loo in row["loo"].items():
            lines.append(f"| {model} | {lr} | {loo['source']:.2f} | {loo['bn']:.2f} | "
                         f"{(loo['source'] + loo['bn']) / 2:.2f} | "
                         f"{'yes' if float(lr) == row['chosen'] else ''} |")
    lines += ["", "## Wall-clock overhead (same run): (adapter steps + probe snapshots + "
              "signals) / adapter steps", "",
              "| model | splits | ratio, 3 snapshots (step 0 from the bn pass) | "
              "ratio if step 0 were computed (costed as a later snapshot) |",
              "|---|---|---|---|"]
    for model, row in report["overhead"].items():
        lines.append(f"| {model} | {row['splits']} | {row['ratio_budget_3_snapshots']:.3f} | "
                     f"{row['ratio_if_step0_were_computed']:.3f} |")
    return "\n".join(lines) + "\n"
