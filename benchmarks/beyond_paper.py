"""Beyond the paper: trajectory signals against the best same-view baseline, on two models.

One command::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/beyond_paper.py

collects (or reads from ``/tmp/h16/``) the raw per-split outputs of ``beyond_collect`` for
``mnist-cnn`` and ``mnist-resnet`` x stream seeds 0, 1, 2, then runs the analysis of
``beyond_analysis`` and writes ``benchmarks/results/quality_beyond.{md,json}``.
``--models`` / ``--seeds`` narrow the grid; ``--collect-only`` stops after collecting.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from beyond_collect import (  # noqa: E402
    N_EXAMPLES,
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
CACHE = Path("/tmp/h16/raw")


def collect(model_name: str, seed: int, cache: Path = CACHE) -> None:
    """Every study split of one (model, seed), skipping the ones already cached."""
    suite = MNISTC(n_examples=N_EXAMPLES)
    loaded = MODELS[model_name]()
    folder = cache / model_name / f"seed{seed}"
    if not (folder / "source_val.npz").is_file():
        save_npz(folder / "source_val.npz", source_val_views(loaded, suite, seed))
    clean = clean_target(suite)
    splits = study_splits(suite)
    start = time.perf_counter()
    for index, split in enumerate(splits):
        path = folder / f"{split.name}.npz"
        if path.is_file():
            continue
        images, labels = split_arrays(suite, split, clean)
        save_npz(path, collect_split(loaded, images, labels, seed))
        print(f"{model_name} seed {seed} {index + 1}/{len(splits)} {split.name} "
              f"{time.perf_counter() - start:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--collect-only", action="store_true")
    parser.add_argument("--cache", type=Path, default=CACHE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = args.models.split(",")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.exit(2, f"error: unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}\n")
    seeds = [int(s) for s in args.seeds.split(",")]
    for model_name in models:
        for seed in seeds:
            collect(model_name, seed, args.cache)
    if args.collect_only:
        return
    from beyond_analysis import write_report

    write_report(args.cache, models, seeds, Path(__file__).resolve().parent / "results")


if __name__ == "__main__":
    main()
