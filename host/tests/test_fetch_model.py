"""``ttabench fetch-model`` against a loopback mirror (``--url``): each source's checksum rule,
its destination (where the model source reads), and the tensors-only check that keeps any code
in a fetched file from running."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save as save_safetensors

from cli_checks import one_line_error
from loopback_server import LoopbackServer
from ttabench.cli import main
from ttabench.models.hubs import robustbench_weight_file


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TTABENCH_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


def fetch_model(*args: str):
    return CliRunner().invoke(main, ["fetch-model", *args])


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_torchvision_file_is_checked_against_the_hash_in_its_name(tmp_path, server, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    server.files["/resnet18-f37072fd.pth"] = _torch_bytes({"w": torch.zeros(2)})
    line = one_line_error(fetch_model("torchvision:resnet18", "--url", server.url))
    assert "sha256-prefix" in line and "published f37072fd" in line
    assert not list((tmp_path / "torch").rglob("*.pth*"))


def test_timm_weights_verified_by_the_hub_digest_land_where_timm_reads(tmp_path, server):
    data = save_safetensors({"fc.weight": torch.ones(3, 2)})
    path = "/resnet18.safetensors"
    server.files[path] = data
    server.headers[path] = {"X-Linked-Etag": f'"{hashlib.sha256(data + b"!").hexdigest()}"'}
    line = one_line_error(fetch_model("timm:resnet18", "--url", server.url))
    assert "checksum mismatch" in line and "X-Linked-Etag" in line
    server.headers[path] = {"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"'}
    result = fetch_model("timm:resnet18", "--url", server.url)
    assert result.exit_code == 0, result.output
    cache = tmp_path / "cache"
    assert (cache / "weights" / "timm" / "resnet18.safetensors").read_bytes() == data
    record = json.loads((cache / "fetch-records" / "timm-resnet18.json").read_text())
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_a_mirror_that_states_no_digest_needs_no_verify(tmp_path, server):
    server.files["/resnet18.safetensors"] = save_safetensors({"w": torch.ones(1)})
    line = one_line_error(fetch_model("timm:resnet18", "--url", server.url))
    assert "no checksum is published" in line and "--no-verify" in line


class Marker:
    """Unpickling this would create a file: it must never happen."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_robustbench_needs_no_verify_and_refuses_a_file_that_is_not_tensors(tmp_path, server):
    name = "/Standard.pt"
    spec = "robustbench:cifar10/Standard"
    assert "--no-verify" in one_line_error(fetch_model(spec, "--url", server.url))
    assert server.requests == []  # refused before any transfer
    marker = tmp_path / "code-ran"
    server.files[name] = _torch_bytes({"state_dict": {"w": torch.ones(1)}, "x": Marker(marker)})
    line = one_line_error(fetch_model(spec, "--url", server.url, "--no-verify"))
    assert line.startswith("error: refused") and "holds more than tensors" in line
    cache = tmp_path / "cache"
    dest = robustbench_weight_file("cifar10", "Standard", "corruptions", cache)
    assert not marker.exists() and not dest.exists() and not dest.with_name("Standard.pt.part").exists()
    state = {"state_dict": {"w": torch.arange(3.0)}}
    server.files[name] = _torch_bytes(state)
    result = fetch_model(spec, "--url", server.url, "--no-verify")
    assert result.exit_code == 0, result.output
    assert torch.equal(torch.load(dest, weights_only=True)["state_dict"]["w"], torch.arange(3.0))
    assert "not verified (--no-verify)" in result.output


def test_bad_specs_are_one_line():
    assert "fetch-model takes" in one_line_error(fetch_model("mnist-cnn"))
    assert "timm has no model" in one_line_error(fetch_model("timm:not-a-model"))
    line = one_line_error(fetch_model("robustbench:imagenet/Standard_R50"))
    assert "torchvision:resnet50/IMAGENET1K_V1" in line
    assert "did you mean" in one_line_error(fetch_model("robustbench:cifar10/Standrd"))
