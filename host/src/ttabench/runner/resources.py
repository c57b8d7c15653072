"""How a run shares the machine: parallel cells, CPU threads and loader workers per cell.

With ``jobs`` cells in parallel processes on ``cores`` CPU cores:

- threads per process default to ``max(1, cores // jobs)`` (so ``--jobs 2`` on 2 cores is one
  thread each, never every core in every process);
- DataLoader workers default to ``min(4, max(1, cores // jobs))`` for a suite that streams its
  splits from disk (image folders, ImageNet-C, CCC: decoding is the cost there), else 0 (an
  in-memory array needs no worker processes);
- host memory is pinned for loader workers feeding a CUDA device.
"""

from __future__ import annotations

import os

#: The most loader workers a cell gets by default (the reference implementation's count).
MAX_DEFAULT_WORKERS = 4


def cpu_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


def resolve_jobs(jobs: int, device_type: str, cores: int) -> int:
    """``jobs`` cells in parallel; 0 is one per core on the CPU and one on an accelerator."""
    if jobs == 0:
        return cores if device_type == "cpu" else 1
    return jobs


def default_threads(cores: int, jobs: int) -> int:
    """Intra-op CPU threads per process: ``max(1, cores // jobs)``."""
    return max(1, cores // max(1, jobs))


def default_workers(cores: int, jobs: int, streams_from_disk: bool) -> int:
    """Loader worker processes per cell: ``min(4, max(1, cores // jobs))`` when the suite
    streams from disk, else 0."""
    if not streams_from_disk:
        return 0
    return min(MAX_DEFAULT_WORKERS, max(1, cores // max(1, jobs)))
