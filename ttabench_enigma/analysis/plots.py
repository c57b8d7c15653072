"""PNG figures of an embedding-drift analysis, drawn on standalone matplotlib ``Figure``
objects (no pyplot state, the process's backend untouched, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

DPI = 110


def peak_step(frame: pd.DataFrame) -> int:
    """The phase boundary: the first checkpoint of maximal probe accuracy."""
    return int(frame.loc[frame["accuracy"].idxmax(), "step"])


def plot_curves(frame: pd.DataFrame, path: Path | str, title: str = "") -> Path:
    """Accuracy, silhouette and shift distance against steps, the peak-accuracy step marked.

    Writes one PNG with three stacked panels sharing the step axis; returns its path.
    """
    path = Path(path)
    peak = peak_step(frame)
    panels = (
        ("accuracy", "probe accuracy"),
        ("silhouette", "silhouette (k-means)"),
        ("shift_distance", "shift distance"),
    )
    figure = Figure(figsize=(6, 7))
    axes = figure.subplots(len(panels), 1, sharex=True)
    for axis, (column, label) in zip(axes, panels):
        axis.plot(frame["step"], frame[column], marker="o", markersize=3)
        axis.axvline(peak, color="tab:red", linestyle="--", linewidth=1)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_title(title or "entropy minimization trajectory")
    axes[0].text(peak, axes[0].get_ylim()[0], f" peak {peak}", color="tab:red", va="bottom")
    axes[-1].set_xlabel("adaptation step")
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def plot_embeddings(
    embeddings: dict[int, np.ndarray],
    labels: np.ndarray,
    steps: list[int],
    path: Path | str,
    reference_means: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """2-D PCA pictures of the probe embeddings at the given steps, coloured by true class.

    One PCA is fitted on the embeddings of all shown steps together, so the panels share axes
    and drift is visible; the reference class means (if given) are projected and drawn as
    black crosses. Returns the PNG's path.
    """
    path = Path(path)
    labels = np.asarray(labels)
    stacked = np.concatenate([embeddings[s] for s in steps])
    pca = PCA(n_components=2, random_state=0).fit(stacked)
    figure = Figure(figsize=(4 * len(steps), 4))
    axes = figure.subplots(1, len(steps), squeeze=False)
    for axis, step in zip(axes[0], steps):
        points = pca.transform(embeddings[step])
        axis.scatter(points[:, 0], points[:, 1], c=labels % 10, cmap="tab10", vmin=-0.5, vmax=9.5,
                     s=6, alpha=0.7)
        if reference_means is not None:
            means = reference_means[~np.isnan(reference_means).any(axis=1)]
            projected = pca.transform(means)
            axis.scatter(projected[:, 0], projected[:, 1], c="black", marker="x", s=60)
        axis.set_title(f"step {step}")
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


def plot_sweep(sweep: pd.DataFrame, path: Path | str, title: str = "") -> Path:
    """Per-split changes: silhouette vs accuracy in phase 1, shift distance vs accuracy in phase 2."""
    path = Path(path)
    figure = Figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    pairs = (
        ("d_silhouette_1", "d_accuracy_1", "phase 1 (start -> peak)", "change in silhouette"),
        ("d_shift_2", "d_accuracy_2", "phase 2 (peak -> end)", "change in shift distance"),
    )
    for axis, (x, y, name, xlabel) in zip(axes, pairs):
        axis.scatter(sweep[x], sweep[y] * 100, s=18)
        axis.set_title(name)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("change in accuracy (pp)")
        axis.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    return path


__all__ = ["peak_step", "plot_curves", "plot_embeddings", "plot_sweep"]
