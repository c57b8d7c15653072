"""``ttabench calibrate``: calibrate a model on a folder of your labelled images.

Every check that can be made before work is made first (the model, the folder's layout, its
classes against the model's, how many images it holds, where the output goes). Then the
calibration meta-set of the labelled images (suite ``labelled-meta-set``) is run as cells, as
``ttabench run`` runs any suite: shown progress, each finished cell written atomically under a
content key (so a rerun skips what is done, and Ctrl-C keeps it), the same adapter, estimator
parameters and stream as a run with the same configuration. Finally every entry is scored by
leave-one-dataset-out (``ttabench.calibrate.choose``) and the model calibration file is
written atomically (``ttabench.calibrate.record``).
"""

from __future__ import annotations

import hashlib
import signal
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from ttabench import registry
from ttabench.api import TARGETS, PoolEstimator, TrajectoryEstimator
from ttabench.calibrate.choose import lowest, nested_choice, score_entries
from ttabench.calibrate.interval import conformal_quantile
from ttabench.calibrate.record import (
    CalibrationProtocol,
    ModelCalibration,
    ModelIdentity,
)
from ttabench.config_schema import validate as validate_config
from ttabench.errors import Interrupted, TTABenchError
from ttabench.paths import cache_dir
from ttabench.runner.benchmark import Benchmark, _instantiate, collect_cells, pending_cells
from ttabench.runner.cells import is_finished
from ttabench.runner.command import check_given, execute_cells, input_geometry, print_overrides
from ttabench.runner.config import build_spec, load_config
from ttabench.runner.preflight import resolve_device
from ttabench.runner.resources import cpu_cores, resolve_jobs
from ttabench.runner.run_folder import RunFolder
from ttabench.scoring.maps import truth
from ttabench.spec import (
    MAP_KINDS,
    check_map_kinds,
    given_options,
    single_model,
    spec_options,
    trust_options,
)
from ttabench.store import check_writable_folder
from ttabench.suites.labelled_folder import read_listing

SUITE = "labelled-meta-set"


def default_cells(model_id: str, weights_hash: str, labelled: Path,
                  labels: Path | None) -> Path:
    """``<cache>/calibrate/<16 hex digits>``: one folder per model and labelled folder (the
    cells in it are keyed by content, so changed images make new cells)."""
    text = "\n".join([model_id, weights_hash, str(labelled.resolve()),
                      str(labels.resolve()) if labels else ""])
    return cache_dir() / "calibrate" / hashlib.sha256(text.encode()).hexdigest()[:16]


def set_size_for(given: int | None, n_labelled: int, batch_size: int,
                 estimators: dict[str, Any]) -> int:
    """``--set-size``, else the labelled images' count raised to a batch and to the largest
    probe a trajectory estimator takes (sets draw with replacement when larger)."""
    if given:
        return given
    probes = [e.plan().probe_size for e in estimators.values()
              if isinstance(e, TrajectoryEstimator)]
    return max([n_labelled, batch_size, *probes])


def _table(calibration: ModelCalibration) -> list[str]:
    lines = [f"  {'entry':<28} {'LODO MAE (pp)':>13} {'95% |error| (pp)':>16}"]
    for entry in sorted(calibration.entries, key=lambda e: (e.lodo_mae, e.name)):
        mark = "  <- chosen" if entry.name == calibration.chosen else ""
        lines.append(f"  {entry.name:<28} {entry.lodo_mae:>13.2f} "
                     f"{100 * entry.error_q95:>16.2f}{mark}")
    return lines


@click.command("calibrate")
@spec_options("estimator", "adapter", "model", "seed", "batch_size", "steps", "device",
              "threads", "jobs", "workers", "precision", "channels_last", "deterministic",
              "map_kinds")
@click.option("--labelled", required=True, type=click.Path(path_type=Path),
              help="Folder of labelled images the model was not trained on: <DIR>/<class>/"
                   "<image> (class = the model's output index, its class name, or an ImageNet "
                   "wnid), or any layout with --labels.")
@click.option("--labels", default=None, type=click.Path(path_type=Path),
              help="CSV of path,label lines (paths relative to --labelled) instead of class "
                   "folders.")
@click.option("--output", "-o", default="calibration.json", show_default=True,
              type=click.Path(path_type=Path), help="The calibration file to write.")
@click.option("--target", type=click.Choice(TARGETS), default="source", show_default=True,
              help="The accuracy the maps estimate: source (the model as it is), bn (with "
                   "test-batch statistics) or adapted (the adapter's online accuracy).")
@click.option("--cells", default=None, type=click.Path(path_type=Path),
              help="Folder of the meta-set's cells (default: under the cache, one per model "
                   "and labelled folder); a rerun there resumes.")
@click.option("--set-size", type=click.IntRange(min=1), default=None,
              help="Images per meta-set set (default: the labelled images' count, at least a "
                   "batch and the largest probe).")
@click.option("--meta-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the meta-set's draws and strengths.")
@click.option("--families", default=None,
              help="Comma list of the meta-set's families (clean, a shift, or two joined by "
                   "+), default: the default recipe's 23.")
@click.option("--sets-per-family", type=click.IntRange(min=1), default=None,
              help="Sets of each family (default: the default recipe's).")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Center-crop size (default: the model's input size, else 224).")
@click.option("--resize", type=click.IntRange(min=1), default=None,
              help="Resize the shorter side before the crop (default: the model's).")
@click.option("--config", "config_path", default=None, help="Config file (default ./plugins.toml).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.NAME.KEY=VALUE",
              help="Override a config leaf (VALUE read as TOML), e.g. adapter.tent.lr=0.01.")
@click.option("--no-baselines", is_flag=True, help="Do not add the config's baselines.")
@click.option("--retries", type=click.IntRange(min=0), default=0,
              help="Retries of a failing cell before it is recorded failed.")
@trust_options
def calibrate(labelled: Path, labels: Path | None, output: Path, target: str,
              cells: Path | None, set_size: int | None, meta_seed: int, families: str | None,
              sets_per_family: int | None, image_size: int | None, resize: int | None,
              config_path: str | None, sets: tuple[str, ...], no_baselines: bool, retries: int,
              trust_pickle: bool, trust_torchscript: bool, **params: Any) -> None:
    """Calibrate a model on a folder of your labelled images: every estimator's maps on the
    calibration meta-set of the images, the estimator with the lowest leave-one-dataset-out
    error chosen, one calibration file for `ttabench estimate --calibration`.

    \b
      ttabench calibrate -m cifar10-resnet18 --labelled my_labelled/ -o my-calibration.json
      ttabench estimate --calibration my-calibration.json --data my_unlabelled/

    Finished cells are kept (under --cells): a rerun of the same command resumes.
    """
    started = time.perf_counter()
    config = load_config(config_path, overrides=list(sets))
    validate_config(config)
    given = single_model(given_options(params), "calibrate")
    check_given(given)
    kinds = check_map_kinds(given.get("map_kinds") or list(MAP_KINDS))
    spec = build_spec(config, baselines=not no_baselines, trust_pickle=trust_pickle,
                      trust_torchscript=trust_torchscript,
                      **{k: v for k, v in given.items() if k != "map_kinds"})
    if not spec.stream.resets:
        raise TTABenchError(f"calibrate runs each meta-set set as its own stream "
                            f"(reset-each-split); the config asks for {spec.stream.name}")
    if len(spec.adapters) != 1:
        raise TTABenchError(f"calibrate takes one adapter, got {', '.join(spec.adapters)}")
    pool = [n for n in spec.estimators
            if issubclass(registry.get("estimators", n), PoolEstimator)]
    if pool:
        raise TTABenchError(f"{pool[0]} compares models and calibrate runs one; score it in a "
                            f"run of several (`ttabench run --model mnist-pool -e {pool[0]}`)")
    if output.is_dir():
        raise TTABenchError(f"--output {output} is a folder; name the calibration file")
    check_writable_folder(output.resolve().parent, "--output")
    loaded = registry.load_model(spec.model, cache_dir=cache_dir(), options=spec.model_options)
    listing = read_listing(labelled, loaded.num_classes, loaded.class_names, labels)
    missing = loaded.num_classes - len(listing.classes)
    if missing:
        click.echo(f"note: {missing} of the model's {loaded.num_classes} classes have no "
                   "labelled image; the calibration sees only the others", err=True)
    size, shorter = input_geometry(loaded.preprocessing, image_size, resize)
    estimators = {n: _instantiate("estimators", n, spec.estimator_params.get(n, {}))
                  for n in spec.estimators}
    spec.suite = SUITE
    spec.suite_options = {
        "root": str(labelled), "labels": None if labels is None else str(labels),
        "num_classes": loaded.num_classes,
        "class_names": None if loaded.class_names is None else list(loaded.class_names),
        "image_size": size, "resize": shorter,
        "set_size": set_size_for(set_size, len(listing.paths), spec.batch_size, estimators),
        "meta_seed": meta_seed,
        "families": None if families is None else [f.strip() for f in families.split(",")
                                                   if f.strip()],
        "sets_per_family": sets_per_family}
    spec.splits, spec.severities = [], []
    n_jobs = resolve_jobs(spec.jobs, resolve_device(spec.device).type, cpu_cores())
    spec.jobs = n_jobs
    out = cells or default_cells(loaded.model_id, loaded.weights_hash, labelled, labels)
    click.echo(f"calibrating {loaded.model_id} on {len(listing.paths)} labelled images of "
               f"{labelled} (classes read as {listing.rule}); adapter {spec.adapters[0]}, "
               f"estimators {', '.join(spec.estimators)}; target {target}")
    with RunFolder.claim(out) as folder:
        bench = Benchmark(spec, show_progress=True)
        plans = bench.plan()
        print_overrides(config, given, SUITE)
        todo = pending_cells(plans, out, None)
        click.echo(f"{len(plans)} meta-set cells, {len(todo)} to run; cells in {out}")
        try:
            counts = execute_cells(bench, todo, out, config, executor="local", retries=retries,
                                   ray_address=None, jobs=n_jobs)
        except KeyboardInterrupt as stop:
            finished = sum(is_finished(out, p.key) for p in plans)
            raise Interrupted(stop.signum if isinstance(stop, Interrupted) else signal.SIGINT,
                              f"{finished} of {len(plans)} cells finished are kept in {out}; "
                              "rerun the same command to resume") from None
        done = collect_cells(out, plans)
        folder.record({"spec": spec.to_dict(), "calibration": str(output)}, counts,
                      {"total": time.perf_counter() - started})
    failed = [c for c in done if c.status == "failed"]
    if failed:
        click.echo(f"note: {len(failed)} cell(s) failed (first: {failed[0].split['name']}: "
                   f"{failed[0].error}); calibrating on the others", err=True)
    scored, skipped, common = score_entries(done, target, kinds)
    best = lowest(scored)
    y = np.array([truth(c, target) for c in common], dtype=np.float64)
    nested = nested_choice(scored, y, [c.dataset for c in common])
    suite = bench.suite
    record = suite.record()
    calibration = ModelCalibration(
        model=ModelIdentity.of(loaded, spec.model),
        protocol=CalibrationProtocol(
            target=target, adapter=spec.adapters[0],
            adapter_params=spec.adapter_params.get(spec.adapters[0], {}),
            estimator_params={n: spec.estimator_params.get(n, {}) for n in spec.estimators},
            batch_size=spec.batch_size, steps=spec.steps, stream=spec.stream.name,
            image_size=size, resize=shorter, precision=spec.precision,
            channels_last=spec.channels_last),
        entries=[s.entry for s in scored], chosen=best.entry.name,
        choice_lodo_mae=None if nested is None else nested[0],
        choice_error_q95=None if nested is None else conformal_quantile(nested[1] - y),
        skipped=skipped,
        labelled={**record["labelled"], "location": suite.location(),
                  "class_names": spec.suite_options["class_names"]},
        meta_set=record["meta_set"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        provenance=(f"ttabench calibrate: {len(common)} meta-set cells of "
                    f"{len({c.dataset for c in common})} families, cells in {out}"))
    calibration.save(output)
    click.echo(f"{len(calibration.entries)} entries scored by leave-one-dataset-out over "
               f"{best.entry.n_datasets} meta-set families ({best.entry.n_cells} cells), "
               f"{target} accuracy:")
    click.echo("\n".join(_table(calibration)))
    for name, why in sorted(skipped.items()):
        click.echo(f"  skipped {name}: {why}")
    click.echo(f"chosen: {best.entry.name} (LODO MAE {best.entry.lodo_mae:.2f} pp"
               + ("" if nested is None else f"; the choice itself, redone without each family: "
                  f"{nested[0]:.2f} pp") + f"); wrote {output}")
