"""Atomic files: every result file is written to a temp file and renamed into place."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Open a binary handle whose content replaces ``path`` only once the block succeeds.

    The bytes go to a temp file in the same folder, are flushed and fsynced, then the temp
    file is renamed over ``path`` (``os.replace`` is atomic on POSIX), so a reader sees the old
    file or the whole new one. A crash or an exception leaves at most a stray ``.tmp`` file,
    which nothing reads.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: Path, data: bytes | str) -> None:
    """Write bytes (or UTF-8 text) to ``path`` atomically."""
    with atomic_file(path) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON (no NaN) to ``path`` atomically."""
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_bytes_atomic(path, text)


def check_writable_folder(folder: Path, option: str) -> None:
    """Make ``folder`` (and its parents) and check a file can be created in it, before any
    work: a one-line TTABenchError naming ``option`` when it cannot (a file in the way, a
    read-only file system, no permission)."""
    from ttabench.errors import TTABenchError

    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise TTABenchError(
            f"output folder {folder} is not writable ({exc.strerror or exc}); choose another "
            f"with {option}"
        ) from None
