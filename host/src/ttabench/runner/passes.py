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
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ttabench.api import Adapter, Outputs, to_unit_float
from ttabench.errors import TTABenchError
from ttabench.runner.compute import HostCopies, batch_to_device
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
    """Collects the input of a module (the classifier head) on every forward call, flattened,
    into ``copies`` (``HostCopies``: no wait for the device per call); ``rows`` counts them."""

    def __init__(self, model: nn.Module, classifier: str | None,
                 copies: HostCopies | None = None) -> None:
        self.copies = copies if copies is not None else HostCopies()
        self.rows = 0
        self.handle = None
        if classifier is not None:
            module = model.get_submodule(classifier)
            self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.copies.add(inputs[0].flatten(1))
        self.rows += len(inputs[0])

    def remove(self) -> None:
        """Stop collecting."""
        if self.handle is not None:
            self.handle.remove()

    def close(self) -> torch.Tensor | None:
        """Stop collecting; every feature row collected (None when there was none)."""
        self.remove()
        return self.copies.gather()


class StepFeatures(FeatureHook):
    """During one adaptation step on ``batch`` images, the penultimate features of the logits
    the step returns, as the adapter declares (``Adapter.feature_call``, read at each call of
    the head, so a wrapper may set it within the step): the last ``batch`` rows of the declared
    call into ``copies``; with None, of every call, and the step gives its features only when
    it made exactly one (``usable``)."""

    def __init__(self, adapter: Adapter, classifier: str | None, copies: HostCopies | None,
                 batch: int) -> None:
        super().__init__(adapter.model, classifier, copies)
        self.adapter, self.batch, self.calls = adapter, batch, 0

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        wanted = self.adapter.feature_call
        if (wanted is None or wanted == self.calls) and len(inputs[0]) >= self.batch:
            self.copies.add(inputs[0][-self.batch:].flatten(1))
            self.rows += self.batch
        self.calls += 1

    def usable(self) -> bool:
        """Whether the step gave its features; a declared call it never made is an error."""
        wanted = self.adapter.feature_call
        if wanted is None:
            return self.calls == 1 and self.rows == self.batch
        if self.rows != self.batch:
            raise TTABenchError(
                f"adapter {self.adapter.name!r} declares feature_call={wanted}, but its step on "
                f"{self.batch} images called the classifier head {self.calls} time(s) without a "
                f"call {wanted} of {self.batch} rows or more")
        return True


def _forward(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
             what: str) -> torch.Tensor:
    """``model(x)``; a failure inside the model (most often images of a size it cannot take)
    is a one-line error naming the input shape."""
    try:
        return model(x)
    except torch.cuda.OutOfMemoryError:
        raise  # the batch, not the input size (``describe_error`` names the fix)
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
    channels_last: bool = False,
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
    nets = [(model, model, what)]
    if bn_model is not None:
        nets.append((bn_model, bn_model, "the batch-statistics model"))
    outputs, labels = model_passes(nets, reader, order, batch_size, device,
                                   channels_last=channels_last,
                                   classifier=classifier if want_features else None,
                                   class_subset=class_subset, what=what)
    return SplitPasses(source=outputs[0], bn=outputs[-1], labels=labels)


def model_passes(
    nets: list[tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module, str]],
    reader: StreamReader,
    order: torch.Tensor,
    batch_size: int,
    device: torch.device,
    *,
    channels_last: bool,
    classifier: str | None,
    class_subset: list[int] | None,
    what: str,
) -> tuple[list[Outputs], torch.Tensor]:
    """Each ``(forward, module, name)`` of ``nets`` on every batch of
    ``batches_of(order, batch_size)`` (``forward``'s logits; features: the input of
    ``module``'s ``classifier``, when given), each image read once; outputs and labels in
    dataset order (``out[argsort(order)]``)."""
    hooks = [FeatureHook(module, classifier) for _, module, _ in nets]
    chunks = batches_of(order, batch_size)
    logits = [HostCopies() for _ in nets]  # no batch waits for the device
    labels = []
    try:
        for x, y in reader.fill(chunks):
            labels.append(integer_labels(y, f"the data given to {what}"))
            x = batch_to_device(x, device, channels_last)
            for part, (forward, _, name) in zip(logits, nets):
                part.add(restrict(_forward(forward, x, name), class_subset))
    finally:
        features = [hook.close() for hook in hooks]
    if not labels:
        raise TTABenchError("the split is empty")
    back = torch.argsort(torch.cat(chunks))
    outputs = []
    for part, feats, (_, _, name) in zip(logits, features, nets):
        out = part.gather()
        assert out is not None
        check_finite(out, name)
        outputs.append(Outputs(logits=out[back], labels=None,
                               features=None if feats is None else feats[back]))
    return outputs, torch.cat(labels)[back]


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
