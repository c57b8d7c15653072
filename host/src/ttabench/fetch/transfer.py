"""One file over HTTP(S): resumable, checked, and in place only once it is the published file.

``download(url, dest, ...)`` writes ``<dest>.part`` and, once the transfer is whole:

1. computes the MD5 and SHA-256 of the part file (one pass) and compares the published digest
   (a mismatch removes the part file, so a rerun starts afresh);
2. runs the caller's content check on it (e.g. "holds tensors only");
3. renames it to ``dest`` (atomic on one filesystem).

A part file left by an interrupted transfer (a dropped connection, Ctrl-C, a full disk) is
resumed with an HTTP ``Range: bytes=<size>-`` request; a server that ignores the range (answers
200) is read from the start again. A response that is a web page (``Content-Type: text/html``,
or a body that starts like an HTML document: a login, quota or confirmation page saved in place
of the file) stops the fetch with one line before anything is written. One process at a time
fetches a destination (a file lock in the cache). Every failure is a ``TTABenchError`` of one line
that says what was kept and what to do.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from ttabench import __version__
from ttabench.errors import TTABenchError
from ttabench.fetch.published import Digest

CHUNK = 1 << 20
TIMEOUT_SECONDS = 60.0
#: A response header carrying the SHA-256 of the file (the Hugging Face hub sends the LFS
#: pointer's oid in it).
LFS_DIGEST_HEADER = "X-Linked-Etag"
HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<!--")


@dataclass
class Fetched:
    """A file in place: where, from where, its size and digests, and what it was checked
    against (the published digest, or why none)."""

    path: Path
    url: str
    size: int
    md5: str
    sha256: str
    verified: str


def file_digests(path: Path) -> tuple[str, str]:
    """(MD5, SHA-256) of a file, read once in 1 MiB chunks."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()


def looks_like_html(content_type: str, head: bytes) -> bool:
    """True for a web page: an HTML content type, or a body that opens like an HTML document."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    return head.lstrip()[:20].lower().startswith(HTML_STARTS)


def header_digest(headers: http.client.HTTPMessage) -> Digest | None:
    """The SHA-256 a server states for the file (``X-Linked-Etag``), if it states one."""
    value = (headers.get(LFS_DIGEST_HEADER) or "").strip().strip('"')
    if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return Digest("sha256", value, "the Hugging Face hub's LFS pointer (X-Linked-Etag)")
    return None


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": f"ttabench/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing past the part file: it may be whole
            raise _RangePastEnd() from None
        raise TTABenchError(f"HTTP {err.code} {err.reason} for {url}; check the address "
                            "(or the mirror given with --url)") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TTABenchError(f"cannot reach {url}: {reason}") from None
    return response


class _RangePastEnd(Exception):
    """The server has no byte past the part file (HTTP 416)."""


def _content_range_start(response: http.client.HTTPResponse) -> int | None:
    """The first byte of a 206 answer (``Content-Range: bytes <start>-<end>/<total>``)."""
    text = response.headers.get("Content-Range", "")
    try:
        return int(text.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _write_all(response: http.client.HTTPResponse, out: BinaryIO, part: Path, url: str,
               written: int, total: int | None, progress: bool, first: bytes) -> int:
    """Copy the body into ``out``; returns the bytes now in the part file."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=written, unit="B", unit_scale=True, unit_divisor=1024,
               desc=part.name.removesuffix(".part"), disable=not progress, leave=False)
    block = first
    try:
        while block:
            try:
                out.write(block)
            except OSError as err:
                out.flush()
                if err.errno == errno.ENOSPC:
                    raise TTABenchError(
                        f"no space left on the device writing {part} ({written} bytes kept); "
                        "free space and rerun the same command to resume") from None
                raise TTABenchError(f"cannot write {part}: {err}") from None
            written += len(block)
            bar.update(len(block))
            try:
                block = response.read(CHUNK)
            except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError):
                break
    finally:
        bar.close()
    return written


def _transfer(url: str, part: Path, progress: bool) -> Digest | None:
    """Bring ``part`` to the whole file (resuming it); returns a digest the server stated."""
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open(url, offset)
    except _RangePastEnd:
        return None
    with response:
        if offset and (response.status != 206 or _content_range_start(response) != offset):
            offset = 0  # the server sends the whole file: start again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        first = response.read(CHUNK)
        if not offset and looks_like_html(response.headers.get("Content-Type", ""), first):
            raise TTABenchError(
                f"{url} answered a web page ({response.headers.get('Content-Type') or 'HTML'}) "
                f"instead of the file {part.name.removesuffix('.part')}: a login, quota or "
                "confirmation page; nothing was saved (try a mirror with --url)")
        stated = header_digest(response.headers)
        with open(part, "ab" if offset else "wb") as out:
            written = _write_all(response, out, part, url, offset, total, progress, first)
    if total is not None and written < total:
        raise TTABenchError(
            f"the transfer of {url} was interrupted after {written} of {total} bytes; rerun "
            f"the same command to resume ({part} is kept)")
    return stated


def lock_path(dest: Path) -> Path:
    """The lock of one destination, kept in the cache (not beside the data or the weights)."""
    from ttabench.paths import cache_dir

    name = hashlib.sha256(str(dest.resolve()).encode()).hexdigest()[:16]
    folder = cache_dir() / "fetch-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}.lock"


def download(url: str, dest: Path, *, digest: Digest | None, verify: bool = True,
             progress: bool = True, check: Callable[[Path], None] | None = None) -> Fetched:
    """Fetch ``url`` into ``dest`` through ``dest.part`` (see the module docstring).

    ``digest`` is the published checksum; None takes the one the server states
    (``X-Linked-Etag``), and with none stated the file is refused unless ``verify`` is False.
    ``check(path)`` inspects the verified part file before it is put in place and raises
    TTABenchError to refuse it. A ``dest`` already present is checked against ``digest`` and
    kept when it matches.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with FileLock(str(lock_path(dest))):
        if dest.is_file():
            md5, sha256 = file_digests(dest)
            if digest is None or digest.matches(md5, sha256):
                return Fetched(dest, url, dest.stat().st_size, md5, sha256, "already present")
            raise TTABenchError(
                f"{dest} is already there but its {digest.algorithm} is "
                f"{digest.of(md5, sha256)}, not the published {digest.value}; remove it and "
                "rerun")
        stated = _transfer(url, part, progress)
        md5, sha256 = file_digests(part)
        expected = digest or stated
        if expected is None and verify:
            part.unlink()
            raise TTABenchError(
                f"no checksum is published for {url}, so the file cannot be verified; rerun "
                "with --no-verify to accept it (its SHA-256 is then recorded)")
        if expected is not None and not expected.matches(md5, sha256):
            part.unlink()
            raise TTABenchError(
                f"checksum mismatch for {url}: {expected.algorithm} "
                f"{expected.of(md5, sha256)}, published {expected.value} ({expected.provenance}); "
                "the file was removed, nothing was unpacked")
        if check is not None:
            try:
                check(part)
            except TTABenchError:
                part.unlink()
                raise
        os.replace(part, dest)
        verified = (f"{expected.algorithm} {expected.value} ({expected.provenance})"
                    if expected is not None else "not verified (--no-verify): no checksum published")
        return Fetched(dest, url, dest.stat().st_size, md5, sha256, verified)
