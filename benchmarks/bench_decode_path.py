"""Decode-bound cost of one ImageNet-style split: the project's data path vs the reference's loop.

Fabricates ``--n`` JPEGs of 224 px in an ImageNet-style folder (100 class folders, see
``bench_stream_memory.fabricate``), then reads one split the way each side's cell does, with
no model (only decoding and batching count), in one run on the same machine:

- reference (a transcription of oripress/EntropyEnigma ``main.py``): torchvision ImageFolder
  with ToTensor + Normalize, one DataLoader (shuffle, 4 workers, pinned memory, drop_last)
  iterated for the target accuracy (``get_acc``: a whole epoch), again until 1,000 probe
  images are stored (``get_unlabeled_subset``: a fresh epoch broken off), then for adaptation
  (``while iterations < 990: for batch in loader``: whole epochs until 990 steps);
- project: the ``imagefolder`` suite's dataset read through ``StreamReader``: the combined
  source + bn pass over the first stream epoch (each image once), the probe, then the seeded
  stream, with loader workers ``default_workers(cores, 1, True)``; once with the cache off
  (``--cache-mib 0``) and once with the default budget.

The 990 steps of a 50,000-image ImageNet-C split (781 batches of 64 an epoch) are scaled to
the same fraction of an epoch here: ``round(990 * (n // 64) / 781)`` steps. Decodes are
counted by a dataset wrapper (a counter shared with the loader workers).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_decode_path.py [--n 5000]

Writes benchmarks/results/decode_path.json and decode_path.md.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_stream_memory import fabricate
from torch.utils.data import DataLoader, Dataset

from ttabench.runner.decoded_cache import DecodedCache, LoaderOptions, StreamReader
from ttabench.runner.resources import cpu_cores, default_workers
from ttabench.runner.stream import batches_of, first_epoch, stream_indices
from ttabench.spec import RunSpec
from ttabench.store import write_json_atomic
from ttabench.suites.imagefolder import ImageFolderSuite

RESULTS = Path(__file__).parent / "results"
BATCH, PROBE, REFERENCE_STEPS, IMAGENET_C_BATCHES = 64, 1000, 990, 50000 // 64
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Counted(Dataset):
    """Counts ``__getitem__`` calls in a counter shared with forked loader workers."""

    def __init__(self, inner: Dataset) -> None:
        self.inner, self.reads = inner, multiprocessing.Value("l", 0)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        with self.reads.get_lock():
            self.reads.value += 1
        return self.inner[index]


def reference_loop(root: Path, steps: int) -> dict:
    """The reference's three uses of its one shuffled loader (see the module docstring)."""
    import torchvision.datasets as dset
    import torchvision.transforms as trn

    data = Counted(dset.ImageFolder(str(root), transform=trn.Compose(
        [trn.ToTensor(), trn.Normalize(MEAN, STD)])))
    loader = DataLoader(data, batch_size=BATCH, shuffle=True, num_workers=4,
                        pin_memory=torch.cuda.is_available(), drop_last=True)
    start = time.perf_counter()
    for images, _ in loader:  # get_acc
        images.sum()
    stored = []
    for images, _ in loader:  # get_unlabeled_subset
        stored.append(images)
        if len(stored) >= PROBE // BATCH + 1:
            break
    iterations = 0
    while iterations < steps:  # adaptation: whole epochs
        for images, _ in loader:
            images.sum()
            iterations += 1
    return {"seconds": time.perf_counter() - start, "decodes": data.reads.value,
            "steps": iterations, "workers": 4}


def project_path(root: Path, steps: int, cache_mib: int) -> dict:
    """The project's reads of one cell (combined pass, probe, stream) through StreamReader."""
    suite = ImageFolderSuite(root.parent, root=root.name, class_map="sorted", image_size=224,
                             resize=None)
    data = Counted(suite.dataset(suite.splits()[0]))
    n = len(data)
    workers = default_workers(cpu_cores(), 1, streams_from_disk=True)
    reader = StreamReader(data, DecodedCache(n, cache_mib << 20, keep_first=PROBE),
                          LoaderOptions(workers=workers, pin_memory=torch.cuda.is_available()))
    order = first_epoch(n, 0)
    start = time.perf_counter()
    for images, _ in reader.fill(batches_of(order, BATCH)):  # source + bn pass
        images.sum()
    reader.take(order[:PROBE])
    for images, _ in reader.batches(list(stream_indices(n, 0, BATCH, steps))):
        images.sum()
    return {"seconds": time.perf_counter() - start, "decodes": data.reads.value,
            "steps": steps, "workers": workers, "cache_mib": cache_mib,
            "cached_images": reader.cache.cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = round(REFERENCE_STEPS * (args.n // BATCH) / IMAGENET_C_BATCHES)
    workdir = Path(tempfile.mkdtemp(prefix="ttabench-decode-"))
    try:
        fabricate(workdir / "split", args.n, 224)
        runs = {"reference": reference_loop(workdir / "split", steps),
                "project (cache off)": project_path(workdir / "split", steps, 0),
                "project (default cache)": project_path(workdir / "split", steps,
                                                        RunSpec.cache_mib)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    reference = runs["reference"]["seconds"]
    for run in runs.values():
        run["decodes_per_image"] = run["decodes"] / args.n
        run["ratio_to_reference"] = run["seconds"] / reference
    result = {"date": datetime.date.today().isoformat(), "n": args.n, "image_px": 224,
              "batch_size": BATCH, "steps": steps, "cores": cpu_cores(),
              "machine": platform.machine(), "python": sys.version.split()[0],
              "torch": torch.__version__, "target_ratio": 0.75, "runs": runs}
    write_json_atomic(RESULTS / "decode_path.json", result)
    lines = [
        "# Decode-bound cost of one ImageNet-style split",
        "",
        f"{args.n} fabricated 224 px JPEGs (100 class folders), batch {BATCH}, {steps} "
        f"adaptation steps (990 of 781 batches an epoch, scaled), {cpu_cores()} cores, "
        "no model: decoding and batching only. Measured in one run by "
        "`OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_decode_path.py`.",
        "",
        "| path | loader workers | decodes / image | seconds | ratio to reference |",
        "|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        lines.append(f"| {name} | {run['workers']} | {run['decodes_per_image']:.2f} | "
                     f"{run['seconds']:.1f} | {run['ratio_to_reference']:.2f}x |")
    lines += ["", "Target: at most 0.75x the reference."]
    (RESULTS / "decode_path.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
