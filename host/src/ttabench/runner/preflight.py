"""Checks of a run's inputs that need the loaded plugins, made before any work starts.

Each refuses, with one line naming the option or key that fixes it, what would otherwise fail
in every cell or, worse, silently give other numbers: a device this machine does not have,
severities the suite does not have, ``--steps`` below the last checkpoint an estimator needs,
a calibration fitted for another model or precision, adapter parameters the adapter refuses or
source data the suite lacks, and a split too small for one stream batch or for an estimator's
probe.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Iterable
from typing import Any

import torch

from ttabench.api import Adapter, Estimator, LoadedModel, SplitSpec, Suite, TrajectoryEstimator
from ttabench.errors import TTABenchError
from ttabench.runner.passes import has_batch_norm
from ttabench.runner.streams import SPLIT_SEED_STRIDE
from ttabench.spec import MAX_SEED, StreamSpec


def check_compute_options(device: torch.device, precision: str, channels_last: bool,
                          precisions: tuple[str, ...]) -> None:
    """bf16 autocast and channels_last are CUDA options; refused elsewhere, before any work."""
    if precision not in precisions:
        raise TTABenchError(f"--precision must be one of {', '.join(precisions)}, got {precision!r}")
    if device.type != "cuda" and (precision != "fp32" or channels_last):
        given = "--precision bf16" if precision != "fp32" else "--channels-last"
        raise TTABenchError(f"{given} needs a CUDA device; this run uses {device}")


def resolve_device(name: str | None) -> torch.device:
    """``name`` if given, else CUDA when present, else the CPU; a device this machine does not
    have is a one-line error (before any work)."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise TTABenchError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise TTABenchError(f"--device {name}: CUDA is not available on this machine; "
                                "use --device cpu")
        if device.index is not None and device.index >= count:
            raise TTABenchError(f"--device {name}: this machine has {count} CUDA device(s), "
                                f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise TTABenchError(f"--device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise TTABenchError(f"--device {name}: only cpu, cuda[:N] and mps are supported")
    return device


def planned_device(name: str | None) -> torch.device:
    """The device cells will run on elsewhere (Ray tasks), not looked for on this machine: a
    Ray head needs no GPU of its own. The name must still be a device."""
    try:
        return torch.device(name or "cpu")
    except (RuntimeError, TypeError):
        raise TTABenchError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None


def check_severities(severities: list[int], suite: Suite) -> None:
    """Refuse a severity the suite does not have (it would silently keep only the splits
    without a severity, such as ``clean``)."""
    available = sorted({s.severity for s in suite.splits() if s.severity is not None})
    unknown = [v for v in severities if v not in available]
    if unknown:
        raise TTABenchError(
            f"--severities {','.join(map(str, unknown))}: suite {suite.name!r} has "
            + (f"severities {', '.join(map(str, available))}" if available else "no severities")
        )


def check_adapter_setup(name: str, cls: type[Adapter], params: dict[str, Any], model: LoadedModel,
                        source_data: Any, suite: str) -> None:
    """Refuse, once and before any work, what would fail in every cell: parameters the adapter
    does not accept (it is built once on a copy of the model, without its source data), and an
    adapter that needs source data (``Adapter.source_data_param``) on a suite without a
    labelled source-validation split."""
    if cls.source_data_param and (source_data is None or len(source_data) == 0):
        raise TTABenchError(
            f"adapter {name} needs labelled clean source data (its {cls.source_data_param!r}), "
            f"taken from the suite's source-validation split, but suite {suite} has none; "
            "use a suite with one, or an adapter that needs none"
        )
    try:
        cls(copy.deepcopy(model.module), **params)
    except TypeError as err:
        raise TTABenchError(f"adapter {name!r}: bad parameters {params}: {err}") from None
    except TTABenchError as err:
        raise TTABenchError(f"adapter {name!r} ({params}): {err}") from None


def check_calibrations(estimators: dict[str, Estimator], facts: dict[str, Any]) -> None:
    """Refuse an estimator's calibration fitted for another model, class count or precision
    than the run's ``facts`` (``model``, ``num_classes``, ``precision``): every cell would
    refuse it anyway, after its work. The estimator decides (``check_calibration``; a forced
    calibration passes)."""
    for name, est in estimators.items():
        if est.calibration is None:
            continue
        try:
            est.check_calibration(facts)
        except TTABenchError as err:
            raise TTABenchError(f"estimator {name}: {err}") from None


def check_steps(steps: int, estimators: dict[str, Estimator],
                stream: StreamSpec | None = None) -> None:
    """Refuse ``steps`` > 0 below the last checkpoint a trajectory estimator needs, and any
    ``steps`` for a stream whose length its splits decide (not ``reset-each-split``).

    Adaptation runs exactly ``steps`` updates when it is given (0: up to the last checkpoint
    any estimator needs), so fewer would leave checkpoints unreached; known before any work.
    """
    if stream is not None and not stream.resets and steps:
        raise TTABenchError(f"--steps {steps}: a {stream.name} stream runs --steps-per-split "
                            "steps on each split; pass --steps-per-split instead")
    last = {name: max(est.plan().checkpoints, default=0) for name, est in estimators.items()
            if isinstance(est, TrajectoryEstimator)}
    short = sorted(name for name, step in last.items() if 0 < steps < step)
    if short:
        need = max(last[name] for name in short)
        raise TTABenchError(
            f"--steps {steps} is fewer than the last checkpoint ({need}) of {', '.join(short)}; "
            f"pass --steps 0 (stop at the last checkpoint) or at least {need}, or lower the "
            "checkpoints"
        )


def check_some_split_fits(sizes: Iterable[tuple[str, int]], estimators: dict[str, Estimator],
                          batch_size: int, adapts: bool) -> None:
    """Refuse, before any work, a batch or probe larger than every split (``sizes``: the
    splits' names and image counts, read lazily until one fits): each cell would fail after
    planning. A split smaller than that fails its own cells only."""
    first: TTABenchError | None = None
    for name, n in sizes:
        try:
            check_split_size(n, name, estimators, batch_size, adapts)
            return
        except TTABenchError as err:
            first = first or err
    if first is not None:
        raise TTABenchError(f"no split is large enough; first: {first}")


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Refuse a malformed or unreachable ``--ray-address`` before any work (Ray itself would
    wait for it): ``auto`` and ``local`` are Ray's own, anything else must be ``[ray://]HOST:
    PORT`` with a port that accepts a TCP connection within ``timeout`` seconds."""
    import socket

    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TTABenchError(f"--ray-address {address!r} is not HOST:PORT, ray://HOST:PORT, "
                            "auto or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise TTABenchError(f"--ray-address {address}: cannot connect ({exc.strerror or exc}); "
                            "start the cluster (ray start --head) or fix the address") from None


def check_split_size(n: int, split: str, estimators: dict[str, Estimator], batch_size: int,
                     adapts: bool) -> None:
    """Refuse a split too small for one stream batch (when adapting) or for a trajectory
    estimator's probe (unless it rescales small probes), naming the option that fixes it."""
    if n == 0:
        raise TTABenchError(f"split {split!r} is empty")
    if adapts and n < batch_size:
        raise TTABenchError(
            f"split {split!r} has {n} images, fewer than one stream batch of {batch_size}; "
            f"pass --batch-size {n} or less"
        )
    for name, est in estimators.items():
        if not isinstance(est, TrajectoryEstimator):
            continue
        probe = est.plan().probe_size
        if probe > n and est.small_probe != "rescale":
            fix = f"pass --set estimator.{name}.probe_size={n} (or less)"
            if "small_probe" in inspect.signature(type(est)).parameters:
                fix += f", or --set estimator.{name}.small_probe=rescale to accept a smaller probe"
            raise TTABenchError(
                f"split {split!r} has {n} images, fewer than the probe size {probe} of {name}; {fix}"
            )


def check_batch_statistics(batch_size: int, stats_window: int, model: torch.nn.Module) -> None:
    """Refuse batches of one image on a model with batch normalization without a stats window:
    one image has no batch statistics (``ttabench.runner.small_batch``)."""
    if batch_size == 1 and stats_window < 2 and has_batch_norm(model):
        raise TTABenchError("--batch-size 1: one image gives no batch statistics to the model's "
                            "batch normalization; pass --stats-window L (e.g. 64) to normalize "
                            "with the last L images, as the field does for single images")


def check_stream_length(stream: StreamSpec, suite: Suite, order: list[SplitSpec],
                        batch_size: int, estimators: dict[str, Estimator], name: str) -> None:
    """Refuse, before any work, a multi-split stream whose splits hold fewer images than one
    batch, or which ends before the last checkpoint an estimator needs."""
    if stream.resets:
        return
    sizes = [suite.size(split) for split in order]
    small = [s.name for s, size in zip(order, sizes) if size < batch_size]
    if small:
        raise TTABenchError(f"split {small[0]!r} has fewer images than one batch of "
                            f"{batch_size}; lower --batch-size")
    total = sum(sizes)
    length = (stream.steps_per_split * len(order) if stream.steps_per_split else
              total // batch_size if stream.kind == "mixed" else
              sum(size // batch_size for size in sizes))
    last = max((max(est.plan().checkpoints, default=0) for est in estimators.values()
                if isinstance(est, TrajectoryEstimator)), default=0)
    if last > length:
        raise TTABenchError(f"stream {name} has {length} steps, fewer than the last checkpoint "
                            f"({last}) an estimator needs; lower its checkpoints or raise "
                            "--steps-per-split")


def check_stream_seeds(seeds: list[int]) -> None:
    """Refuse a seed of a multi-split stream too large for its splits' seeds: split k's stream
    is seeded ``seed * SPLIT_SEED_STRIDE + k`` (``ttabench.runner.streams``), a 64-bit seed."""
    largest = (MAX_SEED - SPLIT_SEED_STRIDE) // SPLIT_SEED_STRIDE
    too_large = [s for s in seeds if s > largest]
    if too_large:
        raise TTABenchError(f"--seed {too_large[0]}: a stream through several splits takes seeds "
                            f"up to {largest} (split k is seeded seed * {SPLIT_SEED_STRIDE} + k)")


def check_pool_estimators(estimators: dict[str, type[Estimator]], models: list[str],
                          logit_cache: bool, spec_steps: int, stream: StreamSpec) -> None:
    """Refuse an estimator that compares models (``PoolEstimator``) in a run with fewer models
    than it needs, without the logit cache it reads its peers' outputs from, or, when it is
    computed in the ``adapted`` view only, in a run that does not adapt."""
    from ttabench.api import PoolEstimator

    adapts = spec_steps > 0 or not stream.resets or any(
        isinstance(c, type) and issubclass(c, TrajectoryEstimator) for c in estimators.values())
    for name, cls in estimators.items():
        if not (isinstance(cls, type) and issubclass(cls, PoolEstimator)):
            continue
        if tuple(cls.views) == ("adapted",) and not adapts:
            raise TTABenchError(
                f"estimator {name!r} compares the adapted models, but this run does not adapt "
                "(no trajectory estimator, --steps 0); pass --steps N (e.g. --steps 50)")
        if len(models) < cls.min_peers + 1:
            raise TTABenchError(
                f"estimator {name!r} compares models: it needs at least {cls.min_peers + 1} "
                f"models, the run has {len(models)} ({', '.join(models)}); pass several, e.g. "
                "--model mnist-cnn,mnist-resnet,mnist-pool:convmlp, or a pool: --model "
                "mnist-pool")
        if not logit_cache:
            raise TTABenchError(f"estimator {name!r} compares models and reads the other "
                                "models' outputs from the logit cache; drop --no-logit-cache")
