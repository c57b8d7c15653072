"""One output folder, one run: the folder's locks and its ``run.json`` record.

``RunFolder.claim`` makes the folder (and ``cells/``), checks that it can be written, and takes
an exclusive lock (the ``filelock`` package: an OS lock, released by the kernel when the
process ends however it ends). A whole run locks ``<folder>/.lock``; shard i of n of a run
locks ``<folder>/.lock.shard-i-of-n``, so the disjoint shards of one run can share a folder
(a job array) while the same shard twice cannot. A whole run and a shard would compute the
same cells: each takes its own lock first, then probes the other kind (a whole run every
shard lock present, a shard the whole-run lock), so of two overlapping runs at least one
sees the other. A refused run stops at once with a one-line error naming the other process
from ``<lock>.owner`` (pid, host, start time, command), which a holder writes once it has the
lock.

``run.json`` records every invocation that ran cells: the top level holds the latest one
(spec, counts, phase timings) and ``invocations`` keeps each one's date, command line, shard,
counts and timings, oldest first (updated under ``.run.json.lock``, so shards finishing
together lose none). An invocation that ran no cell leaves ``run.json`` as it was: a rerun
after a finished run does not overwrite its timings with zeros.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from ttabench.errors import TTABenchError
from ttabench.store import check_writable_folder, write_json_atomic

LOCK_NAME = ".lock"
SHARD_LOCK_PREFIX = ".lock.shard-"
OWNER_SUFFIX = ".owner"
RUN_RECORD = "run.json"
RECORD_LOCK_SECONDS = 60.0


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def lock_name(shard: tuple[int, int] | None) -> str:
    """``.lock`` for a whole run, ``.lock.shard-i-of-n`` for shard i of n."""
    return LOCK_NAME if shard is None else f"{SHARD_LOCK_PREFIX}{shard[0]}-of-{shard[1]}"


def owner_of(lock_path: Path) -> str:
    """A lock's holder as ``pid N on HOST since T: COMMAND`` (or that it is unknown)."""
    try:
        info = json.loads(Path(str(lock_path) + OWNER_SUFFIX).read_text())
        command = " ".join(str(a) for a in info.get("command", []))
        return f"pid {info['pid']} on {info['host']} since {info['started']}: {command}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def _held_by_another(lock_path: Path) -> bool:
    """Whether another process holds ``lock_path`` (probed by taking and dropping it)."""
    probe = FileLock(str(lock_path), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


class RunFolder:
    """An output folder claimed by this process for one run (or one shard of it)."""

    def __init__(self, path: Path, shard: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.shard = shard
        self.started = _now()
        self.lock_path = self.path / lock_name(shard)
        self._lock = FileLock(str(self.lock_path), timeout=0)

    @classmethod
    def claim(cls, path: Path, shard: tuple[int, int] | None = None) -> RunFolder:
        """Make, check and lock ``path`` for a run (or shard ``(i, n)``); a one-line
        TTABenchError when it cannot be written or an overlapping run holds it."""
        folder = cls(path, shard)
        check_writable_folder(folder.path, "--output")
        check_writable_folder(folder.path / "cells", "--output")
        folder.invocations()  # a damaged run.json is refused before any work
        try:
            folder._lock.acquire()
        except Timeout:
            raise folder._in_use(folder.lock_path) from None
        except OSError as exc:
            raise TTABenchError(f"cannot lock output folder {folder.path}: {exc}") from None
        others = ([folder.path / LOCK_NAME] if shard else
                  sorted(folder.path.glob(f"{SHARD_LOCK_PREFIX}*[0-9]")))
        busy = next((p for p in others if _held_by_another(p)), None)
        if busy is not None:
            folder._lock.release()
            raise folder._in_use(busy)
        write_json_atomic(Path(str(folder.lock_path) + OWNER_SUFFIX), {
            "pid": os.getpid(), "host": socket.gethostname(), "started": folder.started,
            "command": sys.argv,
        })
        return folder

    def _in_use(self, lock_path: Path) -> TTABenchError:
        return TTABenchError(
            f"output folder {self.path} is in use by another run ({owner_of(lock_path)}); wait "
            "for it to finish, or choose another folder with --output"
        )

    def release(self) -> None:
        """Drop the owner record and the lock."""
        if self._lock.is_locked:
            Path(str(self.lock_path) + OWNER_SUFFIX).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.release()

    def invocations(self) -> list[dict[str, Any]]:
        """The invocations recorded in ``run.json`` (none when it does not exist), checked
        against ``ttabench.schemas.RunRecordSchema``: a one-line TTABenchError naming the
        file and the field when it is damaged."""
        from ttabench.schemas import RunRecordSchema, parse

        path = self.path / RUN_RECORD
        if not path.exists():
            return []
        where = f"run record {path} (fix or delete it)"
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise TTABenchError(f"{where}: {' '.join(str(err).split())}") from None
        return [dict(i) for i in parse(RunRecordSchema, data, where).model_dump()["invocations"]]

    def record(self, top: dict[str, Any], ran: dict[str, int],
               phases: dict[str, float]) -> bool:
        """Add this invocation to ``run.json`` when it ran cells (True), else leave it (False).

        ``top`` (spec, config...) and ``ran``/``phases`` become the top level; the invocation's
        date, command line, shard, counts and timings are appended to ``invocations``.
        """
        path = self.path / RUN_RECORD
        with FileLock(str(self.path / f".{RUN_RECORD}.lock"), timeout=RECORD_LOCK_SECONDS):
            if not sum(ran.values()) and path.exists():
                return False
            previous = self.invocations()
            this = {"started": self.started, "command": sys.argv, "ran": ran,
                    "shard": None if self.shard is None else f"{self.shard[0]}/{self.shard[1]}",
                    "phases_seconds": phases}
            write_json_atomic(path, {**top, "ran": ran, "phases_seconds": phases,
                                     "invocations": [*previous, this]})
        return True
