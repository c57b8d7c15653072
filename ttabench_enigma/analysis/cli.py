"""``ttabench analyze``: embedding drift along an entropy-minimization trajectory.

One split: writes ``analysis.csv`` (one row per checkpoint), ``curves.png``, ``embeddings.png``
and ``summary.json`` into ``--output`` and prints the two phases. ``--sweep`` runs every split
matching ``--split`` (a glob such as ``"*-5"``, or ``all``), writes each split's CSV under
``DIR/<split>/`` and reports, across splits, the correlation of the silhouette change with the
accuracy change in phase 1 (start -> peak) and of the shift-distance change with the accuracy
change in phase 2 (peak -> end) in ``sweep.csv``, ``sweep.json`` and ``sweep.png``.
``--exclude-correct K`` adds the exclusion experiment (``exclusion.json``, or columns of the
sweep table).
"""

from __future__ import annotations

import copy
import fnmatch
import math
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import torch
from torch import nn

from ttabench.api import (
    LoadedModel,
    SplitSpec,
    Suite,
    TTABenchError,
    cache_dir,
    get_plugin,
    load_model,
    make_suite,
    write_json_atomic,
)
from ttabench_enigma.analysis.plots import plot_curves, plot_embeddings, plot_sweep
from ttabench_enigma.analysis.trajectory import (
    AdapterFactory,
    analyze_trajectory,
    exclusion_experiment,
    phase_summary,
    probe_indices,
    reference_class_means,
    stack_dataset,
    sweep_correlations,
)

ADAPTERS: tuple[str, ...] = ("tent", "eta", "rdumb")
RDUMB_RESET_EVERY = 1000


def adapter_factory(
    name: str, num_classes: int, steps: int, reset: bool, lr: float | None = None
) -> AdapterFactory:
    """A function building the named adapter on a module.

    RDumb runs one unbroken trajectory (``reset_every = steps + 1``) unless ``reset`` asks for
    its own schedule (every 1,000 steps). Tent and ETA never reset.
    """
    if name not in ADAPTERS:
        raise TTABenchError(f"unknown adapter '{name}' for analysis; use one of {', '.join(ADAPTERS)}")
    if reset and name != "rdumb":
        raise TTABenchError(f"--reset applies to rdumb only; {name} never resets")
    params: dict[str, Any] = {} if lr is None else {"lr": lr}
    if name in ("eta", "rdumb"):
        params["num_classes"] = num_classes
    if name == "rdumb":
        params["reset_every"] = RDUMB_RESET_EVERY if reset else steps + 1
    cls = get_plugin("adapters", name)

    def make(module: nn.Module) -> Any:
        return cls(module, **params)

    return make


def select_splits(suite: Suite, pattern: str, sweep: bool) -> list[SplitSpec]:
    """The split named ``pattern``, or with ``sweep`` every split matching the glob (or ``all``)."""
    splits = suite.splits()
    names = [s.name for s in splits]
    if not sweep:
        if pattern not in names:
            raise TTABenchError(
                f"unknown split '{pattern}' of suite '{suite.name}'; available: {', '.join(names)}"
                " (use --sweep for a glob)"
            )
        return [splits[names.index(pattern)]]
    chosen = splits if pattern == "all" else [s for s in splits if fnmatch.fnmatch(s.name, pattern)]
    if not chosen:
        raise TTABenchError(
            f"no split of suite '{suite.name}' matches '{pattern}'; available: {', '.join(names)}"
        )
    return chosen


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_source(
    model: str, suite: Suite
) -> tuple[LoadedModel, np.ndarray | None]:
    """Load the model (on ``device()``, eval mode) and its clean reference class means.

    The reference means come from the suite's ``source_val`` (None when it has none).
    """
    loaded = load_model(model, cache_dir(), num_classes=suite.num_classes)
    if loaded.num_classes != suite.num_classes:
        raise TTABenchError(
            f"model '{model}' has {loaded.num_classes} classes but suite '{suite.name}' "
            f"{suite.num_classes}; pick a matching model"
        )
    loaded.module.to(device()).eval()
    clean = suite.source_val()
    reference = None
    if clean is not None:
        images, labels = stack_dataset(clean)
        reference = reference_class_means(loaded, images, labels)
    return loaded, reference


def analyze_split(
    loaded: LoadedModel,
    suite: Suite,
    split: SplitSpec,
    make_adapter: AdapterFactory,
    reference: np.ndarray | None,
    steps: int,
    every: int,
    probe_size: int,
    seed: int,
    progress: bool = True,
    embeddings_out: dict[int, np.ndarray] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """One trajectory on a fresh copy of the source model: (analysis frame, probe labels)."""
    images, labels = stack_dataset(suite.dataset(split))
    probe = probe_indices(len(images), probe_size, seed)
    adapter = make_adapter(copy.deepcopy(loaded.module))
    frame = analyze_trajectory(
        loaded,
        adapter,
        images,
        images[probe],
        labels[probe],
        reference,
        steps,
        every,
        seed=seed,
        progress=progress,
        embeddings_out=embeddings_out,
    )
    return frame, labels[probe].numpy()


def run_exclusion(
    loaded: LoadedModel,
    suite: Suite,
    split: SplitSpec,
    make_adapter: AdapterFactory,
    steps: int,
    top_k: int,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """``exclusion_experiment`` on one split (fresh copies of the source model)."""
    images, labels = stack_dataset(suite.dataset(split))
    return exclusion_experiment(
        loaded, make_adapter, images, labels, steps, top_k=top_k, seed=seed, progress=progress
    )


def _pct(value: float) -> str:
    return "nan" if math.isnan(value) else f"{100 * value:.1f}%"


def describe(summary: dict[str, float]) -> str:
    """Three lines: the peak step and accuracy, silhouette and shift distance at 0/peak/end."""
    return "\n".join(
        [
            f"peak accuracy at step {summary['peak_step']} of {summary['end_step']}: "
            f"{_pct(summary['accuracy_start'])} (step 0) -> {_pct(summary['accuracy_peak'])} "
            f"(peak) -> {_pct(summary['accuracy_end'])} (end)",
            f"silhouette: {summary['silhouette_start']:.3f} -> {summary['silhouette_peak']:.3f} "
            f"-> {summary['silhouette_end']:.3f} (phase 1 {summary['d_silhouette_1']:+.3f}, "
            f"phase 2 {summary['d_silhouette_2']:+.3f})",
            f"shift distance: {summary['shift_start']:.3f} -> {summary['shift_peak']:.3f} "
            f"-> {summary['shift_end']:.3f} (phase 1 {summary['d_shift_1']:+.3f}, "
            f"phase 2 {summary['d_shift_2']:+.3f})",
        ]
    )


def describe_exclusion(result: dict[str, Any]) -> str:
    """One line: held-out accuracy gains with and without the initially correct images."""
    return (
        f"exclusion (top-{result['top_k']}, {result['removed']} of {result['adapt_images']} "
        f"removed): held-out accuracy {_pct(result['accuracy_before'])} -> "
        f"{_pct(result['accuracy_after_filtered'])} filtered "
        f"({100 * result['gain_filtered']:+.1f} pp), "
        f"{_pct(result['accuracy_after_unfiltered'])} unfiltered "
        f"({100 * result['gain_unfiltered']:+.1f} pp)"
    )


def _jsonable(value: Any) -> Any:
    """NaN -> None recursively, so the JSON is valid."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def write_single(
    output: Path,
    frame: pd.DataFrame,
    labels: np.ndarray,
    embeddings: dict[int, np.ndarray],
    reference: np.ndarray | None,
    settings: dict[str, Any],
    exclusion: dict[str, Any] | None,
) -> dict[str, float]:
    """analysis.csv, curves.png, embeddings.png, summary.json (and exclusion.json)."""
    output.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output / "analysis.csv", index=False)
    summary = phase_summary(frame)
    title = f"{settings['adapter']} on {settings['split']}"
    plot_curves(frame, output / "curves.png", title=title)
    steps = sorted({0, summary["peak_step"], summary["end_step"]})
    plot_embeddings(embeddings, labels, steps, output / "embeddings.png", reference, title=title)
    write_json_atomic(output / "summary.json", _jsonable({"settings": settings, "phases": summary}))
    if exclusion is not None:
        write_json_atomic(output / "exclusion.json", _jsonable(exclusion))
    return summary


def write_sweep(
    output: Path, rows: list[dict[str, Any]], settings: dict[str, Any]
) -> dict[str, Any]:
    """sweep.csv (one row per split), sweep.json (settings, correlations, rows), sweep.png."""
    table = pd.DataFrame(rows)
    table.to_csv(output / "sweep.csv", index=False)
    correlations = sweep_correlations(table)
    report: dict[str, Any] = {
        "settings": settings,
        "correlations": correlations,
        "paper": {"phase1_spearman": 0.70, "phase2_spearman": -0.79},
        "splits": table.to_dict(orient="records"),
    }
    if "gain_filtered" in table:
        report["exclusion_mean"] = {
            "gain_filtered": float(table["gain_filtered"].mean()),
            "gain_unfiltered": float(table["gain_unfiltered"].mean()),
        }
    write_json_atomic(output / "sweep.json", _jsonable(report))
    plot_sweep(table, output / "sweep.png", title=f"{settings['adapter']} on {settings['suite']}")
    return report


@click.command("analyze")
@click.option("--model", "model", required=True, help="Model spec, e.g. mnist-cnn or timm:resnet50.")
@click.option("--suite", "suite_name", required=True, help="Suite name, e.g. mnist-c.")
@click.option("--split", "split", required=True, help="Split name; with --sweep a glob or 'all'.")
@click.option("--adapter", type=click.Choice(ADAPTERS), default="rdumb", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Snapshot the probe every K steps (and at step 0).")
@click.option("--probe-size", type=click.IntRange(min=2), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate (default: the adapter's).")
@click.option("--data-dir", default=None, help="Root of the datasets.")
@click.option("--output", "output", default="drift-analysis", show_default=True,
              type=click.Path(file_okay=False), help="Output directory.")
@click.option("--reset", is_flag=True, help="Keep RDumb's reset every 1,000 steps.")
@click.option("--sweep", is_flag=True, help="Run every split matching --split; correlate phases.")
@click.option("--exclude-correct", "exclude_correct", type=click.IntRange(min=1), default=None,
              metavar="K", help="Also run the exclusion experiment (remove top-K-correct images).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def analyze(
    model: str,
    suite_name: str,
    split: str,
    adapter: str,
    steps: int,
    every: int,
    probe_size: int,
    seed: int,
    lr: float | None,
    data_dir: str | None,
    output: str,
    reset: bool,
    sweep: bool,
    exclude_correct: int | None,
    quiet: bool,
) -> None:
    """Embedding drift (silhouette, shift distance) along an entropy-minimization trajectory."""
    torch.manual_seed(seed)
    suite = make_suite(suite_name, data_dir)
    chosen = select_splits(suite, split, sweep)
    make_adapter = adapter_factory(adapter, suite.num_classes, steps, reset, lr)
    loaded, reference = load_source(model, suite)
    out = Path(output)
    settings = {
        "model": model, "model_id": loaded.model_id, "weights_hash": loaded.weights_hash,
        "suite": suite_name, "split": split, "adapter": adapter, "steps": steps, "every": every,
        "probe_size": probe_size, "seed": seed, "lr": lr, "reset": reset,
        "exclude_correct": exclude_correct,
    }
    progress = not quiet
    if not sweep:
        embeddings: dict[int, np.ndarray] = {}
        frame, labels = analyze_split(
            loaded, suite, chosen[0], make_adapter, reference, steps, every, probe_size, seed,
            progress, embeddings,
        )
        exclusion = None
        if exclude_correct is not None:
            exclusion = run_exclusion(
                loaded, suite, chosen[0], make_adapter, steps, exclude_correct, seed, progress
            )
        summary = write_single(out, frame, labels, embeddings, reference, settings, exclusion)
        click.echo(describe(summary))
        if exclusion is not None:
            click.echo(describe_exclusion(exclusion))
        click.echo(f"wrote {out / 'analysis.csv'} and plots")
        return
    rows = []
    for spec in chosen:
        frame, _ = analyze_split(
            loaded, suite, spec, make_adapter, reference, steps, every, probe_size, seed, progress
        )
        (out / spec.name).mkdir(parents=True, exist_ok=True)
        frame.to_csv(out / spec.name / "analysis.csv", index=False)
        row: dict[str, Any] = {"split": spec.name, "dataset": spec.dataset, **phase_summary(frame)}
        if exclude_correct is not None:
            row.update(
                run_exclusion(loaded, suite, spec, make_adapter, steps, exclude_correct, seed, progress)
            )
        rows.append(row)
        if not quiet:
            click.echo(f"{spec.name}: " + describe(row).replace("\n", "; "))
    report = write_sweep(out, rows, settings)
    for phase, change in (("phase1", "silhouette"), ("phase2", "shift distance")):
        c = report["correlations"][phase]
        click.echo(
            f"{phase}: corr(change in {change}, change in accuracy) over {c['n']} splits: "
            f"Spearman {c['spearman']:.2f}, Pearson {c['pearson']:.2f}"
        )
    click.echo(f"wrote {out / 'sweep.csv'} and {out / 'sweep.json'}")


__all__ = [
    "ADAPTERS",
    "adapter_factory",
    "analyze",
    "analyze_split",
    "describe",
    "describe_exclusion",
    "load_source",
    "run_exclusion",
    "select_splits",
    "write_single",
    "write_sweep",
]
