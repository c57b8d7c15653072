"""``ttabench estimate``: label-free accuracy estimates on one folder of unlabelled images.

Two ways in, every check made before any image is adapted on:

- ``--calibration FILE`` of ``ttabench calibrate`` (a model calibration): the model must be the
  one it was made for; the adapter, every plugin's parameters, the batch size, steps and
  preprocessing are the file's (an option that contradicts them is refused); the entry is the
  calibration's chosen one, ``-e NAME``'s best, or with ``--all`` every calibrated estimator's
  best; an estimator that needs labelled source data reads the calibration's labelled images
  again (``--labelled`` where they moved), checked against their recorded content;
- otherwise one ``--estimator``, configured as ``ttabench run`` configures it (a score
  estimator with ``--calibration ID|FILE`` of a single map, ``ttabench fit``).

Each estimate comes with an interval over the folder's images (``ttabench.calibrate.interval``)
that adds the map's calibration error where the calibration knows it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch

from ttabench import registry
from ttabench.api import (
    Estimator,
    LoadedModel,
    Outputs,
    PoolEstimator,
    StaticEstimator,
    TrajectoryEstimator,
)
from ttabench.calibrate.estimate import (
    Estimated,
    FolderRun,
    Wanted,
    decode_folder,
    estimate_folder,
)
from ttabench.calibrate.record import ModelCalibration, StoredMap, model_calibration_of
from ttabench.config_schema import validate as validate_config
from ttabench.errors import TTABenchError
from ttabench.paths import cache_dir
from ttabench.calibrate.command import SUITE
from ttabench.runner.benchmark import Benchmark, _instantiate
from ttabench.runner.decoded_cache import LoaderOptions
from ttabench.runner.device_facts import configure_device, device_facts, device_line
from ttabench.runner.command import FolderSuite, check_given, input_geometry, print_overrides
from ttabench.runner.config import build_spec, load_config, names
from ttabench.runner.preflight import (
    check_adapter_setup,
    check_compute_options,
    check_split_size,
    check_steps,
    resolve_device,
)
from ttabench.runner.resources import cpu_cores, default_workers
from ttabench.spec import (
    PRECISIONS,
    RunSpec,
    given_options,
    option,
    single_model,
    spec_options,
    trust_options,
)
from ttabench.suites.images import UnlabelledFolder
from ttabench.suites.labelled_meta_set import LabelledMetaSet


@dataclass
class Prepared:
    """Everything an estimate needs once its checks passed."""

    run: FolderRun
    wanted: list[Wanted]
    adapter: str
    target: str
    image_size: int
    resize: int
    params: dict[str, Any]


def _load(spec_name: str, options: dict[str, Any], threads: int | None, device: str | None,
          precision: str, channels_last: bool, deterministic: bool
          ) -> tuple[LoadedModel, torch.device]:
    """The model, and the device set up as a run sets it (compute options checked)."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    check_compute_options(dev, precision, channels_last, PRECISIONS)
    configure_device(dev, deterministic)
    return registry.load_model(spec_name, cache_dir=cache_dir(), options=options), dev


def _loader(workers: int | None, dev: torch.device) -> LoaderOptions:
    """Loader workers for a folder (``--workers``, else the default for disk reads)."""
    count = default_workers(cpu_cores(), 1, streams_from_disk=True) if workers is None else workers
    return LoaderOptions(workers=count, pin_memory=dev.type == "cuda")


def _plain(given: dict[str, Any], config_path: str | None, sets: tuple[str, ...],
           calibration: str | None, trust: dict[str, bool], image_size: int | None,
           resize: int | None) -> Prepared:
    """One estimator configured as a run configures it (module docstring)."""
    config = load_config(config_path, overrides=list(sets))
    validate_config(config)
    chosen = names(given.get("estimator"))
    if len(chosen) != 1:
        raise TTABenchError("estimate takes exactly one --estimator (or --calibration FILE of "
                            "`ttabench calibrate`, which names its own)")
    name = chosen[0]
    if calibration:
        config.data.setdefault("estimator", {}).setdefault(name, {})["calibration"] = calibration
    spec = build_spec(config, baselines=False, **trust, **given)
    print_overrides(config, {k: v for k, v in given.items() if k != "estimator"}, "",
                    [(f"--calibration {calibration}", ["estimator", name, "calibration"])]
                    if calibration else [])
    est = _instantiate("estimators", name, spec.estimator_params.get(name, {}))
    if isinstance(est, PoolEstimator):
        raise TTABenchError(f"{name} compares models: it needs a run of several models on "
                            f"labelled data (`ttabench run --model mnist-pool -e {name}`), not "
                            "one model on a folder")
    if "source_val" in est.needs:
        raise TTABenchError(f"{name} needs labelled source-validation data; on a bare folder "
                            "use an estimator that does not (see `ttabench ls estimators`), "
                            "or calibrate it on your labelled images (`ttabench calibrate`)")
    check_steps(spec.steps, {name: est})
    adapter = spec.adapters[0]
    adapter_cls = registry.get("adapters", adapter)
    adapter_params = spec.adapter_params.get(adapter, {})
    loaded, dev = _load(spec.model, spec.model_options, spec.threads, spec.device,
                        spec.precision, spec.channels_last, spec.deterministic)
    try:
        est.check_calibration({"model": loaded.model_id, "num_classes": loaded.num_classes,
                               "precision": spec.precision})
    except TTABenchError as err:
        raise TTABenchError(f"{err}; pass --calibration ID|FILE of a calibration fitted for "
                            "this model (see `ttabench fit`), or calibrate the model on your "
                            "labelled images (`ttabench calibrate`)") from None
    check_adapter_setup(adapter, adapter_cls, adapter_params, loaded, None, "folder")
    size, shorter = input_geometry(loaded.preprocessing, image_size, resize)
    view = (est.view if isinstance(est, StaticEstimator) else None) or est.target
    stored = StoredMap("direct" if est.kind == "direct" else "own")
    run = FolderRun(loaded, adapter_cls, adapter_params, {name: est}, spec.batch_size,
                    spec.steps, dev, loader=_loader(spec.num_workers, dev),
                    precision=spec.precision, channels_last=spec.channels_last)
    return Prepared(run, [Wanted(name, name, view, stored.accuracy)], adapter, est.target, size,
                    shorter, {name: est.params()})


def _same(option: str, given: Any, recorded: Any) -> None:
    if given is not None and given != recorded:
        raise TTABenchError(f"{option} {given} contradicts the calibration, made with "
                            f"{recorded}: drop {option} (or calibrate again with it)")


def _labelled_source(cal: ModelCalibration, labelled: Path | None, model: str,
                     options: dict[str, Any], given: dict[str, Any],
                     estimators: dict[str, Estimator]
                     ) -> tuple[Outputs | None, Outputs | None, Outputs | None]:
    """The calibration's labelled images as the source-validation references of the
    ``source``, ``bn`` and ``adapted`` views, when an estimator needs them: read again
    (``labelled``, or where they were) and checked against their recorded content, then
    computed by the benchmark of the calibration's suite exactly as its cells had them (the
    meta-set itself is not built)."""
    needing = sorted(n for n, e in estimators.items() if "source_val" in e.needs)
    if not needing:
        return None, None, None
    where = cal.labelled.get("location", {})
    root = labelled or (Path(where["root"]) if where.get("root") else None)
    if root is None or not Path(root).is_dir():
        raise TTABenchError(f"{', '.join(needing)} needs the labelled images the calibration "
                            f"was made from ({root}), which are not there: pass --labelled DIR")
    protocol = cal.protocol
    spec = RunSpec(
        suite=SUITE, model=model, adapters=[protocol.adapter], estimators=needing,
        suite_options={"root": str(root),
                       "labels": None if labelled is not None else where.get("labels"),
                       "num_classes": cal.model.num_classes,
                       "class_names": cal.labelled.get("class_names"),
                       "image_size": protocol.image_size, "resize": protocol.resize},
        adapter_params={protocol.adapter: protocol.adapter_params},
        estimator_params={n: protocol.estimator_params.get(n, {}) for n in needing},
        batch_size=protocol.batch_size, steps=protocol.steps, device=given.get("device"),
        threads=given.get("threads"), precision=protocol.precision,
        channels_last=protocol.channels_last, model_options=options)
    bench = Benchmark(spec)
    suite = bench.suite
    if not isinstance(suite, LabelledMetaSet) or suite.digest != cal.labelled.get("sha256"):
        raise TTABenchError(f"the labelled images in {root} are not those the calibration was "
                            f"made from (their content changed); {', '.join(needing)} needs "
                            "those: pass --labelled DIR of the same images, or calibrate again")
    return bench.source_val(), bench.source_val_bn(), bench.source_val_adapted(protocol.adapter)


def _calibrated(cal: ModelCalibration, path: str, given: dict[str, Any], sets: tuple[str, ...],
                config_path: str | None, trust: dict[str, bool], image_size: int | None,
                resize: int | None, labelled: Path | None, every: bool) -> Prepared:
    """The calibration's entries and protocol (module docstring)."""
    if sets or config_path:
        raise TTABenchError("--set and --config have no effect with a calibration made by "
                            "`ttabench calibrate` (it fixes every parameter): drop them")
    protocol = cal.protocol
    _same("--adapter", ",".join(names(given.get("adapter"))) or None, protocol.adapter)
    _same("--batch-size", given.get("batch_size"), protocol.batch_size)
    _same("--steps", given.get("steps"), protocol.steps)
    _same("--image-size", image_size, protocol.image_size)
    _same("--resize", resize, protocol.resize)
    _same("--precision", given.get("precision"), protocol.precision)
    _same("--channels-last", given.get("channels_last"), protocol.channels_last)
    picked = names(given.get("estimator"))
    if every and picked:
        raise TTABenchError("--all estimates every calibrated estimator; drop --estimator")
    entries = (cal.per_estimator() if every else [cal.best_of(n) for n in picked] if picked
               else [cal.entry(cal.chosen)])
    options = {"trust_pickle": True} if trust["trust_pickle"] else {}
    if trust["trust_torchscript"]:
        options["trust_torchscript"] = True
    loaded, dev = _load(given.get("model") or cal.model.spec, options, given.get("threads"),
                        given.get("device"), protocol.precision, protocol.channels_last,
                        bool(given.get("deterministic")))
    cal.check_model(loaded, f"calibration {path}")
    estimators: dict[str, Estimator] = {
        e.estimator: _instantiate("estimators", e.estimator,
                                  protocol.estimator_params.get(e.estimator, {}))
        for e in entries}
    check_steps(protocol.steps, estimators)
    adapter_cls = registry.get("adapters", protocol.adapter)
    check_adapter_setup(protocol.adapter, adapter_cls, protocol.adapter_params, loaded, None,
                        "folder")
    references = _labelled_source(cal, labelled, given.get("model") or cal.model.spec, options,
                                  given, estimators)
    wanted = [Wanted(e.name, e.estimator,
                     (est.view if isinstance(est := estimators[e.estimator], StaticEstimator)
                      else None) or protocol.target, e.map.accuracy, cal.error_q95(e))
              for e in entries]
    run = FolderRun(loaded, adapter_cls, protocol.adapter_params, estimators,
                    protocol.batch_size, protocol.steps, dev, source_val=references[0],
                    source_val_bn=references[1], source_val_adapted=references[2], loader=_loader(given.get("workers"), dev), precision=protocol.precision,
                    channels_last=protocol.channels_last)
    return Prepared(run, wanted, protocol.adapter, protocol.target, protocol.image_size,
                    protocol.resize or protocol.image_size,
                    {n: e.params() for n, e in estimators.items()})


def _entry_report(found: Estimated, cal: ModelCalibration | None) -> dict[str, Any]:
    entry = cal.entry(found.wanted.name) if cal is not None else None
    return {"entry": found.wanted.name, "estimator": found.wanted.estimator,
            "estimate": found.estimate, "score": found.score,
            "interval": [found.interval.low, found.interval.high],
            "sampling_interval": list(found.interval.sampling),
            "calibration_error_q95": found.interval.calibration_q,
            "calibration_lodo_mae": None if entry is None else entry.lodo_mae,
            "bootstrap": found.method,
            "replicates": [None if v != v else float(v) for v in found.replicates]}


def covers(found: Estimated, n_families: int | None) -> str:
    """What the interval of one estimate is made of, in words."""
    lo, hi = found.interval.sampling
    half = 100 * max(found.estimate - lo, hi - found.estimate)
    text = f"{found.method}: +-{half:.2f} pp"
    if found.interval.calibration_q is None:
        return text + "; the map's calibration error is unknown (not included)"
    return (text + f", with the map's calibration error in quadrature: 95% of its "
            f"leave-one-dataset-out errors over {n_families} meta-set families within "
            f"{100 * found.interval.calibration_q:.2f} pp")


@click.command()
@spec_options("estimator", "adapter", "model", "seed", "steps", "batch_size", "data_dir",
              "device", "threads", "precision", "channels_last", "deterministic", "n_boot",
              "boot_seed", "cache_mib", "workers")
@click.option("--config", "config_path", default=None, help="Config file (default ./plugins.toml).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.NAME.KEY=VALUE",
              help="Override a config leaf (VALUE read as TOML), e.g. adapter.tent.lr=0.01.")
@trust_options
@click.option("--data", "data", required=True, help="Folder of unlabelled images (recursive).")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Center-crop size (default: the model's input size, else 224).")
@click.option("--resize", type=click.IntRange(min=1), default=None,
              help="Resize the shorter side before the crop (default: the model's recorded "
                   "preprocessing, else 256).")
@click.option("--calibration", default=None,
              help="A model calibration file of `ttabench calibrate`, or the id or file of a "
                   "single map for a score estimator (`ttabench fit`).")
@click.option("--all", "every", is_flag=True,
              help="With a model calibration: every calibrated estimator's estimate.")
@click.option("--labelled", type=click.Path(path_type=Path), default=None,
              help="Where the calibration's labelled images are now (for estimators that "
                   "need labelled source data).")
@click.option("--bootstrap", type=click.IntRange(min=1), default=5, show_default=True,
              help="Resamples of the folder for a trajectory estimator's interval (each one "
                   "adaptation).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimate(config_path: str | None, sets: tuple[str, ...], trust_pickle: bool,
             trust_torchscript: bool, data: str, image_size: int | None, resize: int | None,
             calibration: str | None, every: bool, labelled: Path | None, bootstrap: int,
             as_json: bool, **params: Any) -> None:
    """Label-free accuracy estimate for one model on one folder of unlabelled images, with a
    95% interval over the folder's images (and the map's calibration error where known).

    \b
      ttabench estimate --calibration my-calibration.json --data my_unlabelled/ [--all]
      ttabench estimate -e ac -m cifar10-resnet18 --data my_unlabelled/

    Everything that can be checked is checked before any image is adapted on: the model
    against the calibration, the estimator (a score estimator needs a calibration), the
    adapter, the steps, and the folder's size against the probe and the batch.
    """
    if params.get("data_dir") is not None:
        raise TTABenchError("estimate reads the images of --data; --data-dir (a suite's data "
                            "folder) has no meaning here: drop it")
    given = single_model(given_options(params), "estimate")
    check_given(given)
    seeds = given.get("seed") or [0]
    if len(seeds) > 1:
        raise TTABenchError("estimate takes one --seed (the stream seed of the estimate); "
                            "its interval resamples the folder's images (--bootstrap, --n-boot)")
    trust = {"trust_pickle": trust_pickle, "trust_torchscript": trust_torchscript}
    cal = model_calibration_of(calibration) if calibration else None
    if cal is None and every:
        raise TTABenchError("--all needs --calibration FILE made by `ttabench calibrate`")
    if cal is None and labelled is not None:
        raise TTABenchError("--labelled is read with --calibration FILE of `ttabench "
                            "calibrate`; drop it")
    prepared = (_calibrated(cal, str(calibration), given, sets, config_path, trust, image_size,
                            resize, labelled, every) if cal is not None else
                _plain(given, config_path, sets, calibration, trust, image_size, resize))
    run = prepared.run
    folder = UnlabelledFolder(data, image_size=prepared.image_size, resize=prepared.resize)
    adapts = run.steps > 0 or any(isinstance(e, TrajectoryEstimator)
                                  for e in run.estimators.values())
    check_split_size(len(folder), str(data), run.estimators, run.batch_size, adapts)
    budget = int(given.get("cache_mib", option("cache_mib").default)) << 20
    images = decode_folder(folder, 3 * prepared.image_size ** 2, budget, run.loader.workers)
    found = estimate_folder(
        run, images, lambda dataset: FolderSuite(dataset, run.model.num_classes, str(data)),
        prepared.wanted, seed=int(seeds[0]), n_boot=int(given.get("n_boot", option("n_boot").default)),
        resamples=bootstrap, boot_seed=int(given.get("boot_seed", option("boot_seed").default)), progress=not as_json)
    first = found[0]
    families = None if cal is None else len(cal.meta_set.get("recipe", {}).get("families", []))
    report = {
        "estimator": first.wanted.estimator, "entry": first.wanted.name,
        "model": run.model.model_id, "adapter": prepared.adapter, "target": prepared.target,
        "data": str(data), "n_images": len(folder), "skipped_files": folder.skipped_files,
        "preprocessing": {"image_size": prepared.image_size, "resize": prepared.resize},
        "calibration": calibration, "seed": int(seeds[0]),
        **{k: v for k, v in _entry_report(first, cal).items() if k not in ("entry", "estimator")},
        "covers": covers(first, families), "params": prepared.params,
        "trajectory": isinstance(run.estimators[first.wanted.estimator], TrajectoryEstimator),
        "device": device_line(run.device, device_facts(run.device), torch.get_num_threads()),
    }
    if every:
        report["all"] = [_entry_report(f, cal) for f in found]
    if as_json:
        click.echo(json.dumps(report, indent=2))
        sys.stdout.flush()
        return
    skipped = folder.skipped_files
    for f in found:
        click.echo(f"{f.wanted.name}: estimated {prepared.target} accuracy "
                   f"{100 * f.estimate:.2f}% (95% interval {100 * f.interval.low:.2f}-"
                   f"{100 * f.interval.high:.2f}%) on {len(folder)} images of {data}"
                   + (f" ({skipped} unreadable file(s) skipped)" if skipped else "")
                   + ("  <- chosen" if cal is not None and every and f.wanted.name == cal.chosen
                      else ""))
        click.echo(f"  interval: {covers(f, families)}; it is meant to cover the accuracy on "
                   "the population the folder was drawn from")
    click.echo(f"device: {report['device']}", err=True)
    sys.stdout.flush()
