"""Unpacking a fetched archive into a dataset folder, safely and all at once.

Only regular files and folders are written, by this code (``tarfile``/``zipfile`` never write
anything themselves): a member whose name is absolute, climbs out with ``..``, or is a link, a
device or a FIFO makes the whole archive refused before anything is written, so nothing from an
archive can land outside its destination or point there. Members under ``prefix/`` land in the
destination (``prefix`` "" takes them all); members outside it are refused too (an archive that
is not laid out as published).

The archive is unpacked into a staging folder beside the destination, then moved into place:
the whole folder at once when the destination is new (one rename), else entry by entry into it
(a dataset published as several archives, e.g. ImageNet-C's five). An interrupted unpack leaves
only the staging folder, which the next unpack of the same archive removes first.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from ttabench.errors import TTABenchError

STAGING_PREFIX = ".staging-"


@dataclass
class Member:
    """One archive member: its name inside the archive, its kind and size."""

    name: str
    kind: str  # "file", "dir" or what it is otherwise ("symlink", "hardlink", "device", ...)
    size: int


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isfile():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "device or FIFO"


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = (info.external_attr >> 16) & 0o170000
    if mode == 0o120000:
        return "symlink"
    return "dir" if info.is_dir() else "file"


def members(archive: Path) -> list[Member]:
    """The members of a tar (any compression) or zip archive; a one-line error when it is
    neither or is damaged."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as handle:
                return [Member(i.filename, _zip_kind(i), i.file_size) for i in handle.infolist()]
        with tarfile.open(archive) as tar:
            return [Member(i.name, _tar_kind(i), i.size) for i in tar.getmembers()]
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as err:
        raise TTABenchError(f"{archive} is not a readable tar or zip archive ({err})") from None


def relative_target(name: str, prefix: str) -> PurePosixPath | None:
    """Where member ``name`` lands relative to the destination (None: the prefix folder
    itself); raises for a name that is absolute, climbs out or lies outside ``prefix``."""
    path = PurePosixPath(name.replace("\\", "/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or (parts and parts[0].endswith(":")):
        raise TTABenchError(f"archive member {name!r} points outside its folder; refused")
    head = [p for p in PurePosixPath(prefix).parts if p not in ("", ".")]
    if parts[: len(head)] != head:
        raise TTABenchError(f"archive member {name!r} lies outside {prefix + '/'!r}, the folder "
                            "the published archive holds; refused")
    rest = parts[len(head):]
    return PurePosixPath(*rest) if rest else None


def check_members(found: list[Member], prefix: str) -> list[tuple[Member, PurePosixPath | None]]:
    """Every member with where it lands; raises for the first one that may not be written."""
    out = []
    for member in found:
        if member.kind not in ("file", "dir"):
            raise TTABenchError(f"archive member {member.name!r} is a {member.kind}; archives "
                                "with links or special files are refused")
        target = relative_target(member.name, prefix)
        if target is None and member.kind == "file":
            raise TTABenchError(f"archive member {member.name!r} is a file where the folder "
                                f"{prefix!r} is expected; refused")
        out.append((member, target))
    return out


def _readers(archive: Path) -> Iterator[tuple[str, IO[bytes] | None]]:
    """(member name, its content stream or None for a folder), in archive order."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as handle:
            for entry in handle.infolist():
                yield entry.filename, None if entry.is_dir() else handle.open(entry)
        return
    with tarfile.open(archive) as tar:
        for member in tar:
            yield member.name, tar.extractfile(member) if member.isfile() else None


def _move_into(source: Path, dest: Path) -> None:
    """Move ``source`` to ``dest``: one rename when ``dest`` is new, else merge folder by folder
    (a file already there is replaced)."""
    if not dest.exists():
        os.replace(source, dest)
        return
    if source.is_dir() and dest.is_dir():
        for child in sorted(source.iterdir()):
            _move_into(child, dest / child.name)
        source.rmdir()
        return
    os.replace(source, dest)


def unpack(archive: Path, dest: Path, prefix: str = "", progress: bool = True) -> int:
    """Unpack ``archive``'s members under ``prefix`` into ``dest`` (see the module docstring);
    returns the number of files written."""
    from tqdm import tqdm

    placed = dict((m.name, target) for m, target in check_members(members(archive), prefix))
    total = sum(m.size for m in members(archive))
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f"{STAGING_PREFIX}{dest.name}-{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    count = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"unpack {archive.name}",
              disable=not progress, leave=False) as bar:
        for name, stream in _readers(archive):
            target = placed[name]
            where = staging if target is None else staging / target
            if stream is None:
                where.mkdir(parents=True, exist_ok=True)
                continue
            where.parent.mkdir(parents=True, exist_ok=True)
            with stream, open(where, "wb") as out:
                shutil.copyfileobj(stream, out, 1 << 20)
            bar.update(where.stat().st_size)
            count += 1
    _move_into(staging, dest)
    shutil.rmtree(staging, ignore_errors=True)
    return count
