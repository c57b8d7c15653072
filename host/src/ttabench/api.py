"""The contracts between the ttabench host and its plugins.

Four kinds of plugin register through entry points (see ``ttabench.registry``):

- ``ttabench.suites``: a factory ``(data_dir: Path | None, **options) -> Suite``;
- ``ttabench.models``: a factory ``(arg: str | None, *, cache_dir: Path, num_classes: int | None)
  -> LoadedModel`` (a model spec ``"timm:resnet50"`` calls the ``timm`` source with ``"resnet50"``);
- ``ttabench.adapters``: an ``Adapter`` subclass, constructed as ``cls(model, **params)``;
- ``ttabench.estimators``: an ``Estimator`` subclass, constructed as ``cls(**params)``.

Images travel as ``uint8`` tensors of shape (N, 3, H, W). Models take ``float32`` in [0, 1]
(``to_unit_float``) and own their normalization. Accuracies are fractions in [0, 1] everywhere
in code; reports show percentage points.

Data flow of one cell (see ``ttabench.runner.execute``):

1. one forward pass of the frozen source model (eval mode, running statistics) over the split
   gives ``Outputs`` that feed the ``source`` target and every ``StaticEstimator``;
2. one pass with test-batch normalization statistics gives the ``bn`` target;
3. one adaptation trajectory (seeded stream; probe = the first ``probe_size`` images of the
   stream, or of a separate shuffled pass, see ``TrajectoryPlan.probe_draw``) feeds every
   ``TrajectoryEstimator`` at the checkpoints it asks for, and gives the ``adapted`` target
   (online accuracy of the adapted model). Adaptation stops at the last step needed.

A cell's stream (``ttabench.runner.streams``) is one split with the adapter reset before it,
or several splits in a row (continual, gradual, mixed; optionally class-correlated); every
estimator is also scored per window of ``W`` steps against the online accuracy of those steps
(``TrajectoryEstimator.window_results``). An estimator whose constructor takes ``window`` gets
the stream's ``W`` unless the configuration sets it (another value is refused).

Labels are logit indices (of the restricted logits when ``Suite.class_subset`` is set), except
for a suite with ``label_sets``: then label ``y`` is correct for a prediction ``p`` iff ``p`` is
in ``label_sets[y]`` (ObjectNet's and ImageNet-D's many-to-one class maps, ImageNet-Hard's
multi-label images). A label of -1 is never correct (a dataset without the model's classes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from collections.abc import Callable, Hashable, Iterable, Sized
from copy import deepcopy
from typing import Any, ClassVar, Literal, TypeVar, cast

import torch
from torch import nn
from torch.utils.data import Dataset

from ttabench.version import installed_version  # the plugin reads its own version with it
from ttabench.adaptation.family import FAMILY_RULE, check_family, dataset_family
from ttabench.adaptation.modes import eval_mode
from ttabench.adaptation.optimizer import OptimizerSetting
from ttabench.adaptation.rng import adapter_seed, seeded_generator
from ttabench.errors import TTABenchError

Role = Literal["eval", "calibration"]
Target = Literal["source", "bn", "adapted"]
TARGETS: tuple[Target, ...] = ("source", "bn", "adapted")
_Derived = TypeVar("_Derived")


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images in [0, 255] to float32 in [0, 1]; float input is returned as float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True)
class SplitSpec:
    """One split of a suite.

    ``dataset`` groups splits for the per-dataset average (the paper's rule: splits of one
    dataset are averaged first, then every dataset weighs the same), e.g. ``"fog"`` for
    ``"fog-5"``. ``role`` says whether the split is scored (``eval``) or used to fit
    score-to-accuracy maps (``calibration``).
    """

    name: str
    dataset: str
    severity: int | None
    role: Role


class Suite(ABC):
    """A set of labelled target splits, plus an optional clean labelled validation split."""

    name: ClassVar[str]
    num_classes: int
    #: Logit indices the model's outputs are restricted to (ImageNet-R/A's 200 classes), or None.
    class_subset: list[int] | None = None
    #: When labels are not logit indices: label ``y`` is correct for a prediction ``p`` iff
    #: ``p in label_sets[y]``; None: iff ``p == y``. Either way a label of -1 is never correct.
    label_sets: list[tuple[int, ...]] | None = None
    #: Whether reading a split decodes files (image folders, ImageNet-C, CCC): such a split
    #: gets DataLoader worker processes by default (see ``ttabench.runner.resources``).
    streams_from_disk: bool = False
    #: Options that say where data lives (a folder or file path): recorded beside a cell's key,
    #: never hashed into it, so moving the data, or mounting it elsewhere on another node of a
    #: job array, keeps every key. ``record()`` holds the identity of what they point at.
    location_options: ClassVar[tuple[str, ...]] = ()

    @property
    def skipped_files(self) -> dict[str, int]:
        """Unreadable files left out of each split indexed so far (split name -> count), the
        ``data.skipped_files`` of each cell; a suite that reads no files leaves none out.
        Not part of ``record()``: it changes as splits are read."""
        return {}

    @abstractmethod
    def splits(self) -> list[SplitSpec]:
        """Every split in the suite's fixed, recorded order."""

    @abstractmethod
    def dataset(self, split: SplitSpec) -> Dataset[Any]:
        """Items are ``(uint8 tensor (3, H, W), int label)``; may stream from disk."""

    def source_val(self) -> Dataset[Any] | None:
        """A clean labelled validation set from the training distribution, or None."""
        return None

    @abstractmethod
    def record(self) -> dict[str, Any]:
        """Protocol facts hashed into every cell's key: the data's identity (folder and file
        names relative to the data folder, sizes, digests), split order, preprocessing...;
        never an absolute path (that goes in ``location()``)."""

    def location(self) -> dict[str, Any]:
        """Where this machine reads the data from (absolute paths): recorded beside each
        cell's key, not in it."""
        return {}

    def size(self, split: SplitSpec) -> int:
        """Images in a split, for planning (``ttabench run --dry-run``); folder suites count
        files without reading them (unreadable files are left out only when indexed)."""
        return len(cast(Sized, self.dataset(split)))


# --------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    """A ready-to-run classifier and the facts a cell records about it.

    ``module`` maps float images in [0, 1] of shape (N, 3, H, W) to logits (N, num_classes)
    and applies its own normalization (``preprocessing`` records the constants).
    ``classifier`` names the final ``nn.Linear`` whose input is the penultimate embedding.
    ``class_names``: the name of each output index, when the model records them (a labelled
    folder's class folders may use them, ``ttabench.suites.labelled_folder``); not in any key.
    """

    module: nn.Module
    num_classes: int
    model_id: str
    weights_hash: str
    preprocessing: dict[str, Any] = field(default_factory=dict)
    classifier: str | None = None
    class_names: tuple[str, ...] | None = None


# --------------------------------------------------------------------------- adapters


class Adapter(nn.Module, ABC):
    """Test-time adaptation of a model.

    Calling the adapter on a batch performs one adaptation step and returns the logits of that
    forward pass (the online predictions). ``predict`` evaluates the current weights without
    updating anything (for probe snapshots). ``reset`` restores the pretrained state, model and
    optimizer.
    """

    name: ClassVar[str]
    #: The keyword argument through which the host hands the adapter labelled clean source
    #: data (e.g. EATA's Fisher information), or None when it takes none. The host passes an
    #: iterable of ``(uint8 images, labels)`` batches: ``source_data_samples`` images drawn
    #: (seeded) from the suite's source-validation split, in batches of the run's batch size;
    #: a suite without that split is refused before any work.
    source_data_param: ClassVar[str | None] = None
    source_data_samples: ClassVar[int] = 0
    #: The labelled source-validation outputs the ``adapted`` view's static estimators compare
    #: with (``ttabench.runner.views``): what this adapter's model gives on clean data before it
    #: adapts, in the run's batches. ``"predict"`` (the default, right for any adapter): a
    #: fresh adapter's own ``predict`` over source val, one pass per run and process;
    #: ``"bn"``: the batch-statistics model's (an adapter that normalizes with test-batch
    #: statistics from its first step); ``"source"``: the frozen eval-mode model's (one that
    #: starts from the running statistics). These two spare the pass where they are the same
    #: (the conformance kit checks that they are).
    source_val_reference: ClassVar[Literal["bn", "source", "predict"]] = "predict"
    #: Which forward pass of a step gives the penultimate features of the logits the step
    #: returns (the ``adapted`` view's features): the index (0: the first) of the call of
    #: ``self.model``'s classifier head during the step; the step's logits belong to that
    #: call's last ``len(x)`` rows (all of them, unless the call ran on the batch after
    #: earlier images, as a sliding window does). None: a step that calls the head once gives
    #: that call's; any other step gives none. Read after each step, so a wrapper may set it
    #: per step.
    feature_call: int | None = None

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @abstractmethod
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One adaptation step on float images in [0, 1]; returns that pass's logits."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the current model without adapting (normalization as the adapter sets it)."""
        logits: torch.Tensor = self.model(x)
        return logits

    @abstractmethod
    def reset(self) -> None:
        """Restore the pretrained state of the model and the optimizer."""

    def params(self) -> dict[str, Any]:
        """Hyperparameters as actually used (resolved defaults), recorded in every cell."""
        return {}

    def counters(self) -> dict[str, Any]:
        """Running counters a user can read (samples kept per filter, steps since reset...).
        ``resets``, when present, counts the adapter's resets so far: the host records the
        steps after which it grew (``ttabench.records.WindowRecord.reset_steps``)."""
        return {}


class ResettableAdapter(Adapter):
    """The base of the adapters whose state changes: its snapshot, the reset, the counters.

    ``reset`` restores every child module's state saved by ``save_initial_state`` (the model,
    and a teacher, an anchor or a source copy an adapter keeps beside it), drops the optimizer
    (``optimizer_for`` builds a fresh one, its state empty, at the next step), re-seeds the
    private generator, and calls ``forget`` for the method's own state (memory banks, running
    means). The number of classes, and with it the dataset family of the authors'
    hyper-parameters, is resolved from the first batch's logits unless given. Subclasses call
    ``save_initial_state()`` at the end of ``__init__``.
    """

    def __init__(self, model: nn.Module, *, num_classes: int | None = None,
                 family: str | None = None, seed: int | None = None) -> None:
        super().__init__(model)
        self.given_family = check_family(family)
        self.num_classes: int | None = None
        self.family: str | None = self.given_family
        if num_classes is not None:
            self.resolve_classes(num_classes)
        self.seed = adapter_seed(seed)
        self.generator = seeded_generator(self.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps = 0
        self.steps_since_reset = 0
        self.resets = 0
        self._initial: dict[str, dict[str, torch.Tensor]] = {}

    # -- classes and family
    def resolve_classes(self, width: int) -> None:
        """Fix the number of classes (and the family) from the first logits' width; later
        batches must have the same width."""
        if self.num_classes is None:
            if isinstance(width, bool) or not isinstance(width, int) or width < 2:
                raise TTABenchError(f"{self.name} needs a model with at least 2 classes, got "
                                    f"{width!r}")
            self.num_classes = width
            self.family = dataset_family(width, self.given_family)
        elif width != self.num_classes:
            raise TTABenchError(f"{self.name}: the model outputs {width} classes, expected "
                                f"{self.num_classes}")

    def per_family(self, imagenet: str, cifar: str) -> str | None:
        """``imagenet`` or ``cifar`` by the resolved family (None before it is known)."""
        if self.family is None:
            return None
        return imagenet if self.family == "imagenet" else cifar

    def family_record(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "family": self.family,
                "family_rule": "given" if self.given_family else FAMILY_RULE}

    # -- optimizer and state
    def optimizer_for(self, setting: OptimizerSetting,
                      params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The current optimizer; a fresh one from ``setting`` after construction or reset."""
        if self.optimizer is None:
            self.optimizer = setting.build(params)
        return self.optimizer

    def save_initial_state(self) -> None:
        """Snapshot the state of every child module, restored by ``reset``."""
        self._initial = {name: deepcopy(child.state_dict())
                         for name, child in self.named_children()}

    def restore_initial_state(self) -> None:
        for name, child in self.named_children():
            child.load_state_dict(self._initial[name])

    def reset(self) -> None:
        """Restore the modules, drop the optimizer state, re-seed, forget the method's state."""
        self.restore_initial_state()
        self.optimizer = None
        self.generator.manual_seed(self.seed)
        self.forget()
        self.steps_since_reset = 0
        self.resets += 1

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``self.model``'s logits (the model whose outputs the adapter returns: the adapted
        model, or a mean teacher), every layer in eval mode for the call, nothing updated."""
        with eval_mode(self.model):
            logits: torch.Tensor = self.model(x)
        return logits

    def forget(self) -> None:
        """Clear the method's own running state (default: none)."""

    def count_step(self) -> None:
        self.steps += 1
        self.steps_since_reset += 1

    def counters(self) -> dict[str, Any]:
        return {"steps": self.steps, "steps_since_reset": self.steps_since_reset,
                "resets": self.resets}


# --------------------------------------------------------------------------- estimators


@dataclass
class Outputs:
    """One model's outputs on a whole split, in dataset order.

    ``labels`` is None for target data handed to estimators (they never see target labels);
    ``features`` holds penultimate embeddings when an estimator asked for them.
    ``frozen_logits``: the frozen eval-mode model's logits on the same samples in the same
    row order (the host sets them on target outputs of every view; for the ``source`` view
    they are ``logits`` themselves).

    Outputs are not modified once made, so a quantity computed from one object holds for its
    life: ``derive`` computes it once per object (``derived`` keeps it). The host makes a
    view's target outputs once per (split, view) and each view's source-val outputs once per
    process, so what estimators derive through ``derive`` is shared by every estimator of
    that view (e.g. COT's and COTT's transport problem) and, on source val, by every cell.
    """

    logits: torch.Tensor
    labels: torch.Tensor | None = None
    features: torch.Tensor | None = None
    frozen_logits: torch.Tensor | None = None
    derived: dict[Hashable, Any] = field(default_factory=dict, init=False, repr=False,
                                         compare=False)  # fresh in a dataclasses.replace copy

    def derive(self, key: Hashable, compute: Callable[[], _Derived]) -> _Derived:
        """``compute()`` the first time ``key`` is asked of this object, the kept value after.
        ``key`` names the quantity and every parameter it depends on."""
        if key not in self.derived:
            self.derived[key] = compute()
        return cast(_Derived, self.derived[key])


@dataclass
class EstimateResult:
    """What an estimator returns for one cell.

    ``value``: for ``kind == "direct"`` an accuracy in [0, 1]; for ``kind == "score"`` the raw
    score that a fitted map turns into an accuracy. ``estimate``: an accuracy in [0, 1] when
    the estimator can give one itself (always for direct ones; for score ones when a
    calibration was supplied). ``scores``: further named scores a map can be fitted on (e.g.
    the flip count at every checkpoint). ``extras``: JSON-serialisable details.
    """

    value: float
    estimate: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class Estimator(ABC):
    """A label-free accuracy estimator.

    Class attributes declare what it is: ``target`` is the accuracy it estimates (``source``,
    ``bn`` or ``adapted``), ``kind`` is ``"direct"`` or ``"score"`` (score + fitted map), and
    ``needs`` lists what it needs from the host: ``"source_val"`` (labelled clean outputs),
    ``"features"`` (penultimate embeddings).
    """

    name: ClassVar[str]
    target: ClassVar[Target] = "source"
    kind: ClassVar[Literal["direct", "score"]] = "direct"
    needs: ClassVar[frozenset[str]] = frozenset()
    #: The adapter a run uses when neither ``--adapter`` nor ``[run] adapter`` names one (the
    #: first estimator that declares one decides); None: no preference (``source``).
    default_adapter: ClassVar[str | None] = None
    #: The score-to-accuracy map this estimator applies itself (``ttabench run --dry-run``
    #: shows its id, input, target and what it was fitted for); None: it applies none.
    calibration: Calibration | None = None

    @property
    def score_input(self) -> str | None:
        """The score a fitted calibration of this estimator maps to an accuracy (``"value"`` or
        a key of ``EstimateResult.scores``), recorded in every cell; None: none is fitted;
        ``STACK_INPUT``: every named score is a feature of one monotone stack the leaderboard
        fits (``ttabench.scoring.stack``, entry ``<name>[stack]``)."""
        return None

    def params(self) -> dict[str, Any]:
        """Parameters as used, recorded in every cell (including a calibration id if any)."""
        return {}

    def check_calibration(self, run: dict[str, Any]) -> None:
        """Raise TTABenchError unless this estimator turns its ``value`` into an accuracy by
        itself for a run with these facts (``model``: the model id, ``num_classes``,
        ``precision``: ``fp32`` or ``bf16``).

        A direct estimator always does. A score estimator does when it holds a calibration
        fitted for such a run: this default checks the one it holds (``Calibration.check``)
        and says a score estimator without one has none. ``ttabench run`` asks before any work
        when a calibration is held, ``ttabench estimate`` always.
        """
        if self.calibration is not None:
            self.calibration.check(run)
        elif self.kind == "score":
            raise TTABenchError(
                f"{self.name} gives a score, not an accuracy, and has no calibration to map it"
            )


class StaticEstimator(Estimator):
    """Needs only one model's outputs on the target split (and on source val).

    The host calls ``estimate`` once per model view (``source``: frozen model; ``bn``: batch
    statistics; ``adapted``: the adapter's online outputs), each time with that view's outputs,
    so the estimate is of the accuracy of the model that produced them. ``view`` names one view
    instead for an estimator that compares models (its result is then scored in every
    target's table, like a trajectory estimator's).
    """

    #: The one view this estimator is computed in (its result is scored in every target's
    #: table), or None: computed in every view, each result scored in that view's table.
    view: ClassVar[Target | None] = None

    @abstractmethod
    def estimate(self, target: Outputs, source_val: Outputs | None) -> EstimateResult:
        """Estimate from the target outputs (labels hidden) and the labelled source-val outputs."""


@dataclass(frozen=True)
class Peers:
    """The other models of a pool, each seen in the same view as the model being estimated.

    ``model_ids[m]`` names peer m. ``target[m]``: its outputs on the same target samples in
    the same row order as the estimated model's target outputs (labels hidden); rows align
    when every model ran the same split, view and seed (in the ``adapted`` view, the same
    stream). ``source_val[m]``: its labelled source-validation outputs in the same view, or
    None when no estimator asked for them (``"source_val"`` in ``needs``).
    """

    model_ids: tuple[str, ...]
    target: tuple[Outputs, ...]
    source_val: tuple[Outputs | None, ...]

    def __post_init__(self) -> None:
        if not len(self.model_ids) == len(self.target) == len(self.source_val):
            raise TTABenchError(
                f"peers: {len(self.model_ids)} ids, {len(self.target)} target outputs and "
                f"{len(self.source_val)} source-val outputs")


class PoolEstimator(Estimator):
    """Compares the cell's model with the other models of a pool (GDE, ALine, TTALine).

    The host calls ``estimate`` once per view in ``views``, each time with the cell's model's
    outputs of that view and every peer's outputs of the same view (an estimator of the ``bn``
    target reads the bn-view outputs of every model it uses), and scores the result in that
    view's table. ``min_peers``: the fewest peers it works with (a run with fewer models is
    refused before any work; ``estimate`` raises TTABenchError when handed fewer). A run of
    several models (``--model a,b,c`` or a pool) computes it once every model's cells are
    done, from the outputs each cell kept in the run's logit cache
    (``ttabench.runner.rescore``): a cell's peers are the other models' cells of the same
    split, stream, seed and adapter. It is in no cell's key, so adding one to a finished run
    (``ttabench leaderboard --rescore -e NAME``) runs no model.
    """

    #: The views this estimator is computed in, each result scored in that view's table.
    views: ClassVar[tuple[Target, ...]] = TARGETS
    min_peers: ClassVar[int] = 1

    @abstractmethod
    def estimate(self, target: Outputs, source_val: Outputs | None,
                 peers: Peers) -> EstimateResult:
        """Estimate the accuracy of the model of ``target`` (labels hidden) from its outputs,
        its labelled source-val outputs and its peers' outputs of the same view."""


@dataclass(frozen=True)
class TrajectoryPlan:
    """What a trajectory estimator asks of the adaptation run.

    ``checkpoints``: steps at which the probe is snapshotted; 0 means before the first update,
    k means after k updates. ``probe_size``: images taken for the probe. ``chunk``: probe images
    per no-grad forward pass (batch statistics depend on it). ``probe_draw`` (see
    ``ttabench.runner.stream``): ``"stream"`` takes the probe from the start of the adaptation
    stream; ``"reference"`` from a separate shuffled pass drawn before the stream's epochs, as
    the reference implementation of Weighted Flips does.
    """

    probe_size: int
    checkpoints: tuple[int, ...]
    chunk: int = 100
    probe_draw: str = "stream"


@dataclass
class TrajectoryContext:
    """Facts the host hands a trajectory estimator when it computes.

    ``probe_source_logits``: the frozen source model's eval-mode logits (running statistics) on
    the probe images (taken from the static pass, no extra forward). ``probe_size``: the
    number of probe images actually used (smaller than asked when the split is small).
    ``model_id``: the model's id, so a calibration fitted for another model can be refused.
    ``source_val``: the labelled source-validation outputs, for estimators that need them.
    ``num_classes`` is the width of the logits the estimator sees (200 on ImageNet-R's subset);
    ``model_num_classes`` the model's own output count (1000 there). ``precision``: the
    cell's compute precision (``fp32`` or ``bf16``), so a calibration fitted under another
    one can be refused. ``views``: the static views' outputs on the whole split, the very
    objects the static estimators were given (``ttabench.runner.views``): view name
    (``source``, ``bn``) -> (target outputs, labels withheld, with ``frozen_logits``; that
    view's labelled source-val outputs or None), so an estimator can combine the trajectory
    with static scores without another forward pass (what ``derive`` computed on them is
    shared); empty when the host passes none.
    """

    num_classes: int
    steps_run: int
    probe_size: int
    probe_source_logits: torch.Tensor
    dataset_size: int
    model_id: str | None = None
    source_val: Outputs | None = None
    model_num_classes: int | None = None
    precision: str = "fp32"
    views: dict[str, tuple[Outputs, Outputs | None]] = field(default_factory=dict)


class TrajectoryEstimator(Estimator):
    """Observes one adaptation trajectory: probe snapshots and, optionally, every step."""

    #: What the host does with a split smaller than ``plan().probe_size``: ``"error"`` refuses
    #: it before any work; ``"rescale"`` runs with the smaller probe (the estimator rescales
    #: its scores itself). An estimator whose constructor takes ``small_probe`` lets the user
    #: choose (``--set estimator.NAME.small_probe=rescale``).
    small_probe: Literal["error", "rescale"] = "error"

    @abstractmethod
    def plan(self) -> TrajectoryPlan:
        """The probe size and the checkpoints this estimator needs."""

    @abstractmethod
    def on_snapshot(self, step: int, probe_logits: torch.Tensor) -> None:
        """Receive the adapter's ``predict`` logits on the probe at a checkpoint."""

    def before_step(self, step: int, x: torch.Tensor, adapter: Adapter,
                    class_subset: list[int] | None) -> None:
        """Called before adaptation step ``step`` (1-based) updates the model on batch ``x``;
        ``class_subset``: the suite's classes (restrict ``adapter.predict`` logits to them)."""

    def on_step(self, step: int, x: torch.Tensor, logits: torch.Tensor, adapter: Adapter) -> None:
        """Called after adaptation step ``step`` (1-based) with the batch and its logits."""

    @abstractmethod
    def compute(self, context: TrajectoryContext) -> EstimateResult:
        """The estimate once the trajectory has reached the last checkpoint."""

    def window_results(self, window: int) -> list[EstimateResult] | None:
        """Per-window estimates of the online accuracy, asked after ``compute``: one
        result per complete window of ``window`` steps (window ``w``: steps ``wW + 1`` to
        ``(w + 1)W``), each estimating the accuracy of the adapter's online predictions in
        those steps (``kind == "direct"``: ``estimate`` set) or a score a map turns into it;
        ``scores`` may hold the features it was computed from. The host scores them against
        each window's online accuracy (``ttabench.runner.windows``). None (the default): this
        estimator gives no per-window estimate."""
        return None

    def reset(self) -> None:
        """Forget everything observed; called before each cell."""


# --------------------------------------------------------------------------- the rest of the API
# Defined in small modules of their own (which import the contracts above), so imported last.
# The record types (the typed cell record, torch-free) and the helpers plugins share (among
# them the adapters' shared pieces, ``ttabench.adaptation``).

from ttabench.adaptation.augment import TTAugment  # noqa: E402
from ttabench.adaptation.checks import (  # noqa: E402
    check_choice,
    check_fraction,
    check_positive,
    check_positive_int,
)
from ttabench.adaptation.ema import blend_parameters  # noqa: E402
from ttabench.adaptation.family import FAMILIES  # noqa: E402
from ttabench.adaptation.modes import use_batch_statistics  # noqa: E402
from ttabench.adaptation.optimizer import CIFAR_ADAM  # noqa: E402
from ttabench.calibration import SCHEMA as CALIBRATION_SCHEMA  # noqa: E402
from ttabench.calibration import Calibration, fit_polynomial  # noqa: E402
from ttabench.config_schema import Rule as ConfigRule  # noqa: E402
from ttabench.config_schema import plugin_parameters  # noqa: E402
from ttabench.config_schema import validate as validate_config  # noqa: E402
from ttabench.errors import Interrupted  # noqa: E402
from ttabench.estimators.derived import temperature as source_val_temperature  # noqa: E402
from ttabench.estimators.functional import fit_temperature  # noqa: E402
from ttabench.models.base import find_classifier  # noqa: E402
from ttabench.paths import cache_dir  # noqa: E402
from ttabench.records import CELL_SCHEMA, Cell, EstimatorRecord, ViewResult, read_cell  # noqa: E402
from ttabench.registry import get as get_plugin  # noqa: E402
from ttabench.registry import load_model, make_suite  # noqa: E402
from ttabench.runner.config import RunConfig, load_config  # noqa: E402
from ttabench.schemas import Count, Finite, Fraction, Record, Size  # noqa: E402
from ttabench.schemas import parse as parse_record  # noqa: E402
from ttabench.store import write_json_atomic  # noqa: E402
from ttabench.runner.stream import PROBE_DRAWS, first_epoch, stream_indices  # noqa: E402
from ttabench.scoring.stack import STACK_INPUT  # noqa: E402

__all__ = [
    "installed_version",
    "Count",
    "Finite",
    "Fraction",
    "Record",
    "Size",
    "parse_record",
    "CIFAR_ADAM",
    "FAMILIES",
    "FAMILY_RULE",
    "OptimizerSetting",
    "ResettableAdapter",
    "TTAugment",
    "blend_parameters",
    "check_choice",
    "check_fraction",
    "check_positive",
    "check_positive_int",
    "dataset_family",
    "eval_mode",
    "use_batch_statistics",
    "CALIBRATION_SCHEMA",
    "CELL_SCHEMA",
    "Calibration",
    "Cell",
    "EstimatorRecord",
    "ViewResult",
    "read_cell",
    "source_val_temperature",
    "ConfigRule",
    "RunConfig",
    "Interrupted",
    "TTABenchError",
    "cache_dir",
    "find_classifier",
    "get_plugin",
    "load_config",
    "load_model",
    "make_suite",
    "first_epoch",
    "fit_polynomial",
    "fit_temperature",
    "plugin_parameters",
    "stream_indices",
    "validate_config",
    "write_json_atomic",
    "Adapter",
    "EstimateResult",
    "Estimator",
    "LoadedModel",
    "Outputs",
    "PROBE_DRAWS",
    "Peers",
    "PoolEstimator",
    "STACK_INPUT",
    "Role",
    "SplitSpec",
    "StaticEstimator",
    "Suite",
    "TARGETS",
    "Target",
    "TrajectoryContext",
    "TrajectoryEstimator",
    "TrajectoryPlan",
    "to_unit_float",
]
