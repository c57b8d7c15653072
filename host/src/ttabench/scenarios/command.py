"""``ttabench continual``: run adapters through a continual scenario and print online accuracy.

Every cell is written to ``<output>/scenarios/<key>.json`` (see ``ttabench.scenarios.cells``);
a rerun skips finished cells. Bad input is one ``error:`` line and exit status 2, before any
adaptation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.config_schema import MAX_SEED, plugin_parameters
from ttabench.runner.store import check_writable_folder
from ttabench.scenarios.cells import ScenarioBench, ScenarioRun
from ttabench.scenarios.spec import KINDS, ROLES, ScenarioSpec
from ttabench.scenarios.stream import SPLIT_SEED_STRIDE

SET_SECTIONS = ("adapter", "estimator")
#: The largest stream seed: split k's stream is seeded ``seed * SPLIT_SEED_STRIDE + k``, which
#: must stay a 64-bit seed for every split a scenario can hold.
MAX_STREAM_SEED = (MAX_SEED - SPLIT_SEED_STRIDE) // SPLIT_SEED_STRIDE


def parse_set(items: tuple[str, ...]) -> dict[str, dict[str, dict[str, Any]]]:
    """``adapter.NAME.KEY=VALUE`` / ``estimator.NAME.KEY=VALUE`` (VALUE as JSON when it parses,
    else a string) into ``{section: {name: {key: value}}}``; NAME may hold ``:``."""
    out: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SET_SECTIONS}
    for item in items:
        path, sep, raw = item.partition("=")
        section, _, rest = path.partition(".")
        name, _, key = rest.rpartition(".")
        if not sep or section not in SET_SECTIONS or not name or not key:
            raise TTABenchError(f"--set {item!r}: expected adapter.NAME.KEY=VALUE or "
                                "estimator.NAME.KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        except RecursionError:
            raise TTABenchError(f"--set {path}: the value is nested too deeply") from None
        out[section].setdefault(name, {})[key] = value
    return out


def parse_severities(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise TTABenchError(f"--severities {text!r}: expected integers like 5 or 3,4,5") from None
    if not values:
        raise TTABenchError("--severities: give at least one severity")
    return values


@click.command("continual")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Run folder (cells under scenarios/).")
@click.option("-a", "--adapter", "adapters", multiple=True, required=True,
              help="Adapter (repeatable), e.g. tent, rdumb, guard:tent.")
@click.option("-e", "--estimator", "estimators", multiple=True,
              help="Per-window estimator (repeatable), e.g. aetta.")
@click.option("-s", "--suite", default="mnist-c", show_default=True)
@click.option("-m", "--model", default="mnist-cnn", show_default=True)
@click.option("--kind", type=click.Choice(KINDS), default="sequence", show_default=True)
@click.option("--role", type=click.Choice(ROLES), default="eval", show_default=True,
              help="Scenario from the suite's eval splits or its calibration splits.")
@click.option("--severities", default="5", show_default=True, help="Comma list.")
@click.option("--steps-per-split", type=click.IntRange(min=1), default=80, show_default=True)
@click.option("--window", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--order-seed", type=click.IntRange(0, MAX_SEED), default=0, show_default=True)
@click.option("--seed", "seeds", type=click.IntRange(0, MAX_STREAM_SEED), multiple=True,
              help="Stream seed (repeatable; 0).")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="SECTION.NAME.KEY=VALUE",
              help="A parameter: adapter.tent.lr=0.05, estimator.aetta.n_dropouts=5.")
@click.option("--device", default=None)
@click.option("--threads", type=click.IntRange(min=0), default=None)
@click.option("--data-dir", default=None)
def continual(output: Path, adapters: tuple[str, ...], estimators: tuple[str, ...], suite: str,
              model: str, kind: str, role: str, severities: str, steps_per_split: int,
              window: int, order_seed: int, seeds: tuple[int, ...], batch_size: int,
              sets: tuple[str, ...], device: str | None, threads: int | None,
              data_dir: str | None) -> None:
    """Run ADAPTERs through one continual scenario (no reset between splits)."""
    params = parse_set(sets)
    spec = ScenarioSpec(kind=kind, role=role, severities=parse_severities(severities),
                        steps_per_split=steps_per_split, window=window, order_seed=order_seed)
    for name in estimators:  # an estimator with a window parameter gets the scenario's
        if "window" in (plugin_parameters(registry.get("estimators", name), 0) or {}):
            given = params["estimator"].setdefault(name, {}).setdefault("window", window)
            if given != window:
                raise TTABenchError(f"--set estimator.{name}.window={given!r} contradicts "
                                    f"--window {window}: the estimator's windows must be the "
                                    "scenario's; drop the --set or change --window")
    if output.exists() and not output.is_dir():
        raise TTABenchError(f"--output {output} is not a folder")
    check_writable_folder(output, "--output")
    bench = ScenarioBench(ScenarioRun(
        output=output, spec=spec, adapters=list(adapters), suite=suite, model=model,
        seeds=list(seeds) or [0], estimators=list(estimators),
        adapter_params=params["adapter"], estimator_params=params["estimator"],
        batch_size=batch_size, device=device, threads=threads or None, data_dir=data_dir))
    records = bench.execute(show_progress=True)
    for record in records:
        maes = ", ".join(f"{name} MAE {100 * e['mae']:.2f} pp"
                         for name, e in sorted(record["estimators"].items()))
        click.echo(f"{record['adapter']} seed {record['seed']}: online accuracy "
                   f"{100 * record['online_accuracy']:.2f}%, resets "
                   f"{len(record['reset_steps'])}" + (f"; {maes}" if maes else ""))
    click.echo(f"{len(records)} scenario cell(s) in {output / 'scenarios'}")
