"""``ttabench fetch`` end to end against an HTTP server on 127.0.0.1 started here (a mirror
given with ``--url``), serving fabricated archives laid out as the published ones.

The published checksums cannot match fabricated files, so each test puts the checksum of its
own archive in the dataset table (``monkeypatch``); the comparison itself is the real one.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import tarfile
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli_checks import one_line_error
from loopback_server import LoopbackServer
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.fetch import published, transfer
from ttabench.fetch.published import Digest
from ttabench.fetch.unpack import unpack
from ttabench.suites.ccc import CCC
from ttabench.suites.cifar import CIFAR10C

N = 4  # images per severity block


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _tar(entries: dict[str, bytes], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def cifar_archive() -> tuple[bytes, np.ndarray, np.ndarray]:
    """A CIFAR-10-C.tar as published (top folder CIFAR-10-C), with one corruption."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5 * N).astype(np.int64)
    data = _tar({"CIFAR-10-C/labels.npy": _npy(labels), "CIFAR-10-C/fog.npy": _npy(images),
                 "CIFAR-10-C/README.txt": b"fabricated"})
    return data, images, labels


def publish(monkeypatch, key: str, data: bytes, algorithm: str = "md5") -> None:
    """Make the table's checksum of ``key``'s one file that of ``data``."""
    source = published.DATASETS[key]
    value = (hashlib.md5(data).hexdigest() if algorithm == "md5"
             else hashlib.sha256(data).hexdigest())
    file = dataclasses.replace(source.files[0], digest=Digest(algorithm, value, "this test"))
    monkeypatch.setitem(published.DATASETS, key, dataclasses.replace(source, files=(file,)))


def fetch(*args: str):
    return CliRunner().invoke(main, ["fetch", *args])


def test_cifar10c_fetched_into_the_suite_layout_and_recorded(tmp_path, server, monkeypatch):
    data, images, labels = cifar_archive()
    server.files["/CIFAR-10-C.tar"] = data
    publish(monkeypatch, "cifar10c", data)
    root = tmp_path / "data"
    result = fetch("cifar10c", "--data-dir", str(root), "--url", server.url)
    assert result.exit_code == 0, result.output
    suite = CIFAR10C(root, corruptions="fog")  # the suite reads what was fetched
    rows = suite.dataset(suite.splits()[2])  # fog-3
    image, label = rows[1]
    assert np.array_equal(image.numpy().transpose(1, 2, 0), images[2 * N + 1])
    assert label == labels[2 * N + 1]
    record = json.loads((root / ".ttabench-fetch" / "cifar10c.json").read_text())
    entry = record["files"]["CIFAR-10-C.tar"]
    assert entry["md5"] == hashlib.md5(data).hexdigest()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["unpacked"] == 3
    assert not (root / ".ttabench-fetch" / "downloads" / "CIFAR-10-C.tar").exists()
    assert not list(root.glob(".staging-*"))
    requests = len(server.requests)
    again = fetch("cifar10c", "--data-dir", str(root), "--url", server.url)
    assert again.exit_code == 0 and "already fetched" in again.output
    assert len(server.requests) == requests  # nothing transferred twice


def test_run_downloads_nothing_and_names_the_fetch_command(tmp_path):
    config = tmp_path / "empty.toml"
    config.write_text("")
    result = CliRunner().invoke(main, ["run", "-s", "cifar10c", "-m", "tiny-cnn", "-a", "source",
                                       "-e", "ac", "--data-dir", str(tmp_path), "--dry-run", "--config",
                                       str(config)])
    assert "`ttabench fetch cifar10c`" in one_line_error(result)


def test_checksum_mismatch_removes_the_file_and_unpacks_nothing(tmp_path, server, monkeypatch):
    data, _, _ = cifar_archive()
    server.files["/CIFAR-10-C.tar"] = data
    publish(monkeypatch, "cifar10c", data + b"x")  # the published file is another one
    root = tmp_path / "data"
    line = one_line_error(fetch("cifar10c", "--data-dir", str(root), "--url", server.url))
    assert "checksum mismatch" in line and hashlib.md5(data).hexdigest() in line
    assert not (root / "CIFAR-10-C").exists()
    assert not list((root / ".ttabench-fetch" / "downloads").glob("CIFAR-10-C.tar*.part"))


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path, server, monkeypatch):
    data, images, _ = cifar_archive()
    server.files["/CIFAR-10-C.tar"] = data
    server.cut["/CIFAR-10-C.tar"] = 5000  # the first answer breaks off after 5000 bytes
    publish(monkeypatch, "cifar10c", data)
    root = tmp_path / "data"
    line = one_line_error(fetch("cifar10c", "--data-dir", str(root), "--url", server.url))
    assert f"interrupted after 5000 of {len(data)} bytes" in line and "rerun" in line
    part = root / ".ttabench-fetch" / "downloads" / "CIFAR-10-C.tar.part"
    assert part.stat().st_size == 5000 and not (root / "CIFAR-10-C").exists()
    result = fetch("cifar10c", "--data-dir", str(root), "--url", server.url)
    assert result.exit_code == 0, result.output
    assert server.requests[-1] == ("/CIFAR-10-C.tar", "bytes=5000-")
    rows = CIFAR10C(root, corruptions="fog").dataset(CIFAR10C(root, corruptions="fog").splits()[0])
    assert np.array_equal(rows[0][0].numpy().transpose(1, 2, 0), images[0])


def test_a_web_page_instead_of_the_file_is_one_line_and_saves_nothing(tmp_path, server,
                                                                       monkeypatch):
    server.html.add("/CIFAR-10-C.tar")
    root = tmp_path / "data"
    line = one_line_error(fetch("cifar10c", "--data-dir", str(root), "--url", server.url))
    assert "answered a web page" in line and "text/html" in line
    downloads = root / ".ttabench-fetch" / "downloads"
    assert not (downloads / "CIFAR-10-C.tar").exists()
    assert not (downloads / "CIFAR-10-C.tar.part").exists()


def test_not_found(tmp_path, server):
    line = one_line_error(fetch("cifar10c", "--data-dir", str(tmp_path), "--url", server.url))
    assert "HTTP 404" in line and f"{server.url}/CIFAR-10-C.tar" in line


def test_the_mirror_variable_is_read_and_url_wins_over_it(tmp_path, server, monkeypatch):
    """``$TTABENCH_FETCH_MIRROR`` names the mirror when ``--url`` is not given; ``--url`` wins."""
    other = LoopbackServer()
    try:
        monkeypatch.setenv(published.MIRROR_ENV, other.url)
        line = one_line_error(fetch("cifar10c", "--data-dir", str(tmp_path)))
        assert f"{other.url}/CIFAR-10-C.tar" in line and len(other.requests) == 1
        line = one_line_error(fetch("cifar10c", "--data-dir", str(tmp_path), "--url", server.url))
        assert f"{server.url}/CIFAR-10-C.tar" in line and len(other.requests) == 1
        assert len(server.requests) == 1
    finally:
        other.close()


def test_disk_full_simulated_keeps_the_part_for_resuming(tmp_path, server, monkeypatch):
    """Simulated: a tiny filesystem cannot be made here, so the write into the part file
    raises ENOSPC (as a full disk does) once 1 MiB is written."""
    data, _, _ = cifar_archive()
    data += bytes(2 << 20)  # trailing zero blocks: still a valid tar, now over 2 MiB
    server.files["/CIFAR-10-C.tar"] = data
    publish(monkeypatch, "cifar10c", data)
    real_open = open

    class FullDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def flush(self):
            self.handle.flush()

        def write(self, block):
            if self.written + len(block) > 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(block)
            return self.handle.write(block)

    monkeypatch.setattr(transfer, "open", lambda *a, **k: FullDisk(real_open(*a, **k)),
                        raising=False)
    root = tmp_path / "data"
    line = one_line_error(fetch("cifar10c", "--data-dir", str(root), "--url", server.url))
    assert "no space left on the device" in line and "resume" in line
    part = root / ".ttabench-fetch" / "downloads" / "CIFAR-10-C.tar.part"
    assert part.stat().st_size == 1 << 20
    monkeypatch.undo()  # space freed
    publish(monkeypatch, "cifar10c", data)
    assert fetch("cifar10c", "--data-dir", str(root), "--url", server.url).exit_code == 0
    assert server.requests[-1][1] == f"bytes={1 << 20}-"


def test_no_published_checksum_needs_no_verify_and_records_the_digest(tmp_path, server):
    archive = _tar({"cbar_download/sparkles/1/n01440764/a.JPEG": b"jpeg bytes"}, "w:gz")
    server.files["/imagenet_c_bar.tar.gz"] = archive
    root = tmp_path / "data"
    line = one_line_error(fetch("imagenet-c-bar", "--data-dir", str(root), "--url", server.url))
    assert "--no-verify" in line and server.requests == []  # refused before any transfer
    result = fetch("imagenet-c-bar", "--data-dir", str(root), "--url", server.url, "--no-verify")
    assert result.exit_code == 0, result.output
    assert (root / "ImageNet-C-Bar/sparkles/1/n01440764/a.JPEG").read_bytes() == b"jpeg bytes"
    record = json.loads((root / ".ttabench-fetch/imagenet-c-bar.json").read_text())
    entry = record["files"]["imagenet_c_bar.tar.gz"]
    assert entry["sha256"] == hashlib.sha256(archive).hexdigest()
    assert entry["verified"].startswith("not verified (--no-verify)")


def test_imagenetc_parts_merge_into_one_folder(tmp_path, server, monkeypatch):
    parts = {"noise": _tar({"gaussian_noise/1/n0/a.JPEG": b"a"}),
             "blur": _tar({"defocus_blur/1/n0/b.JPEG": b"b"})}
    source = published.DATASETS["imagenetc"]
    files = []
    for file in source.files:
        data = parts.get(file.part, b"unused")
        server.files[f"/{file.name}"] = data
        files.append(dataclasses.replace(
            file, digest=Digest("md5", hashlib.md5(data).hexdigest(), "this test")))
    monkeypatch.setitem(published.DATASETS, "imagenetc",
                        dataclasses.replace(source, files=tuple(files)))
    root = tmp_path / "data"
    line = one_line_error(fetch("imagenetc", "--data-dir", str(root), "--part", "nois"))
    assert "no part nois" in line
    result = fetch("imagenetc", "--data-dir", str(root), "--url", server.url, "--part",
                   "noise,blur")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (root / "ImageNet-C").iterdir()) == ["defocus_blur",
                                                                       "gaussian_noise"]
    assert {path for path, _ in server.requests} == {"/noise.tar", "/blur.tar"}


@pytest.mark.parametrize("kind", ["traversal", "absolute", "symlink", "hardlink", "zip-absolute",
                                  "outside-prefix"])
def test_unpack_refuses_what_could_land_outside(tmp_path, kind):
    buffer = io.BytesIO()
    if kind == "zip-absolute":
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("/etc/evil", b"x")
    else:
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo({"traversal": "data/../../evil", "absolute": "/tmp/evil",
                                    "outside-prefix": "other/evil"}.get(kind, "data/link"))
            if kind in ("symlink", "hardlink"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = "../../outside"
                tar.addfile(info)
            else:
                info.size = 1
                tar.addfile(info, io.BytesIO(b"x"))
    archive_path = tmp_path / "archive"
    archive_path.write_bytes(buffer.getvalue())
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(TTABenchError, match="refused"):
        unpack(archive_path, dest, prefix="" if kind in ("zip-absolute", "absolute") else "data",
               progress=False)
    assert not dest.exists() and not (tmp_path / "evil").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["archive"] or not list(
        (tmp_path / "deep").iterdir())


def _jpeg(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (colour, 0, 0)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_ccc_shards_until_the_stream_holds_the_images(tmp_path, server):
    folder = "baseline_0_transition+speed_1000_seed_43"
    for shard in range(2):
        server.files[f"/{folder}/serial_{shard:05d}.tar"] = _tar({
            name: data for k in range(3) for name, data in (
                (f"{shard}{k:04d}.input.jpg", _jpeg(40 * k)),
                (f"{shard}{k:04d}.output.cls", str(7 * k + shard).encode()))})
    root = tmp_path / "data"
    args = ["ccc", "--data-dir", str(root), "--url", server.url, "--stream",
            "baseline0-speed1000-seed43"]
    assert "--no-verify" in one_line_error(fetch(*args, "--images", "4"))
    result = fetch(*args, "--images", "4", "--no-verify")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (root / "CCC" / folder).glob("*.tar")) == [
        "serial_00000.tar", "serial_00001.tar"]
    result = fetch(*args, "--images", "100", "--no-verify")  # more than the stream holds
    assert result.exit_code == 0 and "ends after 2 shards (6 images)" in result.output
    suite = CCC(root, max_images=25_000)
    rows = suite.dataset(suite.splits()[0])
    assert [rows[i][1] for i in range(len(rows))] == [0, 7, 14, 1, 8, 15]
    record = json.loads((root / ".ttabench-fetch/ccc.json").read_text())
    shard = f"{folder}/serial_00001.tar"
    assert record["shards"][shard]["sha256"] == hashlib.sha256(
        server.files[f"/{shard}"]).hexdigest()
    line = one_line_error(fetch("ccc", "--stream", "baseline10-speed1000-seed43", "--no-verify"))
    assert "unknown CCC stream" in line


def test_unknown_dataset_and_listing():
    assert "did you mean 'cifar10c'" in one_line_error(fetch("cifar10x"))
    listing = fetch()
    assert listing.exit_code == 0
    assert "cifar10c" in listing.output and "Zenodo record 2535967" in listing.output
    assert "imagenet-c-bar" in listing.output and "none published" in listing.output
