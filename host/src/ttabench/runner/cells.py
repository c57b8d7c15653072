"""Cells: the unit of work, their protocol records, keys, sharding and the results store.

A cell is (model, stream, adapter, estimator set, seed); its stream is one split or, for a
continual, gradual or mixed stream, a sequence of them. Its key is the first 16 hex digits of
the SHA-256 of the canonical JSON of its protocol record (``cell_key``): everything that decides
its numbers (suite and its options and record, split, the stream and its order, model id and
weights hash, adapter and its resolved parameters, estimator parameters and plugin versions,
batch size, steps, seed, torch version, device type, the intra-op thread count on the CPU,
and on CUDA the GPU model, CUDA and cuDNN versions, TF32 and determinism settings:
``ttabench.runner.device_facts``). Where the data and the
weights live is no such fact: the key holds their identity (names relative to the data folder,
sizes, digests, the weights hash) and ``locations`` puts the absolute paths (the suite's
``location()`` and ``location_options``, the model spec and its files) beside the key, in the
cell's ``location``, so shards that mount the data at different paths share one partition and
moved data reruns nothing. Only facts fixed before any data is read belong there: a suite's count of skipped unreadable files is known once a split
is read, so it lives in the cell body. The git revision and timings are recorded beside it,
not in the key, so a rerun after an unrelated commit still resumes. The result lives in
``<output>/cells/<key>.json``, written atomically; a rerun skips every key whose file holds a
finished (``ok``) result and retries failed ones.
"""

from __future__ import annotations

import functools
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

from ttabench.api import LoadedModel, SplitSpec, Suite
from ttabench.errors import TTABenchError
from ttabench.records import finished_cell
from ttabench.runner.streams import DEFAULT_STREAM_RECORD



@dataclass
class CellPlan:
    """One planned cell: its split (for a multi-split stream, the stream's own record), seed,
    protocol record and key, and the splits a multi-split stream reads (``order``)."""

    split: SplitSpec
    seed: int
    protocol: dict[str, Any]
    key: str
    order: list[SplitSpec] | None = None


#: Facts of a model's ``preprocessing`` that say where its weights were read from.
MODEL_FILE_FACTS: tuple[str, ...] = ("weights", "checkpoint")


def locations(suite: Suite, options: dict[str, Any], model: LoadedModel,
              model_spec: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the suite's keyed facts, the model's keyed facts, where both live).

    The suite's ``location_options`` and the model's spec and weight files go to the third
    part only (recorded beside the key); the first two hold the identities that are hashed.
    """
    keyed_options = {k: v for k, v in options.items() if k not in suite.location_options}
    suite_part = {"name": suite.name, "options": keyed_options, "record": suite.record()}
    model_part = {"id": model.model_id, "weights_hash": model.weights_hash,
                  "num_classes": model.num_classes,
                  "preprocessing": {k: v for k, v in model.preprocessing.items()
                                    if k not in MODEL_FILE_FACTS}}
    where = {"suite": {"options": {k: v for k, v in options.items()
                                   if k in suite.location_options}, **suite.location()},
             "model": {"spec": model_spec, **{k: v for k, v in model.preprocessing.items()
                                              if k in MODEL_FILE_FACTS}}}
    return suite_part, model_part, where


def protocol_key(protocol: dict[str, Any]) -> str:
    """``sha256(canonical JSON)[:16]``: sorted keys, no whitespace."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cell_key(protocol: dict[str, Any]) -> str:
    """A cell's key: ``protocol_key`` of its protocol, in which the default stream (every
    stream parameter at its default, ``DEFAULT_STREAM_RECORD``) is left out, so cells keep the
    keys they had before the stream was recorded and a rerun resumes them."""
    if protocol.get("stream") == DEFAULT_STREAM_RECORD:
        protocol = {k: v for k, v in protocol.items() if k != "stream"}
    return protocol_key(protocol)


def group_key(protocol: dict[str, Any]) -> str:
    """The key of a cell's group: ``protocol_key`` of its protocol without the adapter. Cells
    of one group read the same images in the same order and share their adapter-independent
    work (``ttabench.runner.shared``)."""
    return protocol_key({k: v for k, v in protocol.items() if k != "adapter"})


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


def is_finished(output: Path, key: str) -> bool:
    return finished_cell(cell_path(output, key)) is not None


@functools.cache
def git_revision() -> str | None:
    """The source tree's git revision (with ``-dirty``), or None outside a checkout. Read once
    per process, at its first cell: the revision of the code the process imported, not of a
    tree that moves on while a long run goes on (a commit or checkout during the run)."""
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
