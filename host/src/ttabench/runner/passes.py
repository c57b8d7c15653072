"""Forward passes over a split: the frozen source model, and the batch-statistics model.

One pass of the frozen source model (eval mode, running statistics) per split yields the
logits (and penultimate features when asked) that feed the ``source`` target and every static
estimator. The ``bn`` target uses the same weights normalizing with test-batch statistics, the
model Weighted Flips' first snapshot sees.

In a cell both run from one read of each image (``split_passes``): over the stream's first
epoch, in batches of the stream's batch size, which is the order the bn model needs; the frozen
model's outputs do not depend on order, so they are put back in dataset order afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ttabench.api import Outputs, to_unit_float
from ttabench.errors import TTABenchError
from ttabench.runner.decoded_cache import StreamReader
from ttabench.runner.stream import batches_of

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass
class SplitPass:
    """The source pass over one split: outputs, labels kept apart."""

    outputs: Outputs
    labels: torch.Tensor


def restrict(logits: torch.Tensor, class_subset: list[int] | None) -> torch.Tensor:
    """Keep only the logits of ``class_subset`` (ImageNet-R/A's 200 classes), else all."""
    return logits if class_subset is None else logits[:, class_subset]


def integer_labels(labels: object, what: str) -> torch.Tensor:
    """Labels as int64; a label that is not a whole number is an error (never truncated)."""
    tensor = torch.as_tensor(labels)
    if tensor.is_floating_point() and not torch.equal(tensor, tensor.round()):
        bad = tensor[tensor != tensor.round()][0].item()
        raise TTABenchError(f"{what}: label {bad!r} is not a whole number; labels must be "
                            "class indices")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TTABenchError(f"{what}: labels must be class indices, got {tensor.dtype}")
    return tensor.long()


def check_label_range(labels: torch.Tensor, num_classes: int, what: str,
                      label_sets: list[tuple[int, ...]] | None = None) -> None:
    """Refuse labels outside the suite's label space: they would count as wrong predictions for
    every model (an all-zero accuracy), silently.

    The label space is ``[0, num_classes)``, or ``[0, len(label_sets))`` for a suite with
    ``label_sets``; ``-1`` ("no class of the model", see ``ttabench.api.Suite.label_sets``) is
    allowed and never correct.
    """
    size = num_classes if label_sets is None else len(label_sets)
    bad = labels[(labels < -1) | (labels >= size)]
    if len(bad):
        raise TTABenchError(
            f"{what}: label {bad[0].item()} is outside the label range 0..{size - 1} (or -1 "
            "for an image of no class of the model); the labels do not fit the suite's class set"
        )


def check_finite(logits: torch.Tensor, what: str) -> None:
    """One-line error when a model produced NaN or infinite logits."""
    if not torch.isfinite(logits).all():
        raise TTABenchError(f"{what} produced NaN or infinite logits; the model or input is broken")


class FeatureHook:
    """Captures the input of a module (the classifier head) on every forward call
    (``features``: one tensor per call, in call order)."""

    def __init__(self, model: nn.Module, classifier: str | None) -> None:
        self.features: list[torch.Tensor] = []
        self.handle = None
        if classifier is not None:
            module = model.get_submodule(classifier)
            self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.features.append(inputs[0].detach().flatten(1).float().cpu())

    def close(self) -> torch.Tensor | None:
        if self.handle is not None:
            self.handle.remove()
        return torch.cat(self.features) if self.features else None


def step_features(calls: list[torch.Tensor], call: int | None, rows: int,
                  adapter: str) -> torch.Tensor | None:
    """The penultimate features of a step's ``rows`` logits, from the classifier head's
    ``calls`` during the step, as the adapter declares (``Adapter.feature_call``): call
    ``call``'s last ``rows`` rows; for ``call`` None, the one call's when the step made exactly
    one, else None."""
    if call is None:
        return calls[0][-rows:] if len(calls) == 1 and len(calls[0]) >= rows else None
    if call >= len(calls) or len(calls[call]) < rows:
        made = ", ".join(str(len(c)) for c in calls) or "none"
        raise TTABenchError(
            f"adapter {adapter!r} declares feature_call={call}, but its step on {rows} images "
            f"called the classifier head {len(calls)} time(s) (rows per call: {made})")
    return calls[call][-rows:]


def _forward(model: nn.Module, x: torch.Tensor, what: str) -> torch.Tensor:
    """``model(x)``; a failure inside the model (most often images of a size it cannot take)
    is a one-line error naming the input shape."""
    try:
        return model(x)
    except RuntimeError as exc:
        raise TTABenchError(
            f"{what} failed on images of shape {tuple(x.shape[1:])}: "
            f"{' '.join(str(exc).split())[:300]}; check the input size the model expects"
        ) from exc


@torch.no_grad()
def source_pass(
    model: nn.Module,
    dataset: Dataset,
    device: torch.device,
    *,
    classifier: str | None = None,
    want_features: bool = False,
    class_subset: list[int] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    what: str = "the source model",
) -> SplitPass:
    """Frozen model in eval mode over a split (the source-validation split) in dataset order."""
    model.eval()
    hook = FeatureHook(model, classifier if want_features else None)
    logits, labels = [], []
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for x, y in loader:
            out = restrict(_forward(model, to_unit_float(x).to(device), what), class_subset)
            out = out.float().cpu()
            logits.append(out)
            labels.append(integer_labels(y, f"the data given to {what}"))
    finally:
        features = hook.close()
    if not logits:
        raise TTABenchError("the split is empty")
    all_logits = torch.cat(logits)
    check_finite(all_logits, what)
    return SplitPass(
        outputs=Outputs(logits=all_logits, labels=None, features=features),
        labels=torch.cat(labels),
    )


@dataclass
class SplitPasses:
    """The source and bn passes over one split, both in dataset order (labels kept apart).

    ``bn`` is ``source`` itself when the model has no batch normalization (the two models are
    the same then).
    """

    source: Outputs
    bn: Outputs
    labels: torch.Tensor


@torch.no_grad()
def split_passes(
    model: nn.Module,
    reader: StreamReader,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    classifier: str | None = None,
    want_features: bool = False,
    class_subset: list[int] | None = None,
    what: str = "the source model",
) -> SplitPasses:
    """The frozen model and its batch-statistics copy on every batch of
    ``batches_of(order, batch_size)``, each image read once (through ``reader``, which keeps
    what its cache allows).

    Row ``r`` of the pass is image ``order[r]``; ``out[argsort(order)]`` puts it back in
    dataset order.
    """
    model.eval()
    bn_model = batch_statistics_copy(model) if has_batch_norm(model) else None
    hooks = [FeatureHook(m, classifier if want_features else None)
             for m in (model, bn_model) if m is not None]
    chunks = batches_of(order, batch_size)
    logits: list[list[torch.Tensor]] = [[] for _ in hooks]
    labels = []
    try:
        for x, y in reader.fill(chunks):
            labels.append(integer_labels(y, f"the data given to {what}"))
            x = to_unit_float(x).to(device, non_blocking=True)
            for part, (net, name) in zip(logits, ((model, what), (bn_model, "the batch-statistics model"))):
                out = restrict(_forward(net, x, name), class_subset).float().cpu()
                check_finite(out, name)
                part.append(out)
    finally:
        features = [hook.close() for hook in hooks]
    if not labels:
        raise TTABenchError("the split is empty")
    back = torch.argsort(torch.cat(chunks))
    outputs = [Outputs(logits=torch.cat(part)[back], labels=None,
                       features=None if feats is None else feats[back])
               for part, feats in zip(logits, features)]
    return SplitPasses(source=outputs[0], bn=outputs[-1], labels=torch.cat(labels)[back])


def batch_statistics_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose BatchNorm layers always normalize with the current batch's
    statistics (running statistics dropped), in eval mode too."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, NORM_TYPES):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
    return copied.eval()


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, NORM_TYPES) for m in model.modules())


def correct(logits: torch.Tensor, labels: torch.Tensor,
            label_sets: list[tuple[int, ...]] | None = None) -> torch.Tensor:
    """Whether each top-1 prediction is right (bool, on the CPU): ``argmax == label``, or with
    ``label_sets`` ``argmax in label_sets[label]``; a label of -1 is never right."""
    predicted = logits.argmax(1).cpu()
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if label_sets is None:
        return (predicted == labels) & (labels >= 0)
    table = torch.zeros(len(label_sets) + 1, logits.shape[1], dtype=torch.bool)
    for row, members in enumerate(label_sets):
        table[row, list(members)] = True
    rows = torch.where(labels >= 0, labels, torch.full_like(labels, len(label_sets)))
    return table[rows, predicted]


def accuracy(logits: torch.Tensor, labels: torch.Tensor,
             label_sets: list[tuple[int, ...]] | None = None) -> float:
    """Top-1 accuracy as a fraction (see ``correct``)."""
    return float(correct(logits, labels, label_sets).float().mean())
