"""Estimates on one folder of unlabelled images, each with its interval
(``ttabench.calibrate.interval``): what ``ttabench estimate`` computes once its checks passed.

The folder is decoded once into memory when it fits the decoded-image budget
(``decode_folder``), and every pass reads it there. One
cell runs every wanted estimator on the folder itself (stream seed ``seed``): each entry's
estimate. A static entry's sampling interval comes from recomputing its estimator on ``n_boot``
resamples of its view's outputs (seed ``boot_seed``); a trajectory entry's from ``resamples``
more cells, cell b on resample b of the images (``bootstrap_indices(n, resamples, boot_seed)``)
with stream seed ``seed + b``, running only the trajectory estimators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ttabench.api import (
    Adapter,
    Estimator,
    LoadedModel,
    Outputs,
    StaticEstimator,
    TrajectoryEstimator,
)
from ttabench.calibrate.interval import (
    Interval,
    bootstrap_indices,
    normal_interval,
    percentile_interval,
    static_replicates,
)
from ttabench.errors import TTABenchError
from ttabench.records import ViewResult
from ttabench.runner import execute
from ttabench.runner.decoded_cache import LoaderOptions
from ttabench.runner.execute import CellInputs, CellOutput


@dataclass(frozen=True)
class Wanted:
    """One entry to estimate: its estimator, the view a static estimator is read in, how its
    result becomes an accuracy, and the calibration error of that map (None: unknown)."""

    name: str
    estimator: str
    view: str
    accuracy: Callable[[ViewResult], float | None]
    calibration_q: float | None = None


@dataclass(frozen=True)
class FolderRun:
    """What every cell of an estimate shares."""

    model: LoadedModel
    adapter_cls: type[Adapter]
    adapter_params: dict[str, Any]
    estimators: dict[str, Estimator]
    batch_size: int
    steps: int
    device: torch.device
    source_val: Outputs | None = None
    source_val_bn: Outputs | None = None
    source_val_adapted: Outputs | None = None
    loader: LoaderOptions = LoaderOptions()
    precision: str = "fp32"
    channels_last: bool = False


@dataclass(frozen=True)
class Estimated:
    """One entry's estimate on the folder, its score and interval, and the bootstrap's
    accuracies (NaN where the estimator failed on a resample)."""

    wanted: Wanted
    estimate: float
    score: float | None
    interval: Interval
    replicates: np.ndarray
    method: str


def decode_folder(folder: Dataset[Any], image_bytes: int, budget_bytes: int,
                  workers: int = 0) -> Dataset[Any]:
    """Every image of ``folder`` decoded once, in order, as one in-memory dataset (labels -1)
    when ``len(folder) * image_bytes`` fits ``budget_bytes``; else ``folder`` itself (each
    cell decodes what it reads)."""
    n = len(folder)  # type: ignore[arg-type]
    if n * image_bytes > budget_bytes:
        return folder
    loader = DataLoader(folder, batch_size=256, num_workers=workers)
    images = torch.cat([batch for batch, _ in loader])
    return TensorDataset(images, torch.full((len(images),), -1, dtype=torch.long))


def _cell(run: FolderRun, suite: Any, estimators: dict[str, Estimator], seed: int,
          progress: bool) -> CellOutput:
    return execute.run_cell(CellInputs(
        suite=suite, split=suite.splits()[0], model=run.model, adapter_cls=run.adapter_cls,
        adapter_params=dict(run.adapter_params), estimators=estimators, seed=seed,
        batch_size=run.batch_size, steps=run.steps, device=run.device,
        source_val=run.source_val, source_val_bn=run.source_val_bn,
        source_val_adapted=run.source_val_adapted, loader=run.loader,
        precision=run.precision, channels_last=run.channels_last, show_progress=progress,
        labelled=False))


def _accuracy(wanted: Wanted, out: CellOutput) -> tuple[float, float | None]:
    result = out.result(wanted.estimator, wanted.view)
    if result is None or result.failed is not None:
        raise TTABenchError(f"{wanted.estimator} failed on the folder: "
                            f"{result.failed if result else 'no result'}")
    value = wanted.accuracy(result)
    if value is None:
        raise TTABenchError(f"{wanted.name}: {wanted.estimator} gave a score "
                            f"({result.value:.4g}) but no accuracy")
    return value, result.value


def estimate_folder(run: FolderRun, images: Dataset[Any], make_suite: Callable[[Dataset[Any]],
                    Any], wanted: list[Wanted], *, seed: int, n_boot: int, resamples: int,
                    boot_seed: int, progress: bool) -> list[Estimated]:
    """Every wanted entry's estimate and interval (module docstring). ``images``: the folder
    decoded in memory (``decode_folder``; read with no loader workers), or the folder itself
    (each cell decodes it through ``run.loader``)."""
    if isinstance(images, TensorDataset):
        run = replace(run, loader=replace(run.loader, workers=0))
    needed = {w.estimator: run.estimators[w.estimator] for w in wanted}
    out = _cell(run, make_suite(images), needed, seed, progress)
    points = {w.name: _accuracy(w, out) for w in wanted}
    n = len(images)  # type: ignore[arg-type]
    moving: dict[str, Estimator] = {name: est for name, est in needed.items()
                                    if isinstance(est, TrajectoryEstimator)}
    resampled: list[CellOutput] = []
    for b, rows in enumerate(bootstrap_indices(n, resamples, boot_seed) if moving else []):
        resample = Subset(images, rows.tolist())
        resampled.append(_cell(run, make_suite(resample), moving, seed + 1 + b, progress))
    found = []
    for w in wanted:
        point, score = points[w.name]
        est = needed[w.estimator]
        if isinstance(est, StaticEstimator):
            reps = static_replicates(est, out.view_outputs[w.view], w.accuracy,
                                     bootstrap_indices(n, n_boot, boot_seed))
            sampling = percentile_interval(reps) if np.isfinite(reps).any() else (point, point)
            method = (f"percentile bootstrap over the {n} images ({n_boot} resamples, seed "
                      f"{boot_seed})")
        else:
            reps = np.array([_accuracy(w, cell)[0] for cell in resampled], dtype=np.float64)
            sampling = normal_interval(point, reps)
            method = (f"normal bootstrap over the {n} images ({resamples} resamples, seed "
                      f"{boot_seed}, each adapted once with its own stream seed)")
        found.append(Estimated(w, point, score, Interval.combine(point, sampling,
                                                                 w.calibration_q), reps, method))
    return found


__all__ = ["Estimated", "FolderRun", "Wanted", "decode_folder", "estimate_folder"]
