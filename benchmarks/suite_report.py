"""Report on the ``mnist-c`` suite: can it rank accuracy estimators?

Builds the suite and the ``mnist-cnn`` model if needed, then computes for every split the
``source`` accuracy (frozen model, eval mode, running statistics) and the ``bn`` accuracy (the
same model normalising each batch of 64 with its own statistics), and checks the targets:

- evaluation splits (75): at most 10 % of them within 5 pp of chance (10 %), interquartile range
  of ``source`` accuracy at least 30 pp, ``source`` accuracy non-increasing with severity for
  every corruption (every violation is listed);
- calibration splits (21): ``source`` accuracies span at least 60 pp (max - min).

It also times the build, the model training and the BN step (entropy minimisation on the BN
affine parameters, batch 64, images/s). Writes ``benchmarks/results/mnistc_suite_report.json``
and ``.md``. Usage::

    python benchmarks/suite_report.py [--data-dir D] [--cache-dir C] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ttabench.api import to_unit_float
from ttabench.models.mnist_cnn import load_mnist_cnn
from ttabench.paths import cache_dir as default_cache_dir
from ttabench.store import write_json_atomic
from ttabench.suites.mnistc import MNISTC, suite_is_built, suite_root

RESULTS = Path(__file__).resolve().parent / "results"
CHANCE = 0.10


@torch.no_grad()
def accuracies(module: nn.Module, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(source, bn) accuracy on uint8 (N, 3, H, W) images: eval mode with batches of 256, and
    train-mode normalisation (test-batch statistics) on a copy with batches of 64."""
    x = to_unit_float(torch.from_numpy(images))
    y = torch.from_numpy(labels)
    module.eval()
    source = torch.cat([module(x[i : i + 256]).argmax(1) for i in range(0, len(x), 256)])
    batch_norm = copy.deepcopy(module).train()
    bn = torch.cat([batch_norm(x[i : i + 64]).argmax(1) for i in range(0, len(x), 64)])
    return float((source == y).float().mean()), float((bn == y).float().mean())


def bn_step_throughput(module: nn.Module, steps: int = 30, batch: int = 64) -> float:
    """Images/s of entropy-minimisation steps that update only the BN affine parameters."""
    model = copy.deepcopy(module).train()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    params = []
    for sub in model.modules():
        if isinstance(sub, nn.BatchNorm2d):
            sub.track_running_stats = False
            sub.running_mean = sub.running_var = None
            for parameter in sub.parameters():
                parameter.requires_grad_(True)
                params.append(parameter)
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def step() -> None:
        logits = model(x)
        loss = -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - start)


def checks(rows: list[dict]) -> dict:
    """The suite's targets over the per-split rows (see the module docstring)."""
    evals = [r for r in rows if r["role"] == "eval"]
    calib = [r for r in rows if r["role"] == "calibration"]
    acc = np.array([r["source"] for r in evals])
    near_chance = [r["split"] for r in evals if abs(r["source"] - CHANCE) <= 0.05]
    q25, q75 = np.percentile(acc, [25, 75])
    violations = []
    by_corruption: dict[str, dict[int, float]] = {}
    for r in evals:
        by_corruption.setdefault(r["dataset"], {})[r["severity"]] = r["source"]
    for name, series in by_corruption.items():
        for s in sorted(series)[:-1]:
            if series[s + 1] > series[s]:
                violations.append(f"{name}: severity {s + 1} {series[s + 1]:.3f} > "
                                  f"severity {s} {series[s]:.3f}")
    calib_acc = np.array([r["source"] for r in calib])
    calib_range = float(calib_acc.max() - calib_acc.min()) if len(calib_acc) else 0.0
    return {
        "eval_splits": len(evals),
        "near_chance": near_chance,
        "near_chance_fraction": len(near_chance) / max(1, len(evals)),
        "near_chance_ok": len(near_chance) <= 0.10 * len(evals),
        "source_iqr": float(q75 - q25),
        "source_quartiles": [float(q25), float(np.median(acc)), float(q75)],
        "iqr_ok": float(q75 - q25) >= 0.30,
        "monotone_violations": violations,
        "monotone_ok": not violations,
        "calibration_splits": len(calib),
        "calibration_range": calib_range,
        "calibration_ok": calib_range >= 0.60,
        "mean_source_eval": float(acc.mean()),
        "mean_bn_eval": float(np.mean([r["bn"] for r in evals])),
    }


def markdown(report: dict) -> str:
    """The report as a Markdown table plus the checks."""
    c = report["checks"]
    lines = [
        "# mnist-c suite report",
        "",
        f"Model `{report['model_id']}` (weights {report['weights_hash']}), suite files hash "
        f"{report['suite']['files_hash']}, recipe {report['suite']['recipe']}.",
        "",
        "| check | value | target | ok |",
        "|---|---|---|---|",
        f"| eval splits within 5 pp of chance | {len(c['near_chance'])}/{c['eval_splits']} "
        f"| <= 10 % | {c['near_chance_ok']} |",
        f"| IQR of source accuracy (eval) | {100 * c['source_iqr']:.1f} pp | >= 30 pp "
        f"| {c['iqr_ok']} |",
        f"| severity monotonicity violations | {len(c['monotone_violations'])} | 0 "
        f"| {c['monotone_ok']} |",
        f"| calibration source-accuracy range | {100 * c['calibration_range']:.1f} pp "
        f"| >= 60 pp | {c['calibration_ok']} |",
        "",
        f"Mean eval accuracy: source {100 * c['mean_source_eval']:.1f} %, "
        f"bn {100 * c['mean_bn_eval']:.1f} %. Source-val accuracy "
        f"{100 * report['source_val_accuracy']:.1f} %.",
        "",
        "Timings: " + ", ".join(f"{k} {v}" for k, v in report["timings"].items()),
        "",
        "| split | role | source % | bn % |",
        "|---|---|---|---|",
    ]
    for r in report["splits"]:
        lines.append(f"| {r['split']} | {r['role']} | {100 * r['source']:.1f} | "
                     f"{100 * r['bn']:.1f} |")
    if c["monotone_violations"]:
        lines += ["", "Monotonicity violations:", ""]
        lines += [f"- {v}" for v in c["monotone_violations"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: as is)")
    parser.add_argument("--output", default=str(RESULTS / "mnistc_suite_report"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    timings: dict[str, str] = {"torch_threads": str(torch.get_num_threads())}

    start = time.perf_counter()
    was_built = suite_is_built(suite_root(args.data_dir), 0)
    suite = MNISTC(args.data_dir)
    timings["suite_build_s"] = "cached" if was_built else f"{time.perf_counter() - start:.1f}"
    model_file = cache / "models" / "mnist-cnn-0.pt"
    was_trained = model_file.is_file()
    start = time.perf_counter()
    loaded = load_mnist_cnn(None, cache_dir=cache)
    timings["model_train_s"] = "cached" if was_trained else f"{time.perf_counter() - start:.1f}"
    module = loaded.module

    start = time.perf_counter()
    suite.dataset(suite.splits()[0]).arrays()
    timings["read_split_s"] = f"{time.perf_counter() - start:.3f}"

    rows = []
    for split in suite.splits():
        images, labels = suite.dataset(split).arrays()
        source, bn = accuracies(module, images, labels)
        rows.append({"split": split.name, "dataset": split.dataset, "severity": split.severity,
                     "role": split.role, "n": len(labels), "source": source, "bn": bn})
    val_images, val_labels = suite.source_val().arrays()
    val_acc, _ = accuracies(module, val_images, val_labels)
    timings["bn_step_images_per_s"] = f"{bn_step_throughput(module):.0f}"
    report = {
        "suite": suite.record(),
        "model_id": loaded.model_id,
        "weights_hash": loaded.weights_hash,
        "source_val_accuracy": val_acc,
        "timings": timings,
        "checks": checks(rows),
        "splits": rows,
    }
    output = Path(args.output)
    write_json_atomic(output.with_suffix(".json"), report)
    output.with_suffix(".md").write_text(markdown(report))
    print(markdown(report).split("| split |")[0])


if __name__ == "__main__":
    main()
