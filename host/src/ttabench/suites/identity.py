"""The identity of data on disk, independent of where it is mounted.

A cell's key hashes what decides its numbers; for data read from files that is which files
(names relative to the data's own folder) and what they hold (sizes, or a digest of a small
file), never the absolute path: the shards of one job array may mount the data at different
paths, and a moved data folder holds the same data. The paths themselves are recorded beside
the key (``Suite.location()``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path


def relative_name(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (POSIX form) when it lies inside it, else its own name."""
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return Path(path).name


def files_digest(paths: Iterable[Path], base: Path) -> str:
    """``sha256`` (16 hex digits) of the lines ``<name relative to base>\\t<size in bytes>`` of
    ``paths``, in their order: an index's identity (which files, in which order, how big)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{relative_name(path, base)}\t{Path(path).stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def file_digest(path: Path | None) -> str | None:
    """``<name> sha256:<16 hex digits>`` of a small file's content (a class map, a labels
    file), or None."""
    if path is None:
        return None
    return f"{Path(path).name} sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}"
