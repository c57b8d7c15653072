"""Running the drift metrics along one long entropy-minimization trajectory.

The stream is the host's (``ttabench.runner.stream``): the split shuffled with a seed, cut
into batches of 64 with the last incomplete batch dropped, and replayed for as many epochs as
the steps need; the probe is the start of its first epoch. At step 0 (before any update) and
every ``every`` steps, the labelled probe goes through ``adapter.predict`` in fixed chunks of
100 images; one forward pass per chunk gives both the logits and the penultimate embeddings
(a forward pre-hook on the classifier records its input).

``exclusion_experiment`` repeats the paper's test of "confident means correct": adapt on a
stream from which every image the source model already classifies correctly is removed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.stats import pearsonr, spearmanr
from torch import nn
from tqdm.auto import tqdm

from ttabench.api import (
    Adapter,
    LoadedModel,
    TTABenchError,
    find_classifier,
    first_epoch,
    stream_indices,
    to_unit_float,
)
from ttabench_enigma.analysis.metrics import (
    class_means,
    mean_entropy,
    prototype_distance,
    shift_distance,
    silhouette,
)
from ttabench_enigma.flips import weighted_flips

BATCH_SIZE = 64
CHUNK = 100
COLUMNS: tuple[str, ...] = (
    "step",
    "accuracy",
    "flips_weighted",
    "flips_unweighted",
    "mean_entropy",
    "mean_confidence",
    "silhouette",
    "shift_distance",
    "prototype_distance",
)

AdapterFactory = Callable[[nn.Module], Adapter]


# --------------------------------------------------------------------------- stream and probe


def probe_indices(n: int, probe_size: int, seed: int) -> torch.Tensor:
    """The probe: the first ``min(probe_size, n)`` images of the stream's first epoch."""
    return first_epoch(n, seed)[: min(probe_size, n)]


def stream(n: int, steps: int, seed: int, batch_size: int = BATCH_SIZE) -> Iterator[torch.Tensor]:
    """Index batches of the host's seeded stream (``ttabench.runner.stream``), ``steps`` in all."""
    if n < batch_size:
        raise TTABenchError(
            f"the stream has {n} images, fewer than one batch of {batch_size}; use a larger split"
        )
    return stream_indices(n, seed, batch_size, steps)


def stack_dataset(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of a ``(uint8 image, label)`` dataset as (images (N, 3, H, W), labels (N,))."""
    if len(dataset) == 0:
        raise TTABenchError("the split is empty; pick another split")
    items = [dataset[i] for i in range(len(dataset))]
    images = torch.stack([torch.as_tensor(image) for image, _ in items])
    return images, torch.as_tensor([int(label) for _, label in items], dtype=torch.int64)


# --------------------------------------------------------------------------- forward passes


def classifier_name(loaded_model: LoadedModel) -> str:
    """The name of the final ``nn.Linear`` (``loaded_model.classifier`` or the last Linear)."""
    name = loaded_model.classifier or find_classifier(loaded_model.module)
    if not name:
        raise TTABenchError(
            f"model '{loaded_model.model_id}' has no nn.Linear classifier to take embeddings from"
        )
    return name


@contextmanager
def capture_inputs(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the (flattened, detached) first input of every forward call of ``module``."""
    captured: list[torch.Tensor] = []

    def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
        captured.append(args[0].detach().flatten(1).cpu())

    handle = module.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU when it has none)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")


def snapshot(
    predict: Callable[[torch.Tensor], torch.Tensor],
    head: nn.Module,
    images: torch.Tensor,
    device: torch.device,
    chunk: int = CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, embeddings) of ``images`` through ``predict`` in chunks, one pass per chunk.

    ``head`` is the classifier module inside the predicting model; its input is the embedding.
    """
    logits = []
    with torch.no_grad(), capture_inputs(head) as captured:
        for start in range(0, len(images), chunk):
            x = to_unit_float(images[start : start + chunk]).to(device)
            logits.append(predict(x).detach().float().cpu())
    if len(captured) != len(logits):
        raise TTABenchError(
            "the classifier was not called exactly once per forward pass; "
            "check the model's classifier name"
        )
    return torch.cat(logits), torch.cat(captured)


def reference_class_means(
    loaded_model: LoadedModel,
    images: torch.Tensor,
    labels: torch.Tensor,
    chunk: int = CHUNK,
) -> np.ndarray:
    """Clean class means mu_c of the source model's embeddings (eval mode, running statistics).

    Call this before building an adapter on ``loaded_model.module``: adapters reconfigure
    normalization in place.
    """
    module = loaded_model.module
    head = module.get_submodule(classifier_name(loaded_model))
    was_training = module.training
    module.eval()
    try:
        _, embeddings = snapshot(module, head, images, module_device(module), chunk)
    finally:
        module.train(was_training)
    return class_means(embeddings, labels, loaded_model.num_classes)


def source_predictions(
    loaded_model: LoadedModel, images: torch.Tensor, chunk: int = CHUNK
) -> torch.Tensor:
    """Logits of the frozen source model (eval mode, running statistics), in chunks."""
    module = loaded_model.module
    was_training = module.training
    module.eval()
    logits = []
    try:
        with torch.no_grad():
            for start in range(0, len(images), chunk):
                x = to_unit_float(images[start : start + chunk]).to(module_device(module))
                logits.append(module(x).float().cpu())
    finally:
        module.train(was_training)
    return torch.cat(logits)


# --------------------------------------------------------------------------- the trajectory


def checkpoints(steps: int, every: int) -> list[int]:
    """Snapshot steps: 0, every, 2 * every, ... and always ``steps`` itself."""
    if steps < 1 or every < 1:
        raise TTABenchError(f"steps and every must be positive, got steps={steps}, every={every}")
    return sorted(set(range(0, steps + 1, every)) | {steps})


def analyze_trajectory(
    loaded_model: LoadedModel,
    adapter: Adapter,
    stream_images: torch.Tensor,
    probe_images: torch.Tensor,
    probe_labels: torch.Tensor,
    reference_means: np.ndarray | None,
    steps: int,
    every: int,
    *,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    chunk: int = CHUNK,
    progress: bool = True,
    embeddings_out: dict[int, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Adapt for ``steps`` steps on the seeded stream and measure the probe every ``every`` steps.

    ``stream_images`` are the split's uint8 images in dataset order (the seeded shuffle happens
    here); ``adapter`` must wrap (a copy of) ``loaded_model.module`` so that the classifier name
    resolves in ``adapter.model``. No reset happens here beyond what the adapter does itself
    (build RDumb with ``reset_every > steps`` for one unbroken trajectory).

    One row per checkpoint (``checkpoints(steps, every)``), columns ``COLUMNS``:
    ``accuracy`` of the adapted model's probe predictions (batch statistics, chunks of
    ``chunk``), ``flips_weighted`` / ``flips_unweighted`` against step 0 (``weighted_flips``),
    ``mean_entropy`` (nats) and ``mean_confidence`` of the softmax, ``silhouette`` and
    ``shift_distance`` (k = number of classes, seeded with ``seed``; NaN without
``reference_means``) and ``prototype_distance``
    (cosine, classifier weights as prototypes). If ``embeddings_out`` is given it receives the
    probe embeddings of every checkpoint, keyed by step.
    """
    k = loaded_model.num_classes
    head = adapter.model.get_submodule(classifier_name(loaded_model))
    device = module_device(adapter.model)
    labels = torch.as_tensor(probe_labels, dtype=torch.int64)
    if len(labels) != len(probe_images):
        raise TTABenchError(f"got {len(probe_images)} probe images but {len(labels)} labels")
    if len(labels) <= k:
        raise TTABenchError(
            f"the probe needs more images than classes ({k}) for k-means; got {len(labels)}"
        )
    wanted = checkpoints(steps, every)
    rows: list[dict[str, float]] = []
    pred0 = conf0 = None

    def measure(step: int) -> None:
        nonlocal pred0, conf0
        logits, embeddings = snapshot(adapter.predict, head, probe_images, device, chunk)
        probs = logits.softmax(dim=1)
        conf, pred = probs.max(dim=1)
        if pred0 is None:
            pred0, conf0 = pred, conf
        weight = head.weight.detach().cpu()
        rows.append(
            {
                "step": step,
                "accuracy": float((pred == labels).double().mean()),
                "flips_weighted": weighted_flips(pred0, conf0, pred, weighted=True),
                "flips_unweighted": weighted_flips(pred0, conf0, pred, weighted=False),
                "mean_entropy": mean_entropy(logits),
                "mean_confidence": float(conf.double().mean()),
                "silhouette": silhouette(embeddings, k, seed),
                "shift_distance": (
                    float("nan")
                    if reference_means is None
                    else shift_distance(embeddings, reference_means, k, seed)
                ),
                "prototype_distance": prototype_distance(embeddings, pred, weight),
            }
        )
        if embeddings_out is not None:
            embeddings_out[step] = embeddings.numpy()

    measure(0)
    batches = stream(len(stream_images), steps, seed, batch_size)
    for step, index in enumerate(tqdm(batches, total=steps, disable=not progress), start=1):
        adapter(to_unit_float(stream_images[index]).to(device))
        if step in wanted:
            measure(step)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["step"] = frame["step"].astype(int)
    return frame


# --------------------------------------------------------------------------- phases


def phase_summary(frame: pd.DataFrame) -> dict[str, float]:
    """The two phases of one trajectory, split at the step of peak accuracy.

    Phase 1 is step 0 -> peak (first step of maximal accuracy), phase 2 is peak -> last step.
    Returns the peak step, accuracy at 0 / peak / end and the changes
    ``d_accuracy_1``, ``d_silhouette_1``, ``d_shift_1`` (peak minus start) and ``d_accuracy_2``,
    ``d_silhouette_2``, ``d_shift_2`` (end minus peak).
    """
    if frame.empty:
        raise TTABenchError("the trajectory has no checkpoint")
    start = frame.iloc[0]
    peak = frame.loc[frame["accuracy"].idxmax()]
    end = frame.iloc[-1]
    return {
        "peak_step": int(peak["step"]),
        "end_step": int(end["step"]),
        "accuracy_start": float(start["accuracy"]),
        "accuracy_peak": float(peak["accuracy"]),
        "accuracy_end": float(end["accuracy"]),
        "silhouette_start": float(start["silhouette"]),
        "silhouette_peak": float(peak["silhouette"]),
        "silhouette_end": float(end["silhouette"]),
        "shift_start": float(start["shift_distance"]),
        "shift_peak": float(peak["shift_distance"]),
        "shift_end": float(end["shift_distance"]),
        "d_accuracy_1": float(peak["accuracy"] - start["accuracy"]),
        "d_silhouette_1": float(peak["silhouette"] - start["silhouette"]),
        "d_shift_1": float(peak["shift_distance"] - start["shift_distance"]),
        "d_accuracy_2": float(end["accuracy"] - peak["accuracy"]),
        "d_silhouette_2": float(end["silhouette"] - peak["silhouette"]),
        "d_shift_2": float(end["shift_distance"] - peak["shift_distance"]),
    }


def _correlations(x: pd.Series, y: pd.Series) -> dict[str, float]:
    """Spearman and Pearson correlation; NaN with fewer than 3 points or a constant input."""
    valid = x.notna() & y.notna()
    x, y = x[valid].to_numpy(float), y[valid].to_numpy(float)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": float("nan"), "pearson": float("nan"), "n": int(len(x))}
    return {
        "spearman": float(spearmanr(x, y).statistic),
        "pearson": float(pearsonr(x, y).statistic),
        "n": int(len(x)),
    }


def sweep_correlations(sweep: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Across splits (one ``phase_summary`` per row): the paper's two correlations.

    ``phase1``: corr(d_silhouette_1, d_accuracy_1), start -> peak (paper: Spearman 0.70);
    ``phase2``: corr(d_shift_2, d_accuracy_2), peak -> end (paper: -0.79). Each gives
    ``spearman``, ``pearson`` and the number of splits ``n`` (NaN below 3 or when constant).
    """
    return {
        "phase1": _correlations(sweep["d_silhouette_1"], sweep["d_accuracy_1"]),
        "phase2": _correlations(sweep["d_shift_2"], sweep["d_accuracy_2"]),
    }


# --------------------------------------------------------------------------- exclusion


def _accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    chunk: int,
) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), chunk):
            x = to_unit_float(images[start : start + chunk]).to(device)
            pred = predict(x).argmax(dim=1).cpu()
            correct += int((pred == labels[start : start + chunk]).sum())
    return correct / len(images)


def _adapt_and_evaluate(
    make_adapter: AdapterFactory,
    module: nn.Module,
    adapt_images: torch.Tensor,
    eval_images: torch.Tensor,
    eval_labels: torch.Tensor,
    steps: int,
    seed: int,
    batch_size: int,
    chunk: int,
    progress: bool,
) -> tuple[float, float]:
    """(accuracy before, after) on the evaluation images of a fresh adapter on ``module``."""
    adapter = make_adapter(copy.deepcopy(module))
    device = module_device(adapter.model)
    before = _accuracy(adapter.predict, eval_images, eval_labels, device, chunk)
    batches = stream(len(adapt_images), steps, seed, batch_size)
    for index in tqdm(batches, total=steps, disable=not progress):
        adapter(to_unit_float(adapt_images[index]).to(device))
    after = _accuracy(adapter.predict, eval_images, eval_labels, device, chunk)
    return before, after


def exclusion_experiment(
    loaded_model: LoadedModel,
    make_adapter: AdapterFactory,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    *,
    top_k: int = 1,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    chunk: int = CHUNK,
    progress: bool = True,
) -> dict[str, Any]:
    """Does entropy minimization still help when every initially correct image is removed?

    The split is cut by a seeded permutation into an adaptation half (first ``n // 2``) and a
    held-out evaluation half. The source model (eval mode, running statistics) classifies the
    adaptation half; images whose label is among its ``top_k`` classes are removed. Two fresh
    adapters (``make_adapter(copy of the source module)``) then run ``steps`` steps each, one on
    the filtered and one on the unfiltered half (seeded stream, replayed as needed), and the
    held-out accuracy is measured before and after with ``adapter.predict`` (batch statistics,
    so the gain is what adaptation adds to test-batch normalization).

    Returns accuracies, gains (``gain_filtered``, ``gain_unfiltered``, fractions) and counts.
    Call it before building any other adapter on ``loaded_model.module``.
    """
    n = len(images)
    if top_k < 1 or top_k > loaded_model.num_classes:
        raise TTABenchError(
            f"top_k must lie in [1, {loaded_model.num_classes}], got {top_k}"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    adapt_idx, eval_idx = order[: n // 2], order[n // 2 :]
    adapt_images, adapt_labels = images[adapt_idx], labels[adapt_idx]
    eval_images, eval_labels = images[eval_idx], labels[eval_idx]
    source_logits = source_predictions(loaded_model, adapt_images, chunk)
    top = source_logits.topk(top_k, dim=1).indices
    correct = (top == adapt_labels[:, None]).any(dim=1)
    kept = adapt_images[~correct]
    if len(kept) < batch_size:
        raise TTABenchError(
            f"only {len(kept)} adaptation images remain after removing the {int(correct.sum())} "
            f"the source model gets right (top-{top_k}); need at least {batch_size}: "
            "use a harder or larger split"
        )
    source_eval = source_predictions(loaded_model, eval_images, chunk).argmax(dim=1)
    module = loaded_model.module
    run = dict(
        eval_images=eval_images,
        eval_labels=eval_labels,
        steps=steps,
        seed=seed,
        batch_size=batch_size,
        chunk=chunk,
        progress=progress,
    )
    before, after_filtered = _adapt_and_evaluate(make_adapter, module, kept, **run)
    _, after_unfiltered = _adapt_and_evaluate(make_adapter, module, adapt_images, **run)
    return {
        "top_k": top_k,
        "steps": steps,
        "adapt_images": int(len(adapt_images)),
        "removed": int(correct.sum()),
        "kept": int(len(kept)),
        "eval_images": int(len(eval_images)),
        "source_accuracy": float((source_eval == eval_labels).double().mean()),
        "accuracy_before": before,
        "accuracy_after_filtered": after_filtered,
        "accuracy_after_unfiltered": after_unfiltered,
        "gain_filtered": after_filtered - before,
        "gain_unfiltered": after_unfiltered - before,
    }


__all__ = [
    "BATCH_SIZE",
    "CHUNK",
    "COLUMNS",
    "analyze_trajectory",
    "capture_inputs",
    "checkpoints",
    "classifier_name",
    "exclusion_experiment",
    "phase_summary",
    "probe_indices",
    "reference_class_means",
    "snapshot",
    "source_predictions",
    "stack_dataset",
    "stream",
    "sweep_correlations",
]
