"""The paper's Table 1 (and its ablations) from one command, for users who have the data.

    python benchmarks/paper_protocol.py /data                     # Table 1: every dataset found
    python benchmarks/paper_protocol.py /data --dry-run           # the protocol, nothing run
    python benchmarks/paper_protocol.py /data --ablation stop-step
    python benchmarks/paper_protocol.py /data --shipped-f         # the paper's f, no refit

Steps (config ``benchmarks/paper_protocol.toml``: torchvision ResNet-50 V1, RDumb, batch 64,
faithful Weighted Flips: probe of 1,000 images drawn from a separate shuffled pass, snapshots
at 0 and 990):

1. ImageNet-C's calibration splits (the 4 holdout corruptions x 5 severities and clean val,
   all 50,000 images each) -> ``<out>/calibration``;
2. ``ttabench fit --target source``: f maps WF to the frozen eval-mode model's accuracy, as the
   paper's f does (``--shipped-f`` uses ``rn50-v1-wf-quadratic`` instead);
3. every Table-1 dataset of ``ttabench.suites.shifts.SHIFTS`` present under DATA (a dataset
   whose folders are missing is listed as skipped, with the reason), with that f and the
   ImageNet val folder as DoC's and ATC's source validation -> ``<out>/<shift>``;
4. ``ttabench leaderboard`` over all of them -> ``<out>/all``: read the ``source`` column of the
   ``enigma (own)`` entry and the baselines; datasets are averaged per Table-1 row.

Ablations (``--ablation``), each on the paper's 10-dataset subset (IN-C, IN-C-bar, 3DCC, V2 and
the 6 ImageNet-D domains) unless said otherwise, with a report ``<out>/report.md``:

- ``stop-step``: one trajectory with snapshots at 0, 50, 100, 250, 500 and 1000; f refit on the
  calibration cells for each stop step N (score ``wf@N``), MAE per N;
- ``probe-size``: probe of 50, 100, 250, 500 and 1000 images, f refit per size;
- ``limited-memory``: a 100-image probe whose WF is multiplied by 10 (``flip_scale``), with
  the 1,000-image f;
- ``tent``: Tent instead of RDumb, with RDumb's f (the paper's Table 5);
- ``temperature``: enigma and enigma+ts (temperature-scaled step-0 confidences) side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CONFIG = Path(__file__).with_name("paper_protocol.toml")
SHIPPED_F = "rn50-v1-wf-quadratic"
CALIBRATION_SPLITS = "speckle_noise-*,gaussian_blur-*,spatter-*,saturate-*,clean"
ABLATION_SHIFTS = ("imagenet-c", "imagenet-c-bar", "imagenet-3dcc", "imagenet-v2",
                   "imagenet-d-real", "imagenet-d-painting", "imagenet-d-clipart",
                   "imagenet-d-sketch", "imagenet-d-infograph", "imagenet-d-quickdraw")
STOP_STEPS = (50, 100, 250, 500, 1000)
PROBE_SIZES = (50, 100, 250, 500, 1000)


@dataclass
class Variant:
    """One configuration of an ablation: ``--set`` overrides, the adapter, the estimators, and
    the scores to refit f on (``value`` or ``wf@N``)."""

    name: str
    sets: list[str] = field(default_factory=list)
    adapter: str = "rdumb"
    estimators: tuple[str, ...] = ("enigma",)
    scores: tuple[str, ...] = ("value",)
    refit: bool = True


def refuse(message: str) -> SystemExit:
    """Bad input or missing data, as the ``ttabench`` command line reports it: one
    ``error:`` line on stderr and exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def ablation_variants(name: str) -> list[Variant]:
    """The variants of an ablation (see the module docstring)."""
    free = ["estimator.enigma.faithful=false", "estimator.enigma.probe_draw=reference"]
    if name == "stop-step":
        steps = ", ".join(str(s) for s in STOP_STEPS)
        return [Variant("stop-step", free + [f"estimator.enigma.checkpoints=[0, {steps}]",
                                             f"estimator.enigma.estimate_at={STOP_STEPS[-1]}"],
                        scores=tuple(f"wf@{s}" for s in STOP_STEPS))]
    if name == "probe-size":
        return [Variant(f"probe-{p}", free + [f"estimator.enigma.probe_size={p}"])
                for p in PROBE_SIZES]
    if name == "limited-memory":
        return [Variant("probe-100-x10", free + ["estimator.enigma.probe_size=100",
                                                 "estimator.enigma.flip_scale=10"], refit=False)]
    if name == "tent":
        return [Variant("tent", adapter="tent", refit=False)]
    if name == "temperature":
        return [Variant("temperature", ["estimator.enigma+ts.faithful=true"],
                        estimators=("enigma", "enigma+ts"))]
    raise refuse(f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")


ABLATIONS = ("stop-step", "probe-size", "limited-memory", "tent", "temperature")


def ttabench(args: list[str], plugins: list[str]) -> int:
    """Run one ttabench command in this process; its exit status."""
    from ttabench.cli import main

    argv = [f"--plugin={p}" for p in plugins] + args
    print("$ ttabench " + " ".join(argv), flush=True)
    try:
        code = main.main(args=argv, prog_name="ttabench", standalone_mode=False)
    except SystemExit as stop:
        code = stop.code
    return int(code or 0)


def present_shifts(data: Path, keys: tuple[str, ...] | None = None,
                   shift_sets: dict[str, list[str]] | None = None,
                   ) -> tuple[list[str], dict[str, str]]:
    """The Table-1 datasets whose folders are under ``data`` (with the ``suite.imagenet-shift``
    overrides of ``shift_sets``), and why the others are not."""
    from ttabench.errors import TTABenchError
    from ttabench.runner.config import parse_value
    from ttabench.suites.shifts import SHIFTS, ShiftSuite

    prefix = "suite.imagenet-shift."
    found, skipped = [], {}
    for key in keys or tuple(SHIFTS):
        options = dict(item[len(prefix):].split("=", 1) for item in (shift_sets or {}).get(key, [])
                       if item.startswith(prefix))
        try:
            ShiftSuite(data, shift=key, **{k: parse_value(v) for k, v in options.items()})
            found.append(key)
        except TTABenchError as err:
            skipped[key] = str(err)
    return found, skipped


@dataclass
class Protocol:
    """Where the data and results are, and what every ``ttabench run`` gets: ``extra``
    command-line arguments for every run, ``shift_sets`` further ``--set`` overrides per
    dataset (e.g. another folder for one of them)."""

    data: Path
    out: Path
    model: str | None = None
    config: Path = CONFIG
    plugins: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    dry_run: bool = False
    shift_sets: dict[str, list[str]] = field(default_factory=dict)
    run: Callable[[list[str], list[str]], int] = ttabench

    def call(self, args: list[str]) -> None:
        code = self.run(args, self.plugins)
        if code:
            print(f"error: ttabench {args[0]} exited with status {code}", file=sys.stderr)
            raise SystemExit(code)

    def run_shift(self, shift: str, out: Path, sets: list[str], estimators: tuple[str, ...],
                  adapter: str = "rdumb", splits: str | None = None,
                  deviation: bool = False) -> None:
        """One ``ttabench run`` of dataset ``shift``. The config's preset (``wf-table1``)
        refuses options that change its protocol; an ablation (``deviation``), another model,
        extra options or per-dataset overrides run with ``--allow-deviation``, recorded in
        every cell."""
        args = ["run", "--config", str(self.config), "--data-dir", str(self.data),
                "-s", "imagenet-shift", "--set", f"suite.imagenet-shift.shift={shift}",
                "-a", adapter, "-o", str(out), *[part for e in estimators for part in ("-e", e)]]
        args += [f"--set={s}" for s in sets + self.shift_sets.get(shift, [])] + self.extra
        if deviation or self.model or self.extra or self.shift_sets.get(shift):
            args += ["--allow-deviation"]
        args += ["-m", self.model] if self.model else []
        args += ["--splits", splits] if splits else []
        args += ["--dry-run"] if self.dry_run else []
        self.call(args)

    def fit(self, cells: Path, output: Path, estimator: str = "enigma",
            score: str = "value") -> None:
        self.call(["fit", str(cells), "--estimator", estimator, "--score", score, "--degree", "2",
                   "--target", "source", "--output", str(output)])


def table1(p: Protocol, shipped_f: bool = False, keys: tuple[str, ...] | None = None) -> list[str]:
    """Steps 1-4 of the module docstring; returns the datasets run."""
    found, skipped = present_shifts(p.data, keys, p.shift_sets)
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}")
    if not found:
        raise refuse(f"no Table-1 dataset found under {p.data}")
    if "imagenet-c" not in found and not shipped_f:
        raise refuse("ImageNet-C (its holdout corruptions and clean val) is needed "
                         "to fit f; pass --shipped-f to use the paper's f")
    f = SHIPPED_F
    if not shipped_f:
        p.run_shift("imagenet-c", p.out / "calibration", [], ("enigma",),
                    splits=CALIBRATION_SPLITS)
        if p.dry_run:
            return found
        f = str(p.out / "f.json")
        p.fit(p.out / "calibration", Path(f))
    for key in found:
        p.run_shift(key, p.out / key, [f"estimator.enigma.calibration={f}"], ("enigma",),
                    splits="ImageNet-C" if key == "imagenet-c" else None)
    if not p.dry_run:
        p.call(["leaderboard", *[str(p.out / k) for k in found], "--output", str(p.out / "all")])
    return found


def ablation(p: Protocol, name: str) -> list[str]:
    """Run one ablation on the 10-dataset subset and write ``<out>/report.md``."""
    found, skipped = present_shifts(p.data, ABLATION_SHIFTS, p.shift_sets)
    for key, reason in skipped.items():
        print(f"skipped {key}: {reason}")
    lines = [f"# Ablation {name}", "", "| variant | score | MAE (pp) vs source | datasets |",
             "|---|---|---|---|"]
    for variant in ablation_variants(name):
        base = p.out / variant.name
        calibration = base / "calibration"
        p.run_shift("imagenet-c", calibration, variant.sets, variant.estimators, variant.adapter,
                    splits=CALIBRATION_SPLITS, deviation=True)
        for key in found:
            p.run_shift(key, base / key, variant.sets, variant.estimators, variant.adapter,
                        splits="ImageNet-C" if key == "imagenet-c" else None, deviation=True)
        if p.dry_run:
            continue
        for estimator in variant.estimators:
            for score in variant.scores:
                f = base / f"f-{estimator}-{score.replace('@', '')}.json"
                if variant.refit:
                    p.fit(calibration, f, estimator, score)
                mae = eval_mae([base / k for k in found], estimator, score,
                               f if variant.refit else None)
                lines.append(f"| {variant.name} | {estimator} {score} | {mae:.2f} | {len(found)} |")
    if not p.dry_run:
        (p.out / "report.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    return found


def eval_mae(folders: list[Path], estimator: str, score: str, f: Path | None) -> float:
    """MAE (pp, per-dataset averaged) against the source accuracy of ``f(score)`` on the eval
    cells of ``folders`` (the shipped f of the estimator's params when ``f`` is None)."""
    import numpy as np

    from ttabench.calibration import Calibration
    from ttabench.scoring.leaderboard import load_cells
    from ttabench.scoring.maps import labelled_points
    from ttabench.scoring.metrics import mae_by_dataset
    from ttabench_enigma.calibrations import load_calibration

    cells = [c for c in load_cells(folders) if c.role == "eval"]
    _, x, y, datasets = labelled_points(cells, estimator, score, "source")
    cal = Calibration.load(f) if f is not None else load_calibration(SHIPPED_F)
    return float(mae_by_dataset(np.asarray(cal(x)), y, datasets))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="the data folder (see docs/method/paper-protocol.md)")
    parser.add_argument("--output", "-o", type=Path, default=Path("runs/paper"))
    parser.add_argument("--model", "-m", default=None, help="override the config's model")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--plugin", action="append", default=[], help="passed to ttabench")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a config override passed to every run")
    parser.add_argument("--shipped-f", action="store_true", help=f"use {SHIPPED_F}, no refit")
    parser.add_argument("--ablation", choices=ABLATIONS, default=None)
    parser.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    args = parser.parse_args(argv)
    extra = [part for s in args.sets for part in ("--set", s)]
    protocol = Protocol(args.data, args.output, args.model, args.config, args.plugin, extra,
                        args.dry_run)
    if args.ablation:
        ablation(protocol, args.ablation)
    else:
        table1(protocol, args.shipped_f)


if __name__ == "__main__":
    main(sys.argv[1:])
