"""Peak memory while streaming a 50,000-file image folder split through a DataLoader.

Fabricates ``--n`` small JPEGs (``--size`` px, 100 class folders) in a temporary folder, builds
the ``imagefolder`` suite over it (index + corrupt-file screen), then iterates one split with a
DataLoader (batch 256, no workers, batches dropped at once), sampling the resident set size
(VmRSS) after every batch. Held in memory all at once, the decoded split would take
n * 3 * size * size bytes; streaming should add only a few batches on top of the index. The
first batch also pays one-off costs (importing torchvision: ~175 MiB here; allocator pools),
so growth is also reported from the end of the first batch, with RSS at 10/50/100 % of the
split.

    .venv/bin/python benchmarks/bench_stream_memory.py [--n 50000] [--size 64]

Writes benchmarks/results/stream_memory.json.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttabench.store import write_json_atomic
from ttabench.suites.imagefolder import ImageFolderSuite

RESULTS = Path(__file__).parent / "results"
CLASSES, BATCH = 100, 256
MIB = 1024 * 1024


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS from /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fabricate(root: Path, n: int, size: int) -> None:
    """``n`` noisy JPEGs, class ``i % CLASSES``, in folders ``c000``..``c099``."""
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (64, size, size, 3), dtype=np.uint8)
    for c in range(CLASSES):
        (root / f"c{c:03d}").mkdir(parents=True)
    for i in range(n):
        path = root / f"c{i % CLASSES:03d}" / f"{i:06d}.jpg"
        Image.fromarray(tiles[i % 64]).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    workdir = Path(tempfile.mkdtemp(prefix="ttabench-stream-"))
    try:
        start = time.perf_counter()
        fabricate(workdir / "folder", args.n, args.size)
        fabricate_s = time.perf_counter() - start
        rss_before = rss_bytes()
        start = time.perf_counter()
        suite = ImageFolderSuite(
            workdir, root="folder", class_map="sorted", image_size=args.size, resize=None
        )
        dataset = suite.dataset(suite.splits()[0])
        index_s = time.perf_counter() - start
        rss_indexed = rss_bytes()
        peak, seen, checksum = rss_indexed, 0, 0
        rss_first_batch, progress = 0, {}
        marks = {int(args.n * f): f"{round(f * 100)}%" for f in (0.1, 0.5, 1.0)}
        start = time.perf_counter()
        for images, labels in torch.utils.data.DataLoader(dataset, batch_size=BATCH):
            seen += len(labels)
            checksum += int(labels.sum())
            now = rss_bytes()
            peak = max(peak, now)
            rss_first_batch = rss_first_batch or now
            for mark in [m for m in marks if seen >= m]:
                progress[marks.pop(mark)] = round(now / MIB, 1)
            del images, labels
        stream_s = time.perf_counter() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert seen == args.n and checksum == sum(i % CLASSES for i in range(args.n))
    decoded_total = args.n * 3 * args.size * args.size
    batch_bytes = BATCH * 3 * args.size * args.size
    result = {
        "benchmark": "stream_memory",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "machine": platform.machine(),
        "n_files": args.n,
        "image_px": args.size,
        "batch_size": BATCH,
        "decoded_split_mib": round(decoded_total / MIB, 1),
        "one_batch_mib": round(batch_bytes / MIB, 2),
        "rss_before_index_mib": round(rss_before / MIB, 1),
        "rss_after_index_mib": round(rss_indexed / MIB, 1),
        "index_cost_mib": round((rss_indexed - rss_before) / MIB, 1),
        "peak_rss_while_streaming_mib": round(peak / MIB, 1),
        "streaming_growth_mib": round((peak - rss_indexed) / MIB, 1),
        "rss_after_first_batch_mib": round(rss_first_batch / MIB, 1),
        "growth_after_first_batch_mib": round((peak - rss_first_batch) / MIB, 1),
        "rss_at_progress_mib": progress,
        "ru_maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": {
            "fabricate": round(fabricate_s, 1),
            "index_and_screen": round(index_s, 1),
            "stream": round(stream_s, 1),
        },
        "images_per_s": round(args.n / stream_s, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json_atomic(RESULTS / "stream_memory.json", result)
    for key, value in result.items():
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
