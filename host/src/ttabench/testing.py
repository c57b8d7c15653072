"""Conformance kit for plugin authors: call these from pytest to check a plugin honours the API.

Each ``check_*`` function runs a list of small named checks on tiny synthetic data (the
``tiny`` suite and the ``tiny-cnn`` model, a few seconds on a CPU) and raises AssertionError
naming the first check that fails::

    from ttabench.testing import check_adapter, check_estimator

    def test_my_adapter():
        check_adapter(MyAdapter, lr=1e-3)

``run_all(kind, obj)`` runs every check without stopping early (unless a setup check fails)
and returns ``[(check name, ok, message)]``; ``ttabench validate`` prints it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ttabench.api import (
    TARGETS,
    Adapter,
    EstimateResult,
    LoadedModel,
    Outputs,
    Peers,
    PoolEstimator,
    SplitSpec,
    StaticEstimator,
    Suite,
    TrajectoryContext,
    TrajectoryEstimator,
    TrajectoryPlan,
)
from ttabench.errors import TTABenchError
from ttabench.models.base import find_classifier
from ttabench.runner.passes import batch_statistics_copy

#: (check name, the check, whether later checks are pointless when it fails)
Check = tuple[str, Callable[[], None], bool]
CheckResult = tuple[str, bool, str]

BATCH = 16
SEED = 0
#: Steps replayed for a step-only trajectory estimator (probe_size 0, no checkpoints).
STEP_ONLY_STEPS = 8


# --------------------------------------------------------------------------- shared fixtures


@functools.lru_cache(maxsize=1)
def _tiny_model() -> LoadedModel:
    from ttabench.models.tiny import load_tiny_cnn

    return load_tiny_cnn()


#: Training seeds of the tiny-cnn peers a pool estimator is checked with (seed 0 is the model).
PEER_SEEDS = (1, 2, 3)
#: Noise of the peers' labelled ID data: on clean tiny images every tiny-cnn is right
#: everywhere, and agreement-on-the-line needs ID accuracies and agreements below 1.
PEER_ID_NOISE = 60.0


@functools.lru_cache(maxsize=len(PEER_SEEDS) + 1)
def _tiny_peer(seed: int) -> nn.Module:
    from ttabench.models.tiny import load_tiny_cnn

    return load_tiny_cnn(str(seed)).module.eval()


def _fresh_model() -> nn.Module:
    """A private copy of the trained tiny-cnn (float [0, 1] in, 4 logits out), eval mode."""
    return copy.deepcopy(_tiny_model().module).eval()


def _images(n: int, seed: int, noise: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` tiny-suite images as float [0, 1] and their labels."""
    from ttabench.suites.tiny import make_images

    images, labels = make_images(n, seed=seed, noise=noise)
    return images.float() / 255.0, labels


def _batches(count: int, seed: int = 123, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """``count`` batches of BATCH noisy tiny images (a shifted target stream), on ``device``."""
    x, _ = _images(count * BATCH, seed=seed, noise=80.0)
    return list(x.to(device).split(BATCH))


def _outputs(
    x: torch.Tensor, labels: torch.Tensor | None, features: bool
) -> Outputs:
    """tiny-cnn logits on ``x`` and, when asked, the classifier's input (penultimate features)."""
    loaded = _tiny_model()
    model = _fresh_model()
    captured: list[torch.Tensor] = []
    handle = None
    if features and loaded.classifier:
        head = model.get_submodule(loaded.classifier)
        handle = head.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0]))
    with torch.no_grad():
        logits = model(x)
    if handle is not None:
        handle.remove()
    return Outputs(logits=logits, labels=labels, features=captured[0] if captured else None)


def _ensure(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _json_dict(value: Any, what: str) -> None:
    _ensure(isinstance(value, dict), f"{what} must return a dict, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-serialisable: {exc}") from exc


def _has_name(obj: Any) -> None:
    name = getattr(obj, "name", None)
    _ensure(isinstance(name, str) and bool(name), f"{obj!r} needs a non-empty str `name`")


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _state_diff(before: dict[str, torch.Tensor], module: nn.Module) -> list[str]:
    after = module.state_dict()
    return [k for k, v in before.items() if k not in after or not torch.equal(v, after[k])]


# --------------------------------------------------------------------------- running checks


def _run(checks: list[Check]) -> list[CheckResult]:
    results: list[CheckResult] = []
    for name, check, fatal in checks:
        try:
            check()
        except AssertionError as exc:
            results.append((name, False, str(exc)))
        except Exception as exc:  # a crash is a failed check with its reason
            results.append((name, False, f"raised {type(exc).__name__}: {exc}"))
        else:
            results.append((name, True, ""))
            continue
        if fatal:
            break
    return results


def _raise_first(what: str, results: list[CheckResult]) -> None:
    for name, ok, message in results:
        if not ok:
            raise AssertionError(f"{what} failed check '{name}': {message}")


# --------------------------------------------------------------------------- adapters


def _adapter_checks(adapter_cls: type, params: dict[str, Any],
                    device: torch.device | str = "cpu") -> list[Check]:
    num_classes = _tiny_model().num_classes

    def build() -> Adapter:
        torch.manual_seed(SEED)
        return adapter_cls(_fresh_model().to(device), **params)

    def run(adapter: Adapter, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        torch.manual_seed(SEED)
        return [adapter(x).detach().clone() for x in batches]

    def is_adapter() -> None:
        _ensure(
            isinstance(adapter_cls, type) and issubclass(adapter_cls, Adapter),
            f"{adapter_cls!r} is not a subclass of ttabench.api.Adapter",
        )
        _has_name(adapter_cls)
        build()

    def forward() -> None:
        x = _batches(1, device=device)[0]
        logits = build()(x)
        _ensure(isinstance(logits, torch.Tensor), f"forward returned {type(logits).__name__}")
        shape = (x.shape[0], num_classes)
        _ensure(tuple(logits.shape) == shape, f"logits shape {tuple(logits.shape)} != {shape}")
        _ensure(bool(torch.isfinite(logits).all()), "forward returned non-finite logits")

    def predict() -> None:
        adapter = build()
        first, x = _batches(2, device=device)
        # the step-0 snapshot, then one once running state (statistics, memories) exists
        for moment in ("before the first step", "after a step"):
            state, counters = _state(adapter), adapter.counters()
            logits = adapter.predict(x)
            _ensure(tuple(logits.shape) == (x.shape[0], num_classes),
                    f"predict logits shape {moment}")
            _ensure(bool(torch.isfinite(logits).all()),
                    f"predict returned non-finite logits {moment}")
            changed = _state_diff(state, adapter)
            _ensure(not changed, f"predict changed parameters or buffers: {changed[:5]}")
            _ensure(adapter.counters() == counters, "predict changed the counters")
            run(adapter, [first])

    def reset() -> None:
        adapter = build()
        before = _state(adapter)
        batches = _batches(3, device=device)
        first = run(adapter, batches)
        adapter.reset()
        changed = _state_diff(before, adapter)
        _ensure(not changed, f"reset did not restore: {changed[:5]}")
        again = run(adapter, batches)
        same = all(torch.equal(a, b) for a, b in zip(first, again))
        _ensure(same, "after reset the same batches give other logits (optimizer state kept?)")

    def records() -> None:
        adapter = build()
        _json_dict(adapter.params(), "params()")
        adapter(_batches(1, device=device)[0])
        counters = adapter.counters()
        _ensure(isinstance(counters, dict), f"counters() returned {type(counters).__name__}")

    def deterministic() -> None:
        batches = _batches(3, device=device)
        first, second = run(build(), batches), run(build(), batches)
        same = all(torch.equal(a, b) for a, b in zip(first, second))
        _ensure(same, "two fresh instances with the same seed and batches gave other logits")

    def declarations() -> None:
        x = _batches(1)[0]
        reference = adapter_cls.source_val_reference
        _ensure(reference in ("bn", "source", "predict"),
                f"source_val_reference {reference!r} is not 'bn', 'source' or 'predict'")
        if reference != "predict":  # a fresh adapter's predict is that model's output
            model = _fresh_model()
            declared = batch_statistics_copy(model) if reference == "bn" else model
            with torch.no_grad():
                gap = float((build().predict(x) - declared(x)).abs().max())
            _ensure(gap <= 1e-5, f"source_val_reference={reference!r}, but a fresh adapter's "
                    f"predict differs from that model's logits by {gap:.3g}")
        adapter = build()
        if adapter.feature_call is None:
            return
        rows: list[int] = []
        head = adapter.model.get_submodule(find_classifier(adapter.model) or "")
        handle = head.register_forward_hook(lambda _m, inputs, _o: rows.append(len(inputs[0])))
        try:
            adapter(x)
        finally:
            handle.remove()
        _ensure(adapter.feature_call < len(rows) and rows[adapter.feature_call] == len(x),
                f"feature_call={adapter.feature_call}, but a step on {len(x)} images called the "
                f"classifier head with {rows or 'no'} rows")

    return [
        ("construct", is_adapter, True),
        ("forward", forward, True),
        ("predict", predict, False),
        ("reset", reset, False),
        ("params/counters", records, False),
        ("deterministic", deterministic, False),
        ("declarations", declarations, False),
    ]


def check_adapter(adapter_cls: type, *, device: torch.device | str = "cpu", **params: Any) -> None:
    """Check an Adapter subclass on tiny-cnn on ``device``; ``params`` go to
    ``adapter_cls(model, **params)``.

    Checks: a ``name``; one step on 16 float images gives finite (B, num_classes) logits;
    ``predict`` (after a step) changes no parameter, buffer or counter; ``reset`` restores every parameter and buffer and makes
    the same batches give the same logits again; ``params()`` is JSON-serialisable and
    ``counters()`` a dict; two fresh instances with the same seed give identical logits; a
    fresh adapter's ``predict`` is the model its ``source_val_reference`` names (unless
    ``"predict"``), and the call its ``feature_call`` names exists with the batch's rows.
    """
    _raise_first(_label(adapter_cls), _run(_adapter_checks(adapter_cls, params, device)))


# --------------------------------------------------------------------------- estimators


def _check_result(kind: str, result: Any) -> None:
    _ensure(isinstance(result, EstimateResult), f"returned {type(result).__name__}")
    _ensure(
        isinstance(result.value, (int, float)) and math.isfinite(result.value),
        f"value {result.value!r} is not a finite number",
    )
    if kind == "direct":
        _ensure(0.0 <= result.value <= 1.0, f"direct estimate {result.value} is not in [0, 1]")
    if result.estimate is not None:
        _ensure(
            math.isfinite(result.estimate) and 0.0 <= result.estimate <= 1.0,
            f"estimate {result.estimate!r} is not an accuracy in [0, 1]",
        )
    for key, score in result.scores.items():
        _ensure(math.isfinite(float(score)), f"score '{key}' = {score!r} is not finite")
    _json_dict(result.extras, "extras")


def _static_estimate(estimator: StaticEstimator) -> EstimateResult:
    """Feed tiny-cnn outputs on shifted tiny data (labels hidden) and, if needed, source val."""
    features = "features" in estimator.needs
    x, _ = _images(128, seed=7, noise=80.0)
    target = _outputs(x, None, features)
    # the source view: the frozen model's logits are the target outputs themselves
    target = dataclasses.replace(target, frozen_logits=target.logits)
    source_val = None
    if "source_val" in estimator.needs:
        source_val = _outputs(*_images(128, seed=1), features=features)
    return estimator.estimate(target, source_val)


def _pool_estimate(estimator: PoolEstimator, n_peers: int = len(PEER_SEEDS)) -> EstimateResult:
    """Feed tiny-cnn (seed 0) outputs and those of ``n_peers`` tiny-cnn peers (other training
    seeds) on the same shifted tiny data, labels hidden, plus every model's labelled ID
    outputs on noisy tiny data when the estimator needs source val."""
    x, _ = _images(128, seed=7, noise=80.0)
    val_x, val_labels = _images(128, seed=1, noise=PEER_ID_NOISE)
    needs_val = "source_val" in estimator.needs
    models = [_tiny_peer(seed) for seed in (0, *PEER_SEEDS[:n_peers])]
    with torch.no_grad():
        targets = [Outputs(logits=model(x)) for model in models]
        vals = [Outputs(logits=model(val_x), labels=val_labels) if needs_val else None
                for model in models]
    peers = Peers(model_ids=tuple(f"tiny-cnn:{seed}" for seed in PEER_SEEDS[:n_peers]),
                  target=tuple(targets[1:]), source_val=tuple(vals[1:]))
    return estimator.estimate(targets[0], vals[0], peers)


def _trajectory_estimate(estimator: TrajectoryEstimator, seed: int) -> EstimateResult:
    """Play a trajectory: probe snapshots whose logits drift from the source ones as steps grow.

    Steps run the host's ``source`` adapter on a stream of tiny batches (``on_step``); the
    snapshot at step k is the source probe logits plus seeded noise of scale ``2 k / last``.
    """
    from ttabench.adapters import SourceAdapter

    plan = estimator.plan()
    last = plan.checkpoints[-1] if plan.checkpoints else STEP_ONLY_STEPS
    n_probe = min(plan.probe_size, 256)
    stream, _ = _images(max(n_probe, min(max(last, 1), 32) * BATCH), seed=123, noise=80.0)
    model = _fresh_model()
    adapter = SourceAdapter(model)
    with torch.no_grad():
        base = model(stream[: max(n_probe, 1)])[:n_probe]
    generator = torch.Generator().manual_seed(seed)
    batches = list(stream.split(BATCH))

    def snapshot(step: int) -> torch.Tensor:
        return base + (2.0 * step / max(last, 1)) * torch.randn(base.shape, generator=generator)

    if 0 in plan.checkpoints:
        estimator.on_snapshot(0, base.clone())
    for step in range(1, last + 1):
        x = batches[(step - 1) % len(batches)]
        estimator.before_step(step, x, adapter, None)
        estimator.on_step(step, x, adapter(x), adapter)
        if step in plan.checkpoints:
            estimator.on_snapshot(step, snapshot(step))
    # the static views: the frozen model on the stream (source) and a perturbed copy of its
    # logits standing in for the batch-statistics model (bn), each with labelled source val
    frozen = _outputs(stream, None, False)
    frozen = dataclasses.replace(frozen, frozen_logits=frozen.logits)
    bn = dataclasses.replace(frozen, logits=frozen.logits + torch.randn(
        frozen.logits.shape, generator=generator))
    val = _outputs(*_images(128, seed=1), features=False)
    context = TrajectoryContext(
        num_classes=_tiny_model().num_classes,
        steps_run=last,
        probe_size=n_probe,
        probe_source_logits=base.clone(),
        dataset_size=len(stream),
        source_val=val if "source_val" in estimator.needs else None,
        views={"source": (frozen, val), "bn": (bn, val)},
    )
    return estimator.compute(context)


def _estimator_checks(estimator_cls: type, params: dict[str, Any]) -> list[Check]:
    def build() -> Any:
        return estimator_cls(**params)

    def declaration() -> None:
        _ensure(
            isinstance(estimator_cls, type)
            and issubclass(estimator_cls, (StaticEstimator, TrajectoryEstimator, PoolEstimator)),
            f"{estimator_cls!r} is not a StaticEstimator, TrajectoryEstimator or PoolEstimator "
            "subclass",
        )
        _has_name(estimator_cls)
        _ensure(estimator_cls.target in TARGETS, f"target {estimator_cls.target!r} not in {TARGETS}")
        _ensure(estimator_cls.kind in ("direct", "score"), f"kind {estimator_cls.kind!r}")
        needs = estimator_cls.needs
        _ensure(
            isinstance(needs, (set, frozenset)) and all(isinstance(n, str) for n in needs),
            f"needs must be a frozenset of str, got {needs!r}",
        )
        _json_dict(build().params(), "params()")

    checks: list[Check] = [("declaration", declaration, True)]
    kind = getattr(estimator_cls, "kind", "direct")
    if isinstance(estimator_cls, type) and issubclass(estimator_cls, StaticEstimator):

        def estimate() -> None:
            _check_result(kind, _static_estimate(build()))

        def deterministic() -> None:
            first, second = _static_estimate(build()), _static_estimate(build())
            _ensure(first.value == second.value, f"{first.value} then {second.value}")

        checks += [("estimate", estimate, True), ("deterministic", deterministic, False)]
    if isinstance(estimator_cls, type) and issubclass(estimator_cls, PoolEstimator):
        checks += _pool_checks(estimator_cls, build, kind)
    if isinstance(estimator_cls, type) and issubclass(estimator_cls, TrajectoryEstimator):

        def plan() -> None:
            p = build().plan()
            _ensure(isinstance(p, TrajectoryPlan), f"plan() returned {type(p).__name__}")
            _ensure(isinstance(p.probe_size, int) and p.probe_size >= 0, "probe_size must be >= 0")
            _ensure(isinstance(p.chunk, int) and p.chunk > 0, "chunk must be > 0")
            points = p.checkpoints
            if p.probe_size == 0:  # a step-only estimator (it watches on_step, no probe)
                _ensure(points == (), f"a plan without a probe takes no checkpoints, got {points!r}")
                return
            _ensure(
                isinstance(points, tuple)
                and len(points) > 0
                and all(isinstance(c, int) and c >= 0 for c in points),
                f"checkpoints must be a non-empty tuple of non-negative ints, got {points!r}",
            )
            _ensure(list(points) == sorted(set(points)), f"checkpoints not increasing: {points}")

        def compute() -> None:
            _check_result(kind, _trajectory_estimate(build(), seed=0))

        def reset() -> None:
            used = build()
            _trajectory_estimate(used, seed=1)
            used.reset()
            after_reset = _trajectory_estimate(used, seed=2)
            fresh = _trajectory_estimate(build(), seed=2)
            _ensure(
                after_reset.value == fresh.value,
                f"after reset() the estimate is {after_reset.value}, a fresh instance gives "
                f"{fresh.value}: reset() must forget the previous trajectory",
            )

        checks += [
            ("plan", plan, True),
            ("compute", compute, True),
            ("reset", reset, False),
        ]
    return checks


def _pool_checks(estimator_cls: type[PoolEstimator], build: Callable[[], Any],
                 kind: str) -> list[Check]:
    def views() -> None:
        chosen, fewest = estimator_cls.views, estimator_cls.min_peers
        _ensure(isinstance(chosen, tuple) and len(chosen) > 0 and set(chosen) <= set(TARGETS),
                f"views must be a non-empty tuple of {TARGETS}, got {chosen!r}")
        _ensure(isinstance(fewest, int) and 1 <= fewest <= len(PEER_SEEDS),
                f"min_peers must be an int in [1, {len(PEER_SEEDS)}], got {fewest!r}")

    def estimate() -> None:
        _check_result(kind, _pool_estimate(build()))

    def deterministic() -> None:
        first, second = _pool_estimate(build()), _pool_estimate(build())
        _ensure(first.value == second.value, f"{first.value} then {second.value}")

    def too_few_peers() -> None:
        try:
            _pool_estimate(build(), n_peers=estimator_cls.min_peers - 1)
        except TTABenchError:
            return
        raise AssertionError(f"with {estimator_cls.min_peers - 1} peers (min_peers "
                             f"{estimator_cls.min_peers}) it did not raise TTABenchError")

    return [("views", views, True), ("estimate", estimate, True),
            ("deterministic", deterministic, False), ("too few peers", too_few_peers, False)]


def check_estimator(estimator_cls: type, **params: Any) -> None:
    """Check an Estimator subclass on tiny-cnn outputs; ``params`` go to ``estimator_cls(**params)``.

    Checks: ``name``, ``target`` in TARGETS, ``kind`` direct or score, JSON-serialisable
    ``params()``. A StaticEstimator gets target Outputs with ``labels=None`` (plus labelled
    source-val outputs and penultimate features when it ``needs`` them) and must return a
    finite EstimateResult (a direct one in [0, 1]), the same twice. A PoolEstimator declares
    ``views`` and ``min_peers``, gets tiny-cnn's outputs with three peers (tiny-cnn of
    other seeds, same samples; labelled noisy ID outputs of each when it needs source val),
    must return such a result twice alike, and must raise TTABenchError with one peer too few. A TrajectoryEstimator
    needs a valid ``plan()``, a finite result from ``compute()`` after its snapshots, and
    ``reset()`` must make it behave as a fresh instance.
    """
    _raise_first(_label(estimator_cls), _run(_estimator_checks(estimator_cls, params)))


# --------------------------------------------------------------------------- suites


def _check_item(item: Any, num_classes: int, what: str) -> None:
    _ensure(isinstance(item, (tuple, list)) and len(item) == 2, f"{what}: not (image, label)")
    image, label = item
    _ensure(
        isinstance(image, torch.Tensor) and image.dtype == torch.uint8,
        f"{what}: image must be a uint8 tensor, got {getattr(image, 'dtype', type(image))}",
    )
    _ensure(image.ndim == 3 and image.shape[0] == 3, f"{what}: image shape {tuple(image.shape)}")
    value = int(label)
    _ensure(0 <= value < num_classes, f"{what}: label {value} not in [0, {num_classes})")


def _check_dataset(dataset: Any, num_classes: int, what: str) -> None:
    size = len(dataset)
    _ensure(size > 0, f"{what} is empty")
    _check_item(dataset[0], num_classes, f"{what}[0]")
    _check_item(dataset[size - 1], num_classes, f"{what}[{size - 1}]")


def _suite_checks(factory: Callable[..., Any], data_dir: Any, options: dict[str, Any]) -> list[Check]:
    built: list[Suite] = []

    def suite() -> Suite:
        if not built:
            built.append(factory(data_dir, **options))
        return built[0]

    def construct() -> None:
        s = suite()
        _ensure(isinstance(s, Suite), f"the factory returned {type(s).__name__}, not a Suite")
        _has_name(s)
        _ensure(isinstance(s.num_classes, int) and s.num_classes >= 2, "num_classes must be >= 2")
        subset = s.class_subset
        _ensure(
            subset is None or all(isinstance(i, int) and i >= 0 for i in subset),
            "class_subset must be None or a list of non-negative ints",
        )

    def splits() -> None:
        found = suite().splits()
        _ensure(isinstance(found, list) and len(found) > 0, "splits() must be a non-empty list")
        _ensure(all(isinstance(sp, SplitSpec) for sp in found), "every split must be a SplitSpec")
        split_names = [sp.name for sp in found]
        _ensure(len(set(split_names)) == len(split_names), f"duplicate split names: {split_names}")
        roles = {sp.role for sp in found}
        _ensure(roles <= {"eval", "calibration"}, f"unknown roles: {roles}")

    def items() -> None:
        s = suite()
        for split in s.splits():
            _check_dataset(s.dataset(split), s.num_classes, f"split '{split.name}'")

    def source_val() -> None:
        s = suite()
        val = s.source_val()
        if val is not None:
            _check_dataset(val, s.num_classes, "source_val")

    def record() -> None:
        _json_dict(suite().record(), "record()")

    def deterministic() -> None:
        s, again = suite(), factory(data_dir, **options)
        _ensure(s.splits() == again.splits(), "two constructions give other splits")
        split = s.splits()[0]
        first, second = s.dataset(split)[0][0], again.dataset(split)[0][0]
        _ensure(torch.equal(first, second), f"split '{split.name}' item 0 differs between builds")

    return [
        ("construct", construct, True),
        ("splits", splits, True),
        ("items", items, False),
        ("source_val", source_val, False),
        ("record", record, False),
        ("deterministic", deterministic, False),
    ]


def check_suite(factory: Callable[..., Any], data_dir: Any = None, **options: Any) -> None:
    """Check a suite factory, called as ``factory(data_dir, **options)``.

    Checks: a Suite with a name and ``num_classes >= 2``; unique SplitSpecs with known roles;
    every split's first and last items (and source_val's) are (uint8 (3, H, W), label in
    range); ``record()`` is JSON-serialisable; two builds give the same splits and pixels.
    """
    _raise_first(_label(factory), _run(_suite_checks(factory, data_dir, options)))


# --------------------------------------------------------------------------- model sources


def _input_size(preprocessing: dict[str, Any]) -> int:
    size = preprocessing.get("input_size", 32)
    return int(size[-1]) if isinstance(size, (list, tuple)) else int(size)


def _model_checks(
    factory: Callable[..., Any],
    arg: str | None = None,
    cache_dir: Path | str | None = None,
    num_classes: int | None = None,
    device: torch.device | str = "cpu",
) -> list[Check]:
    loaded: list[LoadedModel] = []

    def load() -> LoadedModel:
        directory = Path(cache_dir) if cache_dir is not None else Path(tempfile.mkdtemp())
        return factory(arg, cache_dir=directory, num_classes=num_classes)

    def model() -> LoadedModel:
        if not loaded:
            loaded.append(load())
        return loaded[0]

    def fields() -> None:
        m = model()
        _ensure(isinstance(m, LoadedModel), f"the source returned {type(m).__name__}")
        _ensure(isinstance(m.module, nn.Module), "module must be an nn.Module")
        _ensure(isinstance(m.num_classes, int) and m.num_classes >= 2, "num_classes must be >= 2")
        _ensure(isinstance(m.model_id, str) and bool(m.model_id), "model_id must be a str")
        _ensure(isinstance(m.weights_hash, str) and bool(m.weights_hash), "weights_hash missing")
        _json_dict(m.preprocessing, "preprocessing")

    def forward() -> None:
        m = model()
        size = _input_size(m.preprocessing)
        x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(SEED))
        with torch.no_grad():
            logits = m.module.eval().to(device)(x.to(device))
        shape = (2, m.num_classes)
        _ensure(tuple(logits.shape) == shape, f"logits shape {tuple(logits.shape)} != {shape}")
        _ensure(bool(torch.isfinite(logits).all()), "non-finite logits")

    def classifier() -> None:
        m = model()
        if m.classifier is None:
            return
        head = m.module.get_submodule(m.classifier)
        _ensure(isinstance(head, nn.Linear), f"classifier '{m.classifier}' is not an nn.Linear")
        _ensure(
            head.out_features == m.num_classes,
            f"classifier has {head.out_features} outputs, num_classes is {m.num_classes}",
        )

    def deterministic() -> None:
        first, second = model(), load()
        _ensure(
            (first.model_id, first.weights_hash) == (second.model_id, second.weights_hash),
            "two loads give another model_id or weights_hash",
        )

    return [
        ("load", fields, True),
        ("forward", forward, False),
        ("classifier", classifier, False),
        ("deterministic", deterministic, False),
    ]


def check_model_source(
    factory: Callable[..., Any],
    arg: str | None = None,
    cache_dir: Path | str | None = None,
    num_classes: int | None = None,
) -> None:
    """Check a model source, called as ``factory(arg, cache_dir=..., num_classes=...)``.

    Checks: a LoadedModel with ids and JSON-serialisable preprocessing; float input of the
    recorded ``input_size`` gives finite (2, num_classes) logits; ``classifier`` names an
    ``nn.Linear`` with num_classes outputs; two loads give the same id and weights hash.
    A temporary cache_dir is used when none is given.
    """
    _raise_first(_label(factory), _run(_model_checks(factory, arg, cache_dir, num_classes)))


# --------------------------------------------------------------------------- commands


def _command_checks(command: Any) -> list[Check]:
    def help_text() -> None:
        import click
        from click.testing import CliRunner

        _ensure(isinstance(command, click.Command), f"{command!r} is not a click.Command")
        result = CliRunner().invoke(command, ["--help"])
        _ensure(result.exit_code == 0, f"--help exited {result.exit_code}: {result.output}")

    return [("help", help_text, True)]


# --------------------------------------------------------------------------- all kinds


def _label(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or repr(obj)


def run_all(kind: str, obj: Any, *, device: torch.device | str = "cpu",
            **params: Any) -> list[CheckResult]:
    """Every check for a plugin of ``kind`` (adapters, adapter wrappers, estimators, suites,
    models, commands); adapters (wrapped ones too) and models run on ``device``.

    ``params`` go to the plugin: constructor parameters for adapters and estimators, options
    (and ``data_dir``) for suites, ``arg``/``cache_dir``/``num_classes`` for model sources.
    Returns ``[(check name, ok, message)]``; stops after a failed setup check.
    """
    from ttabench.registry import normalize_kind

    kind = normalize_kind(kind)
    if kind == "adapters":
        return _run(_adapter_checks(obj, params, device))
    if kind == "estimators":
        return _run(_estimator_checks(obj, params))
    if kind == "suites":
        data_dir = params.pop("data_dir", None)
        return _run(_suite_checks(obj, data_dir, params))
    if kind == "models":
        return _run(_model_checks(obj, **params, device=device))
    if kind == "adapter_wrappers":
        return _run(_wrapper_checks(obj, params, device))
    return _run(_command_checks(obj))


def _wrapper_checks(wrapper: Any, params: dict[str, Any],
                    device: torch.device | str = "cpu") -> list[Check]:
    """An adapter wrapper (``<wrapper>:<adapter>``) turns an adapter class into an adapter
    class that passes the adapter checks; checked on the host's ``source`` adapter."""
    from ttabench.adapters import SourceAdapter

    wrapped: list[type] = []

    def wraps() -> None:
        cls = wrapper(SourceAdapter)
        _ensure(isinstance(cls, type) and issubclass(cls, Adapter),
                f"{wrapper!r}(SourceAdapter) is not an Adapter subclass")
        wrapped.append(cls)

    checks: list[Check] = [("wrap", wraps, True)]
    return checks + [(f"wrapped {name}", functools.partial(_deferred, wrapped, i, device), fatal)
                     for i, (name, _, fatal) in enumerate(_adapter_checks(SourceAdapter, params))]


def _deferred(wrapped: list[type], index: int, device: torch.device | str) -> None:
    """Run the ``index``-th adapter check on the wrapped class (built by the ``wrap`` check)."""
    _adapter_checks(wrapped[0], {}, device)[index][1]()


__all__ = [
    "check_adapter",
    "check_estimator",
    "check_model_source",
    "check_suite",
    "run_all",
]
