"""Beyond the paper: trajectory signals against the best same-view baseline, on two models.

One command::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/beyond_paper.py

collects (or reads from ``/tmp/ttabench-beyond-paper/raw``) the raw per-split outputs of ``beyond_collect`` for
``mnist-cnn`` and ``mnist-resnet`` x stream seeds 0, 1, 2 -- the real calibration splits at
every lr of ``LRS``, then the synthetic and evaluation splits at the lr chosen on them
(``beyond_analysis.choose_lr``; the grid runs on stream seed 0 only, its lr serves the three
seeds) -- then runs the analysis of ``beyond_analysis`` and writes
``benchmarks/results/quality_beyond.{md,json}`` and ``beyond_overhead.json``.
``--models`` / ``--seeds`` narrow the study, ``--grid-lrs`` the part of the lr grid this process
collects (processes collecting disjoint parts wait for each other's grid);
``--collect-only`` stops after collecting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from beyond_collect import (  # noqa: E402
    LRS,
    N_EXAMPLES,
    StudySplit,
    clean_target,
    collect_split,
    save_npz,
    source_val_views,
    split_arrays,
    study_splits,
)

from ttabench.models.mnist_cnn import load_mnist_cnn  # noqa: E402
from ttabench.models.mnist_resnet import load_mnist_resnet  # noqa: E402
from ttabench.suites.mnistc import MNISTC  # noqa: E402

MODELS = {"mnist-cnn": load_mnist_cnn, "mnist-resnet": load_mnist_resnet}
SEEDS = (0, 1, 2)
CACHE = Path("/tmp/ttabench-beyond-paper/raw")


LR_SEED = 0


def _setup(model_name: str, seed: int, cache: Path):
    suite = MNISTC(n_examples=N_EXAMPLES)
    loaded = MODELS[model_name]()
    folder = cache / model_name / f"seed{seed}"
    if not (folder / "source_val.npz").is_file():
        save_npz(folder / "source_val.npz", source_val_views(loaded, suite, seed))
    splits = study_splits(suite)
    real_cal = [s for s in splits if s.role != "eval" and s.suite_split is not None]
    return suite, loaded, folder, splits, real_cal


def _run(model_name: str, seed: int, suite, loaded, folder: Path, todo: list[StudySplit],
         lr: float) -> None:
    """Collect the splits of ``todo`` at ``lr`` that are not cached yet."""
    from beyond_analysis import lr_folder

    clean = clean_target(suite)
    start = time.perf_counter()
    for index, split in enumerate(todo):
        path = folder / lr_folder(lr) / f"{split.name}.npz"
        if path.is_file():
            continue
        images, labels = split_arrays(suite, split, clean)
        save_npz(path, collect_split(loaded, images, labels, seed, lr))
        print(f"{model_name} seed {seed} lr {lr:g} {index + 1}/{len(todo)} {split.name} "
              f"{time.perf_counter() - start:.0f}s", flush=True)


def collect_grid(model_name: str, lrs: list[float], cache: Path = CACHE) -> None:
    """The lr grid: the real calibration splits of stream seed ``LR_SEED`` at each of ``lrs``."""
    suite, loaded, folder, _, real_cal = _setup(model_name, LR_SEED, cache)
    for lr in lrs:
        _run(model_name, LR_SEED, suite, loaded, folder, real_cal, lr)


def collect(model_name: str, seed: int, cache: Path = CACHE) -> None:
    """Every study split of one (model, seed) at the model's lr chosen on the grid (waiting
    for the grid when another process collects part of it), skipping cached ones."""
    from beyond_analysis import choose_lr, lr_folder

    suite, loaded, folder, splits, real_cal = _setup(model_name, seed, cache)
    grid = cache / model_name / f"seed{LR_SEED}"
    while not all((grid / lr_folder(lr) / f"{s.name}.npz").is_file()
                  for lr in LRS for s in real_cal):
        time.sleep(10)
    chosen = choose_lr(grid)["chosen"]
    print(f"{model_name} seed {seed}: lr {chosen:g} chosen on calibration", flush=True)
    _run(model_name, seed, suite, loaded, folder, splits, chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--grid-lrs", default=",".join(f"{lr:g}" for lr in LRS),
                        help="the lrs of the calibration grid this process collects")
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.exit(2, f"error: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}\n")
    seeds = [int(s) for s in args.seeds.split(",")]
    grid_lrs = [float(lr) for lr in args.grid_lrs.split(",") if lr]
    for model_name in models:
        collect_grid(model_name, grid_lrs, args.cache)
        for seed in seeds:
            collect(model_name, seed, args.cache)
    if args.collect_only:
        return
    from beyond_analysis import write_report

    write_report(args.cache, models, seeds, Path(__file__).resolve().parent / "results")


if __name__ == "__main__":
    main()
