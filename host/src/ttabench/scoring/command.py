"""CLI commands ``ttabench leaderboard`` and ``ttabench fit`` (loaded lazily by the CLI group).

Errors are raised as TTABenchError; the CLI prints them as one line.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
import numpy as np

from ttabench.errors import TTABenchError
from ttabench.records import Cell
from ttabench.store import check_writable_folder
from ttabench.scoring.leaderboard import build_leaderboard, format_console, load_cells, write_leaderboard
from ttabench.scoring.report_html import write_report
from ttabench.scoring.maps import (
    TARGETS,
    VALUE,
    fit_map,
    labelled_points,
    protocol_facts,
    record,
    role,
    score_of,
)
from ttabench.scoring.metrics import mae_by_dataset
from ttabench.spec import ScoringSpec, given_options, spec_options


def recorded_scoring(dirs: list[Path]) -> dict[str, Any]:
    """The scoring options the run that made ``dirs[0]`` recorded in its ``run.json`` (empty
    when it has none)."""
    try:
        record = json.loads((Path(dirs[0]) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    scoring = record.get("scoring") if isinstance(record, dict) else None
    return dict(scoring) if isinstance(scoring, dict) else {}


@click.command("leaderboard")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Folder for the leaderboard files (default: the first DIR).")
@click.option("--rescore", is_flag=True,
              help="First compute static and pool estimators from each DIR's logit cache (no "
                   "model is loaded, no forward pass): those named by --estimator, else every "
                   "static and pool estimator of the run (its run.json); their records in the "
                   "cells are replaced.")
@click.option("--estimator", "-e", "rescored", multiple=True,
              help="With --rescore: estimator(s) to add or recompute (repeatable or comma list).")
@click.option("--set", "sets", multiple=True, metavar="estimator.NAME.KEY=VALUE",
              help="With --rescore: an estimator parameter (VALUE read as TOML).")
@spec_options("n_boot", "boot_unit", "boot_seed", "map_kinds")
def leaderboard(dirs: tuple[Path, ...], output: Path | None, rescore: bool,
                rescored: tuple[str, ...], sets: tuple[str, ...], **params: Any) -> None:
    """Rebuild the leaderboard from the finished cells of one or more run folders (DIR...).

    Several folders (e.g. the shards of one run) are merged. The scoring options default to
    those the run recorded in the first DIR's run.json (else their defaults). Writes
    leaderboard.csv/.md/.html/.json, pairs.csv, scatter.png and report.html, and prints the
    summary.

    \b
    With --rescore, estimators that read stored outputs only are computed first, e.g. after a
    finished pool run:  ttabench leaderboard runs/pool --rescore -e aline-s,atc-mc
    """
    given = given_options(params)
    scoring = ScoringSpec.from_run({**recorded_scoring(list(dirs)), **given})
    out_dir = output or dirs[0]
    check_writable_folder(out_dir, "--output")
    if rescore:
        from ttabench.runner.rescore import rescore_folders

        rescore_folders(list(dirs), list(rescored), list(sets))
    elif rescored or sets:
        raise TTABenchError("--estimator and --set name what --rescore computes; add --rescore")
    ignored: list[str] = []
    cells = load_cells(list(dirs), ignored)
    report_ignored(ignored)
    lb = build_leaderboard(cells, scoring)
    paths = [*write_leaderboard(lb, out_dir), write_report(lb, cells, out_dir)]
    click.echo(format_console(lb), nl=False)
    click.echo(f"wrote {len(paths)} files to {out_dir}")


def report_ignored(ignored: list[str]) -> None:
    """One stderr line when cell files were left out as damaged (a rerun recomputes them)."""
    if ignored:
        click.echo(f"ignored {len(ignored)} damaged cell file(s) (a rerun of their run "
                   f"recomputes them); first: {ignored[0]}")


def _only(cells: list[Cell], field: str, wanted: str | None, option: str) -> list[Cell]:
    """Cells whose ``field`` is ``wanted``; with no choice, insist the cells agree on it."""
    found = sorted({str(getattr(c, field)) for c in cells})
    if wanted is not None:
        if wanted not in found:
            raise TTABenchError(f"no cells with {field} {wanted!r}; found: {', '.join(found)}")
        return [c for c in cells if str(getattr(c, field)) == wanted]
    if len(found) > 1:
        raise TTABenchError(
            f"the cells come from several {field}s ({', '.join(found)}); choose one with {option}"
        )
    return cells


def _select_points(
    cells: list[Cell], estimator: str, score: str, target: str | None,
    splits: str, model: str | None, adapter: str | None,
) -> tuple[list[Cell], np.ndarray, np.ndarray, list[str], str]:
    """The labelled cells, scores, accuracies and datasets a fit uses, and the target (the
    scores are read in the target's view)."""
    ok = [c for c in cells if c.status == "ok"]
    if not ok:
        raise TTABenchError("no finished cells in these folders (every cell failed)")
    names = sorted({n for c in ok for n in c.estimators})
    if estimator not in names:
        raise TTABenchError(
            f"estimator {estimator!r} is not in these cells; found: {', '.join(names) or 'none'}"
        )
    ok = _only(ok, "model", model, "--model")
    ok = _only(ok, "adapter", adapter, "--adapter")
    declared = next(c.estimators[estimator].target for c in ok if estimator in c.estimators)
    target = target or declared
    recs = [r for c in ok if (r := record(c, estimator, target)) is not None]
    if not recs:
        reasons = sorted({str(rec.skipped or rec.failure(target)) for c in ok
                          if (rec := c.estimators.get(estimator)) is not None})
        raise TTABenchError(f"estimator {estimator!r} has no result in the {target} view of any "
                            f"cell: {'; '.join(reasons)}")
    if score != VALUE and not any(score_of(r, score) is not None for r in recs):
        recorded = sorted({s for r in recs for s in r.scores})
        raise TTABenchError(
            f"estimator {estimator!r} records no score {score!r}; recorded: "
            f"{', '.join(recorded) or 'none'}"
        )
    pool = ok if splits == "all" else [c for c in ok if role(c) == "calibration"]
    if not pool:
        raise TTABenchError(
            "no calibration-role cells in these folders; run calibration splits or pass --splits all"
        )
    return (*labelled_points(pool, estimator, score, target), target)


@click.command("fit")
@click.argument("dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--estimator", required=True, help="Estimator whose score is mapped.")
@click.option("--score", default=VALUE, show_default=True,
              help="Which score: the estimator's value, or a name from its scores (e.g. wf@200).")
@click.option("--degree", type=click.Choice(["1", "2", "3"]), default="2", show_default=True)
@click.option("--monotone", is_flag=True, help="Constrain the map to be non-increasing.")
@click.option("--target", type=click.Choice(list(TARGETS)), default=None,
              help="Accuracy to fit (default: the estimator's declared target).")
@click.option("--splits", type=click.Choice(["calibration", "all"]), default="calibration",
              show_default=True, help="Fit on calibration-role cells only, or on every labelled cell.")
@click.option("--model", default=None, help="Use only cells of this model.")
@click.option("--adapter", default=None, help="Use only cells of this adapter.")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="Calibration JSON file.")
@click.option("--id", "cal_id", default=None, help="Calibration id (default: derived from the fit).")
def fit(
    dirs: tuple[Path, ...], estimator: str, score: str, degree: str, monotone: bool,
    target: str | None, splits: str, model: str | None, adapter: str | None, output: Path,
    cal_id: str | None,
) -> None:
    """Fit a score-to-accuracy map for an estimator on labelled cells of run folders (DIR...).

    Writes a calibration JSON (polynomial, fraction output) that an estimator can load; it
    records the model, suite, steps and probe size it was fitted for.
    """
    deg = int(degree)
    check_writable_folder(output.parent, "--output")
    if output.is_dir():
        raise TTABenchError(f"--output {output} is a folder; name the calibration JSON file")
    ignored: list[str] = []
    cells = load_cells(list(dirs), ignored)
    report_ignored(ignored)
    chosen, x, y, datasets, target = _select_points(
        cells, estimator, score, target, splits, model, adapter
    )
    if len(x) <= deg:
        raise TTABenchError(
            f"too few points: {len(x)} labelled {'' if splits == 'all' else 'calibration '}cells "
            f"with a {score!r} score and a {target} accuracy; a degree-{deg} map needs at least "
            f"{deg + 1}"
        )
    date = datetime.now(timezone.utc).date().isoformat()
    provenance = (
        f"ttabench fit on {len(x)} {'labelled' if splits == 'all' else 'calibration'} cells "
        f"({len(set(datasets))} datasets) from {', '.join(map(str, dirs))} on {date}"
        + (" (monotone)" if monotone else "")
    )
    # the calibration's input: what the estimator calls its value (e.g. "weighted_flips"),
    # or the named score the map was fitted on
    declared = {name for c in chosen if (name := c.estimators[estimator].input) is not None}
    map_input = declared.pop() if score == VALUE and len(declared) == 1 else score
    cal = fit_map(
        x, y, deg, estimator=estimator, input=map_input, target=target,
        fitted_for=protocol_facts(chosen, estimator, score), provenance=provenance,
        monotone=monotone, id=cal_id,
    )
    cal.save(output)
    fitted = np.asarray(cal(x))
    click.echo(
        f"wrote {output}: degree-{deg} map of {estimator} {score} to {target} accuracy from "
        f"{len(x)} points; MAE on them {mae_by_dataset(fitted, y, datasets):.2f} pp"
    )
