"""``ttabench fetch DATASET`` and ``ttabench fetch-model SPEC``: verified downloads into the
layouts ``ttabench run`` reads (``run`` itself downloads nothing).

Each published file goes through ``ttabench.fetch.transfer.download`` (resumable, checked
against the published checksum, atomic), then an archive is unpacked by
``ttabench.fetch.unpack`` into the suite's folder. What was fetched, from where, with which
digests and what they were checked against is recorded in
``<data_dir>/.ttabench-fetch/<dataset>.json`` (datasets) or
``<cache>/fetch-records/<source>-<name>.json`` (weights); a file the record lists as unpacked,
whose folder is there, is not fetched again. ``--url BASE`` (or ``$TTABENCH_FETCH_MIRROR``)
reads every file from ``BASE/<file name>`` instead of the published location.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from ttabench.errors import TTABenchError
from ttabench.fetch.published import (
    CCC_BASE,
    DATASETS,
    MIRROR_ENV,
    PublishedFile,
    dataset,
    select_parts,
)
from ttabench.fetch.transfer import Fetched, download
from ttabench.fetch.unpack import unpack
from ttabench.paths import cache_dir
from ttabench.store import write_json_atomic

RECORD_DIR = ".ttabench-fetch"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _names(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def source_url(published: str, name: str, mirror: str | None) -> str:
    """The published URL, or ``<mirror>/<name>`` when a mirror is given."""
    return f"{mirror.rstrip('/')}/{name}" if mirror else published


def _mirror(option: str | None) -> str | None:
    return option or os.environ.get(MIRROR_ENV) or None


def read_record(path: Path) -> dict[str, Any]:
    """A fetch record (empty when there is none or it cannot be read)."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _entry(fetched: Fetched, **extra: Any) -> dict[str, Any]:
    return {**asdict(fetched), "path": str(fetched.path), "date": _now(), **extra}


def _progress() -> bool:
    return sys.stderr.isatty()


def _listing() -> list[str]:
    lines = ["datasets `ttabench fetch DATASET` knows (the suite that reads them; the checksum "
             "it verifies):"]
    for source in DATASETS.values():
        digests = sorted({f"{f.digest.algorithm} from {f.digest.provenance}" if f.digest
                          else "none published (--no-verify)" for f in source.files})
        lines.append(f"  {source.key:15} -> <data_dir>/{source.destination} (suite "
                     f"{source.suite}); {'; '.join(digests)}")
    lines.append("  ccc             -> <data_dir>/CCC/<stream>/serial_*.tar (suite ccc); none "
                 "published (--no-verify)")
    return lines


def fetch_archives(key: str, root: Path, parts: list[str], mirror: str | None, verify: bool,
                   keep_archive: bool, echo: Any = click.echo) -> Path:
    """Fetch, verify and unpack the files of dataset ``key`` into ``root``; returns the folder."""
    source = dataset(key)
    files = select_parts(source, parts)
    unverifiable = [f.name for f in files if f.digest is None]
    if unverifiable and verify:  # refused before any transfer
        raise TTABenchError(
            f"no checksum is published for {', '.join(unverifiable)} ({source.title}), so "
            "the download cannot be verified; rerun with --no-verify to accept it (its "
            "SHA-256 is then recorded)")
    record_path = root / RECORD_DIR / f"{key}.json"
    target = root / source.destination
    for published in files:
        record = read_record(record_path)
        done = record.get("files", {}).get(published.name)
        if done and done.get("unpacked") and target.is_dir():
            echo(f"{published.name}: already fetched and unpacked into {target}")
            continue
        fetched = _fetch_file(published, root / RECORD_DIR / "downloads", mirror, verify)
        echo(f"{published.name}: {fetched.size} bytes, {fetched.verified}; unpacking")
        count = unpack(fetched.path, target, published.prefix, progress=_progress())
        if not keep_archive:
            fetched.path.unlink()
        record = read_record(record_path)
        record.update({"dataset": key, "title": source.title, "page": source.page,
                       "destination": str(target)})
        record.setdefault("files", {})[published.name] = _entry(
            fetched, unpacked=count, archive_kept=keep_archive)
        write_json_atomic(record_path, record)
    return target


def _fetch_file(published: PublishedFile, folder: Path, mirror: str | None,
                verify: bool) -> Fetched:
    url = source_url(published.url, published.name, mirror)
    return download(url, folder / published.name, digest=published.digest, verify=verify,
                    progress=_progress())


# --------------------------------------------------------------------------- CCC

STREAM = re.compile(r"baseline(\d+)-speed(\d+)-seed(\d+)")


def ccc_streams(names: list[str]) -> list[tuple[int, int, int]]:
    """(baseline, speed, seed) of each named stream (the ``ccc`` suite's split names), all 27
    when none is named."""
    from ttabench.suites.ccc import BASELINES, SEEDS, SPEEDS

    every = [(b, s, seed) for b in BASELINES for s in SPEEDS for seed in SEEDS]
    if not names:
        return every
    out = []
    for name in names:
        found = STREAM.fullmatch(name)
        if found is None or tuple(map(int, found.groups())) not in every:
            raise TTABenchError(f"unknown CCC stream {name!r}; streams are "
                                "baseline<0|20|40>-speed<1000|2000|5000>-seed<43|44|45>")
        b, s, seed = map(int, found.groups())
        out.append((b, s, seed))
    return out


def shard_images(path: Path) -> int:
    """Complete samples (image and label) in a CCC shard; refuses a file that is not one."""
    from ttabench.suites.ccc import TarImageDataset

    return sum(1 for _ in TarImageDataset._members(path))


def check_shard(path: Path) -> None:
    """Refuse a shard that is not a readable webdataset tar with at least one sample."""
    if not shard_images(path):
        raise TTABenchError(f"{path} holds no CCC sample (<key>.input.jpg + <key>.output.cls)")


def fetch_ccc(root: Path, streams: list[str], images: int, mirror: str | None, verify: bool,
              echo: Any = click.echo) -> Path:
    """Fetch the first shards of each CCC stream until it holds ``images`` images."""
    if verify:
        raise TTABenchError("no checksum is published for CCC's shards, so they cannot be "
                            "verified; rerun with --no-verify to accept them (each shard's "
                            "SHA-256 is then recorded)")
    base = mirror or CCC_BASE
    record_path = root / RECORD_DIR / "ccc.json"
    for baseline, speed, seed in ccc_streams(streams):
        folder = f"baseline_{baseline}_transition+speed_{speed}_seed_{seed}"
        count, index = 0, 0
        while count < images:
            name = f"{folder}/serial_{index:05d}.tar"
            try:
                fetched = download(f"{base.rstrip('/')}/{name}", root / "CCC" / name, digest=None,
                                   verify=False, progress=_progress(), check=check_shard)
            except TTABenchError as err:
                if index and str(err).startswith("HTTP 404"):
                    echo(f"{folder}: the stream ends after {index} shards ({count} images)")
                    break
                raise
            count += shard_images(fetched.path)
            record = read_record(record_path)
            record.setdefault("shards", {})[name] = _entry(fetched)
            write_json_atomic(record_path, record)
            index += 1
        echo(f"{folder}: {count} images in {index} shards")
    return root / "CCC"


# --------------------------------------------------------------------------- commands


@click.command("fetch")
@click.argument("dataset_key", metavar="DATASET", required=False)
@click.option("--data-dir", default=None, help="Dataset root (else $TTABENCH_DATA_DIR, else "
              "<cache>/data): the folder `ttabench run --data-dir` reads.")
@click.option("--part", "parts", multiple=True,
              help="Only these files of the dataset (imagenetc: noise, blur, weather, digital, "
                   "extra); repeatable or comma list.")
@click.option("--url", "mirror", default=None,
              help=f"A mirror: read each file from URL/<file name> (else ${MIRROR_ENV}, else "
                   "the published location).")
@click.option("--no-verify", is_flag=True,
              help="Accept files for which no checksum is published (their SHA-256 is "
                   "recorded); a published checksum is always checked.")
@click.option("--keep-archive", is_flag=True, help="Keep the downloaded archive after unpacking.")
@click.option("--stream", "streams", multiple=True,
              help="ccc only: streams to fetch, e.g. baseline20-speed1000-seed43 (default all 27).")
@click.option("--images", type=click.IntRange(min=1), default=25_000, show_default=True,
              help="ccc only: images per stream (the suite reads the first 25,000).")
def fetch(dataset_key: str | None, data_dir: str | None, parts: tuple[str, ...],
          mirror: str | None, no_verify: bool, keep_archive: bool, streams: tuple[str, ...],
          images: int) -> None:
    """Download DATASET, verified, into the layout its suite reads (no DATASET: list them).

    Resumable: an interrupted transfer is continued by rerunning the same command.
    """
    from ttabench.paths import data_dir as resolve_data_dir

    if dataset_key is None:
        click.echo("\n".join(_listing()))
        return
    root = resolve_data_dir(data_dir)
    if dataset_key == "ccc":
        target = fetch_ccc(root, _names(streams), images, _mirror(mirror), not no_verify)
        suite = "ccc"
    else:
        target = fetch_archives(dataset_key, root, _names(parts), _mirror(mirror),
                                not no_verify, keep_archive)
        suite = DATASETS[dataset_key].suite
    click.echo(f"ready: {target} (suite {suite}: ttabench run -s {suite} --data-dir {root})")


@click.command("fetch-model")
@click.argument("spec")
@click.option("--url", "mirror", default=None,
              help=f"A mirror: read the file from URL/<file name> (else ${MIRROR_ENV}).")
@click.option("--no-verify", is_flag=True,
              help="Accept a file for which no checksum is published (robustbench's Google "
                   "Drive files); its SHA-256 is recorded.")
def fetch_model(spec: str, mirror: str | None, no_verify: bool) -> None:
    """Download the weights of SPEC (torchvision:..., timm:..., robustbench:...), verified,
    to where its model source reads them."""
    from ttabench.fetch.models import model_file

    cache = cache_dir()
    planned = model_file(spec, cache)
    if planned.digest is None and not no_verify and spec.startswith("robustbench:"):
        raise TTABenchError(f"no checksum is published for {planned.spec} ({planned.note}); "
                            "rerun with --no-verify to accept it (its SHA-256 is then recorded)")
    url = source_url(planned.url, planned.dest.name, _mirror(mirror))
    fetched = download(url, planned.dest, digest=planned.digest, verify=not no_verify,
                       progress=_progress(), check=planned.check)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", planned.spec)
    write_json_atomic(cache / "fetch-records" / f"{safe}.json",
                      {"spec": planned.spec, **_entry(fetched), "note": planned.note})
    click.echo(f"{planned.spec}: {fetched.path} ({fetched.size} bytes, sha256 "
               f"{fetched.sha256}; {fetched.verified})")
