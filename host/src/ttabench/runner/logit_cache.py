"""The logit cache: each view's outputs of a model, stored once per what decides them.

A run folder's ``logits/`` holds one safetensors file per entry, named by the first 32 hex
digits of the SHA-256 of the canonical JSON of its key record (``entry_digest``), so the same
outputs are stored once however many cells read them, and an entry is found again from what
decides its numbers. A cell records its entries' digests in ``Cell.outputs``. The key records
(``view_record``, ``source_val_record``) hold:

- ``source`` and ``bn`` views of a split: the cell's protocol (suite and its data identity,
  split, stream, model id and weights hash, batch size, seed, compute, device type, threads,
  torch version) without the adapter, the steps and the estimators, none of which changes a
  pass that runs before any adaptation;
- ``adapted`` view: the protocol without the static estimators (the adapter and its
  parameters, the steps, and the trajectory estimators, whose checkpoints decide how long
  adaptation runs, all decide the online logits);
- source val through the frozen (``source_val:source``) or batch-statistics
  (``source_val:bn``, with its batch) model, or as the cell's adapter gives it before adapting
  (``source_val:adapted``, the ``adapted`` view's reference, with the adapter): the suite, the
  model and the compute facts;

and every record says whether the entry holds penultimate features.

File contents: the tensors ``logits`` (float32), ``features`` (when held), ``labels``
(source val only) and, for the ``bn`` and ``adapted`` views, ``frozen_rows``: the rows of the
``source`` entry (metadata ``frozen``) whose logits are the frozen model's on the same samples
(``Outputs.frozen_logits``), so those are stored once. Metadata: ``schema`` and ``key`` (the
key record's JSON). Files are written atomically and read with safetensors: tensors only,
nothing in a file runs code. A file that cannot be read, or whose key record does not hash to
its name, is a one-line TTABenchError naming it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ttabench.api import Outputs
from ttabench.errors import TTABenchError
from ttabench.store import write_bytes_atomic

CACHE_SCHEMA = "ttabench.logits/1"
FOLDER = "logits"
#: Protocol facts that never change a view's numbers (``data_path``: how many decoded
#: images a cell keeps in memory).
UNKEYED = ("data_path", "preset")
#: Protocol facts the ``source`` and ``bn`` passes do not depend on (they run first).
ADAPTATION_FACTS = ("adapter", "steps", "estimators")
#: The facts a source-val pass depends on.
SOURCE_VAL_FACTS = ("suite", "model", "compute", "device_type", "cuda", "threads", "torch")


def entry_digest(record: dict[str, Any]) -> str:
    """``sha256(canonical JSON of record)[:32]``: sorted keys, no whitespace."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def view_record(protocol: dict[str, Any], view: str, trajectory: Iterable[str],
                features: bool) -> dict[str, Any]:
    """The key record of a cell's ``view`` outputs (module docstring); ``trajectory``: the
    cell's trajectory estimators."""
    facts = {k: v for k, v in protocol.items() if k not in UNKEYED}
    if view == "adapted":
        names = set(trajectory)
        facts["estimators"] = {n: e for n, e in facts.get("estimators", {}).items() if n in names}
    else:
        facts = {k: v for k, v in facts.items() if k not in ADAPTATION_FACTS}
    return {"schema": CACHE_SCHEMA, "view": view, "features": features, "protocol": facts}


def source_val_record(protocol: dict[str, Any], view: str, batch: int,
                      features: bool) -> dict[str, Any]:
    """The key record of source val in ``view``: through the frozen model (``source``), the
    batch-statistics model in batches of ``batch`` (``bn``), or as the cell's adapter gives it
    before adapting (``adapted``: its ``source_val_reference``, so the adapter and its
    parameters are keyed too); always batched in the seeded reference order
    (``ttabench.runner.views.reference_record``)."""
    from ttabench.runner.views import reference_record

    facts = {k: protocol.get(k) for k in SOURCE_VAL_FACTS}
    facts["reference"] = reference_record()
    if view != "source":
        facts["batch"] = batch
    if view == "adapted":
        facts["adapter"] = protocol.get("adapter")
    return {"schema": CACHE_SCHEMA, "view": f"source_val:{view}", "features": features,
            "protocol": facts}


class LogitCache:
    """The entries of one folder (``<run folder>/logits``); loaded entries are kept in memory
    while the object lives, so a peer's outputs read by every model of a pool are read once."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)
        self._loaded: dict[str, Outputs] = {}
        self.reads = 0

    def path(self, digest: str) -> Path:
        return self.folder / f"{digest}.safetensors"

    def put(self, record: dict[str, Any], outputs: Outputs, *, frozen: str | None = None,
            frozen_rows: torch.Tensor | None = None) -> str:
        """Store ``outputs`` under ``record`` unless an entry of that digest exists; return
        the digest. ``frozen``/``frozen_rows``: the ``source`` entry and its rows that hold
        ``outputs.frozen_logits``."""
        digest = entry_digest(record)
        path = self.path(digest)
        if path.exists():
            return digest
        tensors = {"logits": outputs.logits.detach().float().cpu().contiguous()}
        if outputs.features is not None:
            tensors["features"] = outputs.features.detach().float().cpu().contiguous()
        if outputs.labels is not None:
            tensors["labels"] = outputs.labels.detach().long().cpu().contiguous()
        if frozen_rows is not None:
            tensors["frozen_rows"] = frozen_rows.detach().long().cpu().contiguous()
        metadata = {"schema": CACHE_SCHEMA,
                    "key": json.dumps(record, sort_keys=True, separators=(",", ":"), default=str),
                    **({"frozen": frozen} if frozen else {})}
        write_bytes_atomic(path, save_tensors(tensors, metadata=metadata))
        return digest

    def _read(self, digest: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        path = self.path(digest)
        where = f"logit cache entry {path}"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise TTABenchError(f"{where} cannot be read ({err.strerror or err}); rerun the "
                                "run's cells (delete their cell files) to make it again") from None
        try:
            tensors = load_tensors(data)
            with_meta = _metadata(data)
        except (SafetensorError, ValueError, UnicodeDecodeError, RecursionError) as err:
            raise TTABenchError(f"{where} is damaged ({' '.join(str(err).split())}); delete it "
                                "and rerun the cells that made it") from None
        if with_meta.get("schema") != CACHE_SCHEMA or "logits" not in tensors:
            raise TTABenchError(f"{where} is not a ttabench logit entry ({CACHE_SCHEMA})")
        try:
            record = json.loads(with_meta.get("key", ""))
        except ValueError:
            record = None
        if not isinstance(record, dict) or entry_digest(record) != digest:
            raise TTABenchError(f"{where}: its key record does not hash to its name; the file "
                                "holds other outputs (delete it and rerun the cells that made it)")
        return tensors, with_meta

    def load(self, digest: str) -> Outputs:
        """The outputs of entry ``digest`` with their frozen logits (read from the ``source``
        entry they name); a one-line TTABenchError when a file is missing or damaged."""
        if digest in self._loaded:
            return self._loaded[digest]
        tensors, metadata = self._read(digest)
        self.reads += 1
        frozen_logits = None
        if "frozen" in metadata:
            source = self.load(metadata["frozen"]).logits
            rows = tensors.get("frozen_rows")
            if rows is None or (len(rows) and (rows.min() < 0 or rows.max() >= len(source))):
                raise TTABenchError(f"logit cache entry {self.path(digest)}: its frozen rows "
                                    "do not index the source entry it names")
            frozen_logits = source[rows]
        elif "labels" not in tensors:  # a source view: the frozen model's own logits
            frozen_logits = tensors["logits"]
        outputs = Outputs(tensors["logits"], labels=tensors.get("labels"),
                          features=tensors.get("features"), frozen_logits=frozen_logits)
        self._loaded[digest] = outputs
        return outputs


    def release(self, digests: Iterable[str]) -> None:
        """Forget the loaded entries ``digests`` (read again when asked again)."""
        for digest in digests:
            self._loaded.pop(digest, None)


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (its JSON header, read without torch)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size].decode())
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
