"""``ttabench run`` and ``ttabench estimate``."""

from __future__ import annotations

import json
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from ttabench import registry
from ttabench.api import SplitSpec, Suite, TrajectoryEstimator
from ttabench.errors import Interrupted, TTABenchError
from ttabench.runner.benchmark import Benchmark, RunSpec, collect_cells, pending_cells
from ttabench.runner.cells import CellPlan, is_finished, parse_shard
from ttabench.runner.config import RunConfig, load_config, override_notes
from ttabench.config_schema import MAX_SEED, MAX_THREADS
from ttabench.config_schema import validate as validate_config
from ttabench.runner.decoded_cache import DEFAULT_CACHE_MIB
from ttabench.runner.executor import Backend, LocalBackend, run_cells
from ttabench.runner.execute import PRECISIONS
from ttabench.runner.preflight import resolve_device
from ttabench.runner.resources import cpu_cores, resolve_jobs
from ttabench.runner.run_folder import RunFolder


def _names(values: tuple[str, ...]) -> list[str]:
    """Repeatable and comma-separated option values, in order, without duplicates."""
    out: list[str] = []
    for value in values:
        for name in str(value).split(","):
            if name.strip() and name.strip() not in out:
                out.append(name.strip())
    return out


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def choose_adapters(cli: list[str], config: RunConfig, estimators: list[str]) -> list[str]:
    """``--adapter``, else ``[run].adapter``, else the first trajectory estimator's
    ``default_adapter``, else ``source`` (no adaptation)."""
    if cli:
        return cli
    if config.run.get("adapter"):
        return [str(a) for a in _as_list(config.run["adapter"])]
    for name in estimators:
        default = registry.get("estimators", name).default_adapter
        if default:
            return [default]
    return ["source"]


def build_spec(config: RunConfig, *, estimator: tuple[str, ...] = (), adapter: tuple[str, ...] = (),
               suite: str | None = None, model: str | None = None, seed: tuple[int, ...] = (),
               splits: tuple[str, ...] = (), severities: tuple[int, ...] = (),
               n_examples: int | None = None, steps: int | None = None,
               batch_size: int | None = None, data_dir: str | None = None,
               device: str | None = None, baselines: bool = True, workers: int | None = None,
               threads: int | None = None, trust_pickle: bool = False,
               cache_mib: int = DEFAULT_CACHE_MIB, precision: str = "fp32",
               channels_last: bool = False) -> RunSpec:
    """Merge command-line options over the configuration into a ``RunSpec``."""
    run = config.run
    estimators = _names(estimator) or _names(tuple(_as_list(run.get("estimators"))))
    roster = [b for b in _names(tuple(_as_list(run.get("baselines")))) if b not in estimators]
    if baselines:
        estimators += roster
    if not estimators and not adapter and not run.get("adapter"):
        raise TTABenchError("nothing to run: name an --estimator (see `ttabench ls estimators`)")
    adapters = choose_adapters(_names(adapter), config, estimators)
    suite_name = suite or run["suite"]
    suite_options = config.section("suite", suite_name)
    if n_examples is not None:
        suite_options["n_examples"] = n_examples
    return RunSpec(
        suite=suite_name,
        model=model or run["model"],
        adapters=adapters,
        estimators=estimators,
        suite_options=suite_options,
        adapter_params={name: config.section("adapter", name) for name in adapters},
        estimator_params={name: config.section("estimator", name) for name in estimators},
        seeds=list(seed) or [int(s) for s in _as_list(run.get("seeds", [0]))],
        batch_size=int(batch_size if batch_size is not None else run.get("batch_size", 64)),
        steps=int(steps if steps is not None else run.get("steps", 0)),
        splits=_names(splits) or [str(s) for s in _as_list(run.get("splits"))],
        severities=list(severities) or [int(s) for s in _as_list(run.get("severities"))],
        data_dir=data_dir or run.get("data_dir"),
        device=device or run.get("device"),
        num_workers=workers,
        threads=threads if threads is not None else run.get("threads"),
        cache_mib=cache_mib, precision=precision, channels_last=channels_last,
        model_options={"trust_pickle": True} if trust_pickle else {},
        baselines=roster if baselines else [],
    )


def finish_run(output: Path, cells: list[dict[str, Any]], n_boot: int, echo=click.echo,
               boot_unit: str = "dataset", map_kinds: tuple[str, ...] = ("lin", "quad")) -> None:
    """Score the finished cells, write the leaderboard files and print the summary."""
    from ttabench.records import Cell
    from ttabench.scoring import build_leaderboard, format_console, write_leaderboard
    from ttabench.scoring.report_html import write_report

    ok = [c for c in cells if c.get("status") == "ok"]
    if not ok:
        echo("no finished cells to score")
        return
    cell_records = [Cell.from_dict(c) for c in cells]
    board = build_leaderboard(cell_records, n_boot=n_boot, boot_unit=boot_unit,
                              map_kinds=map_kinds)
    paths = [*write_leaderboard(board, output), write_report(board, cell_records, output)]
    echo(format_console(board))
    echo("wrote " + ", ".join(str(p) for p in paths))


def map_kinds_option(value: str | list[str]) -> tuple[str, ...]:
    """Map kinds from ``--map-kinds a,b`` or ``[run] map_kinds``, checked before any work."""
    from ttabench.scoring.map_kinds import check_map_kinds

    names = [k.strip() for k in value.split(",")] if isinstance(value, str) else value
    return check_map_kinds(names)


def _option(flag: str, value: Any) -> str:
    """How an option was given: ``--seed 3,4``."""
    shown = ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else value
    return f"{flag} {shown}"


def replaced_leaves(given: dict[str, tuple[str, Any]], suite: str) -> list[tuple[str, list[str]]]:
    """The config leaves the given command-line options stand for: ``given`` maps a leaf
    under ``[run]`` (or ``n_examples``, a suite option) to (flag, value)."""
    out = []
    for key, (flag, value) in given.items():
        if value is None or value == () or value is False:
            continue
        leaf = ["suite", suite, key] if key == "n_examples" else ["run", key]
        out.append((_option(flag, value), leaf))
    return out


def print_overrides(config: RunConfig, options: list[tuple[str, list[str]]]) -> None:
    """One stderr line saying which file values the command line replaces (when any)."""
    notes = override_notes(config, options)
    if notes:
        click.echo("overrides: " + "; ".join(notes), err=True)


COUNT = click.IntRange(min=0)
POSITIVE = click.IntRange(min=1)
SEED = click.IntRange(0, MAX_SEED)
THREADS = click.IntRange(0, MAX_THREADS)
common_options = [
    click.option("--estimator", "-e", multiple=True, help="Estimator(s) to score; repeatable or comma list."),
    click.option("--adapter", "-a", multiple=True, help="Adapter(s); default: the estimator's preferred one."),
    click.option("--model", "-m", default=None, help="Model spec, e.g. mnist-cnn, timm:resnet50, path.pt."),
    click.option("--seed", type=SEED, multiple=True, help="Seed(s); repeatable."),
    click.option("--steps", type=COUNT, default=None,
                 help="Adaptation steps: exactly this many (at least the last checkpoint an "
                      "estimator needs); 0: stop at that last checkpoint."),
    click.option("--batch-size", type=POSITIVE, default=None, help="Stream batch size (default 64)."),
    click.option("--data-dir", default=None, help="Dataset root (else $TTABENCH_DATA_DIR)."),
    click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)."),
    click.option("--config", "config_path", default=None, help="Config file (default ./plugins.toml)."),
    click.option("--set", "sets", multiple=True, help="Override a config leaf: section.name.key=value."),
    click.option("--threads", type=THREADS, default=None,
                 help="CPU threads per process (default [run].threads, 1 in plugins.toml; "
                      "0 or unset: CPU cores // parallel jobs)."),
    click.option("--trust-pickle", is_flag=True,
                 help="Also load a checkpoint file that is a whole pickled nn.Module. Unpickling "
                      "runs whatever code the file names (arbitrary code, with your rights): "
                      "only for files you made or trust. Without it, files are read as "
                      "tensors only."),
]


def with_options(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


@click.command()
@with_options(common_options)
@click.option("--suite", "-s", default=None, help="Suite name (see `ttabench ls suites`).")
@click.option("--splits", multiple=True, help="Split or dataset glob(s), e.g. 'fog-*,clean'.")
@click.option("--severities", type=POSITIVE, multiple=True,
              help="Keep only these severities (of the suite's).")
@click.option("--n-examples", type=POSITIVE, default=None, help="Images per split.")
@click.option("--output", "-o", default=None, help="Run folder (cells/, leaderboard files).")
@click.option("--shard", default=None, help="Run only shard i of n (i/n, 1-based).")
@click.option("--quick", is_flag=True, help="Apply the config's [quick] table: a smoke run.")
@click.option("--no-baselines", is_flag=True, help="Do not add the config's baselines.")
@click.option("--retries", type=COUNT, default=0,
              help="Retries of a failing cell before it is recorded failed.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local")
@click.option("--ray-address", default=None, help="Ray cluster address (default: start a local one).")
@click.option("--workers", type=COUNT, default=None,
              help="Data-loading worker processes per cell (default: min(4, cores // jobs) for "
                   "a suite that streams from disk, else 0).")
@click.option("--cache-mib", type=COUNT, default=DEFAULT_CACHE_MIB,
              help="MiB of decoded images a cell keeps for its adaptation stream (0: the probe "
                   "only); recorded in the cell's protocol.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
              help="bf16: bfloat16 autocast (CUDA only; recorded, changes the numbers).")
@click.option("--channels-last", is_flag=True, help="channels_last memory format (CUDA only).")
@click.option("--jobs", "-j", type=COUNT, default=None,
              help="Cells run in parallel processes (0: one per CPU core; default [run].jobs).")
@click.option("--n-boot", type=POSITIVE, default=1000, help="Bootstrap resamples for the intervals.")
@click.option("--boot-unit", type=click.Choice(["dataset", "split"]), default=None,
              help="What the bootstrap resamples: datasets, then splits within them (default "
                   "[run].boot_unit, else dataset), or splits.")
@click.option("--map-kinds", default=None,
              help="Map kinds fitted for every score estimator, comma-separated, from lin, quad, "
                   "iso, logit-lin, logit-quad (default [run].map_kinds, else lin,quad).")
@click.option("--dry-run", is_flag=True,
              help="Print the planned cells and their protocol facts; run nothing.")
@click.option("--preset", "preset_name", default=None,
              help="A named published protocol (see `ttabench presets`; else [run].preset).")
@click.option("--allow-deviation", is_flag=True,
              help="Run although options change protocol facts of the preset (recorded).")
def run(estimator, adapter, model, seed, steps, batch_size, data_dir, device, config_path, sets,
        threads, trust_pickle, suite, splits, severities, n_examples, output, shard, quick, no_baselines,
        retries, executor, ray_address, workers, cache_mib, precision, channels_last, jobs, n_boot,
        boot_unit, map_kinds, dry_run, preset_name, allow_deviation) -> None:
    """Run cells (model x suite split x adapter x estimators x seed) and score them.

    One run per output folder: a second run into a folder in use is refused. SIGTERM stops
    like Ctrl-C; finished cells are kept and a rerun of the same command resumes.
    """
    started = time.perf_counter()
    config = load_config(config_path, quick=quick, overrides=list(sets))
    validate_config(config)
    from ttabench import preset as presets

    protocol_preset = presets.chosen(preset_name, config)
    if protocol_preset is not None:
        for note in presets.apply(config, protocol_preset):
            click.echo(note, err=True)
    kinds = map_kinds_option(map_kinds if map_kinds is not None
                             else config.run.get("map_kinds", ["lin", "quad"]))
    spec = build_spec(config, estimator=estimator, adapter=adapter, suite=suite, model=model,
                      seed=seed, splits=splits, severities=severities, n_examples=n_examples,
                      steps=steps, batch_size=batch_size, data_dir=data_dir, device=device,
                      baselines=not no_baselines, workers=workers, threads=threads,
                      trust_pickle=trust_pickle, cache_mib=cache_mib, precision=precision,
                      channels_last=channels_last)
    spec.plugins = list(click.get_current_context().find_root().params.get("plugins") or ())
    if protocol_preset is not None:
        if dry_run:
            click.echo("\n".join(presets.describe(protocol_preset, spec)))
        spec.preset = presets.check(protocol_preset, spec, allow_deviation)
    if executor == "ray" and spec.device is None:
        gpus = float(config.data.get("executor", {}).get("ray", {}).get("num_gpus", 0))
        spec.device = "cuda" if gpus > 0 else "cpu"
    n_jobs = resolve_jobs(int(jobs if jobs is not None else config.run.get("jobs", 1)),
                          resolve_device(spec.device).type, cpu_cores())
    spec.jobs = n_jobs if executor == "local" else 1
    out = Path(output or config.run.get("output") or "runs/default")
    if quick and not output:
        out = out.with_name(out.name + "-quick")
    shard_of = parse_shard(shard)
    click.echo(f"config: {config.source}; suite {spec.suite}, model {spec.model}, "
               f"adapters {', '.join(spec.adapters)}, estimators {', '.join(spec.estimators)}")
    print_overrides(config, replaced_leaves({
        "estimators": ("--estimator", estimator), "adapter": ("--adapter", adapter),
        "suite": ("--suite", suite), "model": ("--model", model), "seeds": ("--seed", seed),
        "splits": ("--splits", splits), "severities": ("--severities", severities),
        "n_examples": ("--n-examples", n_examples), "steps": ("--steps", steps),
        "batch_size": ("--batch-size", batch_size), "data_dir": ("--data-dir", data_dir),
        "device": ("--device", device), "threads": ("--threads", threads),
        "jobs": ("--jobs", jobs), "output": ("--output", output)}, spec.suite))
    if dry_run:  # plans and prints; claims no folder and writes nothing
        from ttabench.runner.dry_run import describe

        bench = Benchmark(spec, show_progress=False)
        click.echo("\n".join(describe(bench, bench.plan())))
        return
    with RunFolder.claim(out, shard_of) as folder:
        t = time.perf_counter()
        bench = Benchmark(spec, show_progress=True)
        setup_time = time.perf_counter() - t
        plans = bench.plan()
        todo = pending_cells(plans, out, shard_of)
        click.echo(f"{len(plans)} cells planned, {len(todo)} to run"
                   + (f" (shard {shard})" if shard else "") + f"; output {out}")
        t = time.perf_counter()
        try:
            counts = execute_cells(bench, todo, out, config, executor=executor,
                                   retries=retries, ray_address=ray_address, jobs=n_jobs)
        except KeyboardInterrupt as stop:
            finished = sum(is_finished(out, p.key) for p in plans)
            raise Interrupted(stop.signum if isinstance(stop, Interrupted) else signal.SIGINT,
                              f"{finished} of {len(plans)} cells finished are kept in {out}; "
                              "rerun the same command to resume") from None
        cells_time = time.perf_counter() - t
        t = time.perf_counter()
        cells = collect_cells(out, plans)
        finish_run(out, cells, n_boot,
                   boot_unit=boot_unit or str(config.run.get("boot_unit", "dataset")),
                   map_kinds=kinds)
        phases = {"setup (suite + model)": setup_time, "cells": cells_time,
                  "scoring": time.perf_counter() - t, "total": time.perf_counter() - started}
        todo_keys = {p.key for p in todo}
        ran = [c for c in cells if c.get("status") == "ok" and c["key"] in todo_keys]
        for key in ("source_and_bn_pass", "static_estimators", "adaptation"):
            phases[f"cells: {key}"] = sum(c.get("timings", {}).get(key, 0.0) for c in ran)
        folder.record({"spec": spec.__dict__, "config": config.source,
                       "overrides": config.overrides, "cells": len(plans)}, counts, phases)
    failed = [c for c in cells if c.get("status") == "failed"]
    if failed:
        raise TTABenchError(f"{len(failed)} cell(s) failed, first: {failed[0]['split']['name']}: "
                            f"{failed[0]['error']} (results of the others are in {out})")


def execute_cells(bench: Benchmark, todo: list[CellPlan], out: Path, config: RunConfig, *,
                  executor: str, retries: int, ray_address: str | None,
                  jobs: int) -> dict[str, int]:
    """Run the pending cells with the chosen executor; returns the ok/failed counts."""
    backend: Backend
    if executor == "ray":
        from ttabench.runner.ray_executor import RayBackend

        backend = RayBackend(ray_address, config.data.get("executor", {}).get("ray", {}))
    elif jobs > 1 and len(todo) > 1:
        from ttabench.runner.pool import PoolBackend

        backend = PoolBackend(jobs=min(jobs, len(todo)))
    else:
        backend = LocalBackend()
    return run_cells(bench, todo, out, backend, retries=retries)


def seed_interval(estimates: list[float]) -> list[float]:
    """The 2.5th and 97.5th percentiles of the per-seed estimates, each rounded outward to an
    observed estimate (numpy's ``lower`` and ``higher`` methods): with fewer than 40 seeds this
    is their range, so it always contains every estimate, the reported one included."""
    return [float(np.percentile(estimates, 2.5, method="lower")),
            float(np.percentile(estimates, 97.5, method="higher"))]


class FolderSuite(Suite):
    """One unlabelled folder as a single-split suite (labels are -1, never used)."""

    name = "folder"

    def __init__(self, dataset, num_classes: int, root: str) -> None:
        self._dataset, self.num_classes, self.root = dataset, num_classes, root

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec("folder", "folder", None, "eval")]

    def dataset(self, split: SplitSpec):
        return self._dataset

    def record(self) -> dict[str, Any]:
        return {"suite": self.name, "root": self.root, "n": len(self._dataset)}


def input_geometry(preprocessing: dict[str, Any], image_size: int | None,
                   resize: int | None) -> tuple[int, int]:
    """(crop size, resize of the shorter side) for a folder of images fed to a model.

    Given options win. Otherwise the crop is the model's recorded ``input_size`` (else 224),
    and the resize its recorded ``resize``, else ``floor(crop / crop_pct)`` when it records a
    crop ratio (timm), else the crop itself when it records an input size (a 32 px CIFAR model
    sees its images whole), else 256 (the ImageNet evaluation transform).
    """
    def first(value: Any) -> int | None:
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return int(value) if value else None

    recorded = first(preprocessing.get("input_size"))
    size = image_size or recorded or 224
    if resize:
        return size, resize
    if first(preprocessing.get("resize")):
        return size, first(preprocessing["resize"])
    if preprocessing.get("crop_pct"):
        return size, int(math.floor(size / float(preprocessing["crop_pct"])))
    return size, size if recorded else 256


@click.command()
@with_options(common_options)
@click.option("--data", "data", required=True, help="Folder of unlabelled images (recursive).")
@click.option("--image-size", type=POSITIVE, default=None,
              help="Center-crop size (default: the model's input size, else 224).")
@click.option("--resize", type=POSITIVE, default=None,
              help="Resize the shorter side before the crop (default: the model's recorded "
                   "preprocessing, else 256).")
@click.option("--calibration", default=None, help="Calibration id or file for a score estimator.")
@click.option("--bootstrap", type=POSITIVE, default=5, help="Repeats over seeds for the interval.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimate(estimator, adapter, model, seed, steps, batch_size, data_dir, device, config_path,
             sets, threads, trust_pickle, data, image_size, resize, calibration, bootstrap,
             as_json) -> None:
    """Label-free accuracy estimate for one model on one folder of unlabelled images.

    Everything that can be checked is checked before any image is adapted on: the estimator
    (a score estimator needs a calibration fitted for this model), the adapter, the steps,
    and the folder's size against the probe and the batch.
    """
    from ttabench.paths import cache_dir
    from ttabench.runner.benchmark import _instantiate
    from ttabench.runner.execute import CellInputs, run_cell
    from ttabench.runner.preflight import (
        check_adapter_setup,
        check_split_size,
        check_steps,
        resolve_device,
    )
    from ttabench.suites.images import UnlabelledFolder

    config = load_config(config_path, overrides=list(sets))
    validate_config(config)
    names = _names(estimator)
    if len(names) != 1:
        raise TTABenchError("estimate takes exactly one --estimator")
    name = names[0]
    if calibration:
        config.data.setdefault("estimator", {}).setdefault(name, {})["calibration"] = calibration
    spec = build_spec(config, estimator=estimator, adapter=adapter, model=model, seed=seed,
                      steps=steps, batch_size=batch_size, device=device, baselines=False,
                      threads=threads, trust_pickle=trust_pickle)
    print_overrides(config, replaced_leaves({
        "adapter": ("--adapter", adapter), "model": ("--model", model), "seeds": ("--seed", seed),
        "steps": ("--steps", steps), "batch_size": ("--batch-size", batch_size),
        "device": ("--device", device), "threads": ("--threads", threads)}, "")
        + ([(_option("--calibration", calibration), ["estimator", name, "calibration"])]
           if calibration else []))
    if spec.threads:
        torch.set_num_threads(int(spec.threads))
    dev = resolve_device(spec.device)
    est = _instantiate("estimators", name, spec.estimator_params.get(name, {}))
    if "source_val" in est.needs:
        raise TTABenchError(f"{name} needs labelled source-validation data; on a bare folder "
                            "use an estimator that does not (see `ttabench ls estimators`)")
    check_steps(spec.steps, {name: est})
    adapter_name = spec.adapters[0]
    adapter_cls = registry.get("adapters", adapter_name)
    adapter_params = spec.adapter_params.get(adapter_name, {})
    loaded = registry.load_model(spec.model, cache_dir=cache_dir(), options=spec.model_options)
    try:
        est.check_calibration({"model": loaded.model_id, "num_classes": loaded.num_classes})
    except TTABenchError as err:
        raise TTABenchError(f"{err}; pass --calibration ID|FILE of a calibration fitted for "
                            f"this model (see `ttabench fit`)") from None
    check_adapter_setup(adapter_name, adapter_cls, adapter_params, loaded, None, "folder")
    size, shorter = input_geometry(loaded.preprocessing, image_size, resize)
    folder = UnlabelledFolder(data, image_size=size, resize=shorter)
    suite = FolderSuite(folder, loaded.num_classes, str(data))
    adapts = spec.steps > 0 or isinstance(est, TrajectoryEstimator)
    check_split_size(len(folder), str(data), {name: est}, spec.batch_size, adapts)
    seeds = [spec.seeds[0] + i for i in range(bootstrap)]
    values, estimates = [], []
    for s in seeds:
        out = run_cell(CellInputs(
            suite=suite, split=suite.splits()[0], model=loaded, adapter_cls=adapter_cls,
            adapter_params=adapter_params, estimators={name: est},
            seed=s, batch_size=spec.batch_size, steps=spec.steps, device=dev,
            show_progress=not as_json, labelled=False))
        result = out["results"].get(name) or out["views"][name].get(est.view or est.target)
        if result is None or result.failed is not None:
            raise TTABenchError(f"{name} failed: {result.failed if result else 'no result'}")
        if result.estimate is None:  # a plugin that said it could: do not run the other seeds
            raise TTABenchError(
                f"{name} gave a score ({result.value:.4g}) but no accuracy; pass --calibration "
                "ID|FILE (see `ttabench fit`)")
        values.append(result.value)
        estimates.append(result.estimate)
    report = {
        "estimator": name, "model": loaded.model_id, "adapter": adapter_name,
        "target": est.target, "data": str(data), "n_images": len(folder),
        "skipped_files": folder.skipped_files,
        "preprocessing": {"image_size": size, "resize": shorter},
        "estimate": estimates[0], "score": values[0], "seeds": seeds,
        "interval": seed_interval(estimates),
        "estimates": estimates, "params": est.params(),
        "trajectory": isinstance(est, TrajectoryEstimator),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        lo, hi = report["interval"]
        skipped = report["skipped_files"]
        click.echo(f"{name}: estimated {est.target} accuracy {100 * estimates[0]:.2f}% "
                   f"(95% interval over {len(seeds)} stream seeds: {100 * lo:.2f}-{100 * hi:.2f}%) "
                   f"on {len(folder)} images of {data}"
                   + (f" ({skipped} unreadable file(s) skipped)" if skipped else ""))
    sys.stdout.flush()
