"""``ttabench run`` and its alias ``ttabench continual`` (and what ``ttabench estimate`` and
``ttabench calibrate`` share with them: ``FolderSuite``, ``input_geometry``).

Their options are made from the run specification (``ttabench.spec.RUN_OPTIONS``): one click
option per flagged option, each defaulting to the configuration's value, which defaults to the
option's own; what the command line gives is checked by the same rules as the file.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from ttabench import registry
from ttabench.api import SplitSpec, Suite
from ttabench.config_schema import check_layer
from ttabench.config_schema import validate as validate_config
from ttabench.errors import Interrupted, TTABenchError
from ttabench.records import Cell
from ttabench.runner.benchmark import Benchmark, collect_cells, pending_cells, plugin_record
from ttabench.runner.cells import CellPlan, is_finished, parse_shard
from ttabench.runner.config import (
    Layer,
    RunConfig,
    build_spec,
    load_config,
    override_notes,
)
from ttabench.runner.device_facts import device_line
from ttabench.runner.executor import Backend, LocalBackend, run_cells
from ttabench.runner.preflight import (
    check_pool_estimators,
    check_ray_address,
    planned_device,
    resolve_device,
)
from ttabench.runner.rescore import score_from_cache, write_cells
from ttabench.runner.resources import cpu_cores, resolve_jobs
from ttabench.runner.run_folder import RunFolder
from ttabench.spec import (
    RunSpec,
    ScoringSpec,
    given_options,
    option,
    shown,
    spec_options,
    trust_options,
)


def check_given(given: dict[str, Any]) -> None:
    """Check the command line's values by the configuration's rules, one line naming the flag
    (names are checked where they are resolved: registry, splits)."""
    for name, value in given.items():
        opt = option(name)
        if opt.names:
            continue
        node: Any = value
        for key in reversed(opt.path):
            node = {key: node}
        check_layer(Layer(f"{opt.flags[0]} {shown(value)}", {"run": node}))


def print_overrides(config: RunConfig, given: dict[str, Any], suite: str,
                    extra: list[tuple[str, list[str]]] = ()) -> None:
    """One stderr line saying which file values the command line replaces (when any)."""
    leaves = [(f"{option(n).flags[0]} {shown(v)}", option(n).leaf) for n, v in given.items()
              if v is not False]
    notes = override_notes(config, leaves + list(extra))
    if notes:
        click.echo("overrides: " + "; ".join(notes), err=True)


def finish_run(output: Path, cells: list[Cell], scoring: ScoringSpec,
               echo: Callable[[str], None] = click.echo) -> None:
    """Score the finished cells, write the leaderboard files and print the summary."""
    from ttabench.scoring import build_leaderboard, format_console, write_leaderboard
    from ttabench.scoring.report_html import write_report

    if not any(c.status == "ok" for c in cells):
        echo("no finished cells to score")
        return
    board = build_leaderboard(cells, scoring)
    paths = [*write_leaderboard(board, output), write_report(board, cells, output)]
    echo(format_console(board))
    echo("wrote " + ", ".join(str(p) for p in paths))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@spec_options()
@click.option("--config", "config_path", default=None, help="Config file (default ./plugins.toml).")
@click.option("--set", "sets", multiple=True, metavar="SECTION.NAME.KEY=VALUE",
              help="Override a config leaf (VALUE read as TOML), e.g. adapter.tent.lr=0.01.")
@click.option("--n-examples", type=click.IntRange(min=1), default=None, help="Images per split.")
@trust_options
@click.option("--shard", default=None, help="Run only shard i of n (i/n, 1-based).")
@click.option("--quick", is_flag=True, help="Apply the config's [quick] table: a smoke run.")
@click.option("--no-baselines", is_flag=True, help="Do not add the config's baselines.")
@click.option("--retries", type=click.IntRange(min=0), default=0,
              help="Retries of a failing cell before it is recorded failed.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local")
@click.option("--ray-address", default=None, help="Ray cluster address (default: start a local one).")
@click.option("--dry-run", is_flag=True,
              help="Print the planned cells and their protocol facts; run nothing.")
@click.option("--allow-deviation", is_flag=True,
              help="Run although options change protocol facts of the preset (recorded).")
def run(config_path: str | None, sets: tuple[str, ...], n_examples: int | None,
        trust_pickle: bool, trust_torchscript: bool, shard: str | None, quick: bool,
        no_baselines: bool, retries: int, executor: str, ray_address: str | None,
        dry_run: bool, allow_deviation: bool, **params: Any) -> None:
    """Run cells (model x suite split x adapter x estimators x seed) and score them.

    \b
    The stream (--stream) decides what a cell is:
      reset-each-split  each split alone, the adapter reset before it (default)
                          ttabench run -e aetta -a tent
      continual         the splits one after another in a seeded order, no reset
                          ttabench run --stream continual -a tent -e aetta --steps-per-split 30
      gradual           continual, each split sliding into the next (CCC-style mixture)
                          ttabench run --stream gradual -a tent -e aetta
      mixed             every batch drawn from all splits at once
                          ttabench run --stream mixed -a rdumb -e ac
      KIND+correlated   label shift: classes in Dirichlet(--delta) runs
                          ttabench run --stream continual+correlated --delta 0.1 -a tent -e ac
      --batch-size 1    with --stats-window 64: batch statistics of the last 64 images
                          ttabench run --batch-size 1 --stats-window 64 -a tent -e aetta
    Every estimator is scored against the online accuracy of each window of --window steps.

    One run per output folder: a second run into a folder in use is refused. SIGTERM stops
    like Ctrl-C; finished cells are kept and a rerun of the same command resumes.
    """
    started = time.perf_counter()
    if ray_address is not None:
        if executor != "ray":
            raise TTABenchError("--ray-address needs --executor ray")
        check_ray_address(ray_address)
    config = load_config(config_path, quick=quick, overrides=list(sets))
    validate_config(config)
    given = given_options(params)
    check_given(given)
    from ttabench import preset as presets

    protocol_preset = presets.chosen(given.get("preset"), config)
    if protocol_preset is not None:
        for note in presets.apply(config, protocol_preset):
            click.echo(note, err=True)
    spec = build_spec(config, baselines=not no_baselines, trust_pickle=trust_pickle,
                      trust_torchscript=trust_torchscript, n_examples=n_examples,
                      accuracy_only=protocol_preset is not None, **given)
    spec.plugins = list(click.get_current_context().find_root().params.get("plugins") or ())
    if protocol_preset is not None:
        if dry_run:
            click.echo("\n".join(presets.describe(protocol_preset, spec)))
        spec.preset = presets.check(protocol_preset, spec, allow_deviation)
    local = executor != "ray"  # Ray tasks find their device on their own node
    if not local:
        from ttabench.runner.ray_executor import task_device

        spec.device = task_device(spec.device, config.data.get("executor", {}).get("ray", {}))
    device_type = (resolve_device(spec.device) if local else planned_device(spec.device)).type
    n_jobs = resolve_jobs(spec.jobs, device_type, cpu_cores())
    spec.jobs = n_jobs if executor == "local" else 1
    out = Path(str(given.get("output") or config.run["output"]))
    if quick and not given.get("output"):
        out = out.with_name(out.name + "-quick")
    spec.output = None if dry_run else str(out)
    shard_of = parse_shard(shard)
    click.echo(f"config: {config.source}; suite {spec.suite}, model{'s' * (len(spec.model_list) > 1)} "
               f"{', '.join(spec.model_list)}, adapters {', '.join(spec.adapters)}, "
               f"estimators {', '.join(spec.estimators)}, stream {spec.stream.name}")
    # said once every check before work has passed (an error is then the one line on stderr)
    examples = ([(f"--n-examples {n_examples}", ["suite", spec.suite, "n_examples"])]
                if n_examples else [])
    if dry_run:  # plans and prints; claims no folder and writes nothing
        from ttabench.runner.dry_run import describe

        check_pools(spec)
        lines = []
        for bench in load_benchmarks(spec, show_progress=False, runs_cells=local):
            lines += describe(bench, bench.plan())
        print_overrides(config, given, spec.suite, examples)
        click.echo("\n".join(lines))
        return
    with RunFolder.claim(out, shard_of) as folder:
        check_pools(spec)  # after the claim: a run into a folder in use is refused at once
        t = time.perf_counter()
        benches = load_benchmarks(spec, show_progress=True, runs_cells=local)
        first = benches[0]
        click.echo(f"device: {device_line(first.device, first.device_facts, first.threads)}")
        setup_time = time.perf_counter() - t
        plans = {bench.spec.model: bench.plan() for bench in benches}
        every = [plan for model_plans in plans.values() for plan in model_plans]
        print_overrides(config, given, spec.suite, examples)
        todo = {model: pending_cells(model_plans, out, shard_of)
                for model, model_plans in plans.items()}
        click.echo(f"{len(every)} cells planned, {sum(map(len, todo.values()))} to run"
                   + (f" over {len(plans)} models" if len(plans) > 1 else "")
                   + (f" (shard {shard})" if shard else "") + f"; output {out}")
        t = time.perf_counter()
        counts = {"ok": 0, "failed": 0}
        try:
            for bench in benches:
                ran = execute_cells(bench, todo[bench.spec.model], out, config,
                                    executor=executor, retries=retries,
                                    ray_address=ray_address, jobs=n_jobs)
                counts = {k: counts[k] + ran.get(k, 0) for k in counts}
        except KeyboardInterrupt as stop:
            finished = sum(is_finished(out, p.key) for p in every)
            raise Interrupted(stop.signum if isinstance(stop, Interrupted) else signal.SIGINT,
                              f"{finished} of {len(every)} cells finished are kept in {out}; "
                              "rerun the same command to resume") from None
        cells_time = time.perf_counter() - t
        t = time.perf_counter()
        cells = collect_cells(out, every)
        pool_phase(benches[0], cells, out)
        pool_time = time.perf_counter() - t
        t = time.perf_counter()
        finish_run(out, cells, spec.scoring)
        phases = {"setup (suite + model)": setup_time, "cells": cells_time,
                  "pool estimators": pool_time,
                  "scoring": time.perf_counter() - t, "total": time.perf_counter() - started}
        todo_keys = {p.key for model_todo in todo.values() for p in model_todo}
        ran_cells = [c for c in cells if c.status == "ok" and c.key in todo_keys]
        for key in ("source_and_bn_pass", "static_estimators", "adaptation"):
            phases[f"cells: {key}"] = sum(c.timings.get(key, 0.0) for c in ran_cells)
        folder.record({"spec": spec.to_dict(), "scoring": spec.to_dict()["scoring"],
                       "config": config.source, "overrides": config.overrides,
                       "cells": len(every)}, counts, phases)
    failed = [c for c in cells if c.status == "failed"]
    if failed:
        raise TTABenchError(f"{len(failed)} cell(s) failed, first: {failed[0].split['name']}: "
                            f"{failed[0].error} (results of the others are in {out})")


def check_pools(spec: RunSpec) -> None:
    """Refuse a pool estimator the run cannot feed (``check_pool_estimators``)."""
    check_pool_estimators({n: registry.get("estimators", n) for n in spec.estimators},
                          spec.model_list, spec.logit_cache, spec.steps, spec.stream)


def load_benchmarks(spec: RunSpec, show_progress: bool, runs_cells: bool) -> list[Benchmark]:
    """One loaded ``Benchmark`` per model of the run, in order (the suite loaded once)."""
    benches: list[Benchmark] = []
    for model in spec.model_list:
        benches.append(Benchmark(spec.for_model(model), show_progress=show_progress,
                                 runs_cells=runs_cells,
                                 suite=benches[0].suite if benches else None))
    return benches


def pool_phase(bench: Benchmark, cells: list[Cell], out: Path) -> None:
    """Compute the run's pool estimators for every finished cell from the logit cache, with
    each cell's peers (``ttabench.runner.rescore``), and rewrite the cells."""
    if not bench.pool_estimators or bench.cache is None:
        return
    roles = {name: "baseline" if name in bench.spec.baselines else "candidate"
             for name in bench.pool_estimators}
    updated = score_from_cache(cells, dict(bench.pool_estimators), roles, bench.cache,
                               lambda name: plugin_record("estimators", name))
    write_cells(out, updated)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": []})
@click.pass_context
def continual(ctx: click.Context) -> None:
    """Alias of `ttabench run --stream continual` (every option of run; see `run --help`)."""
    run.main(["--stream", "continual", *ctx.args], prog_name="ttabench continual",
             standalone_mode=False)


def execute_cells(bench: Benchmark, todo: list[CellPlan], out: Path, config: RunConfig, *,
                  executor: str, retries: int, ray_address: str | None,
                  jobs: int) -> dict[str, int]:
    """Run the pending cells with the chosen executor; returns the ok/failed counts."""
    backend: Backend
    if executor == "ray":
        from ttabench.runner.ray_executor import RayBackend

        backend = RayBackend(ray_address, config.data.get("executor", {}).get("ray", {}))
    elif jobs > 1 and len(todo) > 1:
        from ttabench.runner.pool import PoolBackend, visible_gpus, worker_gpus

        gpus = []
        if bench.device.type == "cuda":
            visible = visible_gpus()
            gpus = worker_gpus(bench.device, visible,
                               [torch.cuda.get_device_name(i) for i in range(len(visible))])
        backend = PoolBackend(jobs=min(jobs, len(todo)), gpus=gpus)
    else:
        backend = LocalBackend()
    return run_cells(bench, todo, out, backend, retries=retries)


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
