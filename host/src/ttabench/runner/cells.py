"""Cells: the unit of work, their protocol records, keys, sharding and the results store.

A cell is (model, suite split, adapter, estimator set, seed). Its key is the first 16 hex
digits of the SHA-256 of the canonical JSON of its protocol record: everything that decides
its numbers (suite and its options and record, split, model id and weights hash, adapter and
its parameters, estimator parameters and plugin versions, batch size, steps, seed, torch
version, device type, the intra-op thread count on the CPU, and on CUDA the GPU model, CUDA and
cuDNN versions, TF32 and determinism settings: ``ttabench.runner.device_facts``). Only facts fixed before any
data is read belong there: a suite's count of skipped unreadable files is known once a split
is read, so it lives in the cell body. The git revision and timings are recorded beside it,
not in the key, so a rerun after an unrelated commit still resumes. The result lives in
``<output>/cells/<key>.json``, written atomically; a rerun skips every key whose file holds a
finished (``ok``) result and retries failed ones.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ttabench.api import SplitSpec
from ttabench.errors import TTABenchError
from ttabench.records import CELL_SCHEMA



@dataclass
class CellPlan:
    """One planned cell: its split, seed, protocol record and key."""

    split: SplitSpec
    seed: int
    protocol: dict[str, Any]
    key: str


def protocol_key(protocol: dict[str, Any]) -> str:
    """``sha256(canonical JSON)[:16]``: sorted keys, no whitespace."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (1-based) -> ``(i, n)``; None stays None."""
    if not text:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise TTABenchError(f"--shard expects i/n with integers, got {text!r}") from None
    if not 1 <= i <= n:
        raise TTABenchError(f"--shard {text}: need 1 <= i <= n")
    return i, n


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Deterministic partition by key: cell belongs to shard i of n iff ``int(key) % n == i-1``.
    Independent of plan order, so shards never overlap and together cover every cell."""
    if shard is None:
        return True
    i, n = shard
    return int(key, 16) % n == i - 1


def cell_path(output: Path, key: str) -> Path:
    return Path(output) / "cells" / f"{key}.json"


def read_cell(path: Path) -> dict[str, Any] | None:
    """A cell file's content, or None if missing, unreadable (never trusted half-written) or
    of another schema (a ``ttabench.cell/1`` cell is rerun; see ``ttabench.records``)."""
    try:
        data = json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == CELL_SCHEMA else None


def is_finished(output: Path, key: str) -> bool:
    cell = read_cell(cell_path(output, key))
    return cell is not None and cell.get("status") == "ok"


def git_revision() -> str | None:
    """The source tree's git revision (with ``-dirty``), or None outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("-dirty" if dirty else "")


#: The libraries whose versions a cell records (torch's own comes from ``torch.__version__``).
RECORDED_LIBRARIES = ("torchvision", "numpy", "timm")


def library_versions() -> dict[str, str | None]:
    """Python's and the recorded libraries' versions, read from the installed packages'
    metadata: recording a version imports nothing (a worker that never uses torchvision or
    timm does not load them for this). torch, imported here anyway, gives its own version with
    its build tag (``2.3.0+cu121``); a library that is not installed records None."""
    versions: dict[str, str | None] = {"torch": torch.__version__,
                                       "python": platform.python_version()}
    for name in RECORDED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_record(device: torch.device) -> dict[str, Any]:
    """Facts recorded beside the protocol: versions, git revision, machine, device."""
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if device.type == "cuda" else None
    return {"versions": library_versions(), "git_revision": git_revision(),
            "device": str(device), "device_name": device_name, "machine": platform.machine(),
            "threads": torch.get_num_threads(),
            **({"cuda_visible_devices": visible} if visible is not None else {})}
