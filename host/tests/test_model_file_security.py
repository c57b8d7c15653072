"""Model files a user points at are read as tensors only: a crafted pickle never runs code.

Each crafted file holds an object whose ``__reduce__`` would create a marker file when
unpickled. Loading it must fail with one line, and the marker must not exist afterwards. A
whole pickled module loads only with the explicit opt-in (``trust_pickle`` /
``--trust-pickle``), a TorchScript program only with ``trust_torchscript`` /
``--trust-torchscript``: its ``__setstate__`` runs at ``torch.jit.load`` and can write files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cli_checks import no_cells
from ttabench.cli import main
from ttabench.errors import TTABenchError
from ttabench.models.hubs import load_checkpoint, load_robustbench, load_timm, robustbench_weight_file
from ttabench.models.tiny import TinyCNN


class Payload:
    """Unpickling this creates ``marker`` (it calls ``open(marker, "w")``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def crafted(path: Path, marker: Path, wrap: bool = False) -> Path:
    """A torch.save file whose unpickling would create ``marker``; with ``wrap`` the payload
    hides inside an otherwise well-formed ``{"arch": ..., "state_dict": ...}`` dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = Payload(marker)
    if wrap:
        content = {"arch": "timm:resnet10t", "state_dict": {"fc.bias": content}}
    torch.save(content, path)
    return path


@pytest.mark.parametrize("wrap", [False, True])
def test_crafted_checkpoint_does_not_run_code(tmp_path: Path, wrap: bool) -> None:
    marker = tmp_path / "marker"
    path = crafted(tmp_path / "model.pt", marker, wrap)
    with pytest.raises(TTABenchError) as info:
        load_checkpoint(str(path))
    assert not marker.exists()
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "--trust-pickle" in message


def test_crafted_checkpoint_through_the_cli_is_one_line_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = crafted(tmp_path / "model.pt", marker)
    (tmp_path / "none.toml").write_text("")
    result = CliRunner().invoke(main, ["run", "-s", "tiny", "-m", str(path), "-e", "ac",
                                       "--config", str(tmp_path / "none.toml"),
                                       "-o", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--trust-pickle" in lines[0]
    assert not marker.exists()
    assert no_cells(tmp_path / "out")


def test_whole_pickled_module_needs_the_explicit_opt_in(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = TinyCNN(num_classes=4).eval()
    torch.save(net, tmp_path / "whole.pt")
    with pytest.raises(TTABenchError, match="--trust-pickle"):
        load_checkpoint(str(tmp_path / "whole.pt"))
    loaded = load_checkpoint(str(tmp_path / "whole.pt"), trust_pickle=True)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.module(x), net(x))
    assert loaded.preprocessing["checkpoint_form"] == "module"


def test_trust_pickle_flag_reaches_the_checkpoint_source(tmp_path: Path) -> None:
    net = TinyCNN(num_classes=4).eval()
    torch.save(net, tmp_path / "whole.pt")
    (tmp_path / "none.toml").write_text("")
    args = ["run", "-s", "tiny", "-m", str(tmp_path / "whole.pt"), "-e", "ac", "--n-boot", "10",
            "--set", "suite.tiny.n_examples=64", "--config", str(tmp_path / "none.toml"),
            "-o", str(tmp_path / "out")]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "--trust-pickle" in refused.stderr
    accepted = CliRunner().invoke(main, [*args, "--trust-pickle"])
    assert accepted.exit_code == 0, accepted.output
    assert len(list((tmp_path / "out" / "cells").glob("*.json"))) == 6


def test_trust_pickle_help_says_what_it_trusts() -> None:
    for command in ("run", "estimate"):
        result = CliRunner().invoke(main, [command, "--help"])
        text = " ".join(result.output.split())
        assert "--trust-pickle" in text and "arbitrary code" in text, command


def test_safetensors_checkpoint_with_its_architecture_in_the_metadata(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(5)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    path = tmp_path / "net.safetensors"
    save_file(net.state_dict(), path, metadata={"arch": "timm:resnet10t", "num_classes": "3"})
    loaded = load_checkpoint(str(path))
    assert loaded.num_classes == 3
    saved, got = net.state_dict(), loaded.module.net.state_dict()
    assert saved.keys() == got.keys() and all(torch.equal(saved[k], got[k]) for k in saved)
    assert loaded.preprocessing["checkpoint_form"] == "state_dict"


@pytest.mark.parametrize("num_classes", [None, 4])
def test_crafted_timm_weights_do_not_run_code(tmp_path: Path, num_classes: int | None) -> None:
    """Both timm paths: the default head (pretrained config) and a fine-tuned head."""
    marker = tmp_path / "marker"
    crafted(tmp_path / "weights" / "timm" / "resnet10t.pth", marker)
    with pytest.raises(TTABenchError) as info:
        load_timm("resnet10t", cache_dir=tmp_path, num_classes=num_classes)
    assert not marker.exists()
    assert "\n" not in str(info.value) and "resnet10t.pth" in str(info.value)


def test_timm_weights_with_a_checkpoint_wrapper_load_strictly(tmp_path: Path) -> None:
    """timm's own reader unwraps ``{"state_dict": ...}`` and strips ``module.``: so does ours."""
    import timm

    torch.manual_seed(6)
    net = timm.create_model("resnet10t", pretrained=False)
    folder = tmp_path / "weights" / "timm"
    folder.mkdir(parents=True)
    wrapped = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, folder / "resnet10t.pth")
    loaded = load_timm("resnet10t", cache_dir=tmp_path)
    saved, got = net.state_dict(), loaded.module.net.state_dict()
    assert all(torch.equal(saved[k], got[k]) for k in saved)
    assert not hasattr(loaded.module.net.pretrained_cfg, "state_dict") and \
        "state_dict" not in loaded.module.net.pretrained_cfg
    torch.save({k: v for k, v in net.state_dict().items() if k != "fc.bias"},
               folder / "resnet10t.pth")
    with pytest.raises(TTABenchError, match="fc.bias"):
        load_timm("resnet10t", cache_dir=tmp_path)


def test_crafted_robustbench_file_does_not_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = robustbench_weight_file("cifar10", "Hendrycks2020AugMix_ResNeXt", "corruptions",
                                   tmp_path)
    crafted(path, marker)
    with pytest.raises(TTABenchError) as info:
        load_robustbench("cifar10/Hendrycks2020AugMix_ResNeXt", cache_dir=tmp_path)
    assert not marker.exists()
    assert "\n" not in str(info.value)


def test_timms_checkpoint_filter_still_applies_to_the_tensors_read_here(tmp_path: Path) -> None:
    """A ViT checkpoint saved at 384 px loads into the 224 px model: timm's filter resamples its
    position embedding, as it would for a file timm read itself."""
    import timm
    from timm.layers import resample_abs_pos_embed

    torch.manual_seed(7)
    saved = timm.create_model("vit_tiny_patch16_384", pretrained=False).state_dict()
    folder = tmp_path / "weights" / "timm"
    folder.mkdir(parents=True)
    torch.save(saved, folder / "vit_tiny_patch16_224.pth")
    loaded = load_timm("vit_tiny_patch16_224", cache_dir=tmp_path).module.net
    expected = resample_abs_pos_embed(saved["pos_embed"], new_size=(14, 14), num_prefix_tokens=1,
                                      interpolation="bicubic", antialias=True, verbose=False)
    assert torch.allclose(loaded.pos_embed, expected)
    assert torch.equal(loaded.head.weight, saved["head.weight"])


class WritesAtLoad(nn.Module):
    """A TorchScript model whose ``__setstate__`` (run by ``torch.jit.load``) overwrites the
    first 4 bytes of the file ``path`` with ``BBBB`` through ``aten::from_file(shared=True)``,
    as the audit's crafted checkpoint did to an unrelated file."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.weight = nn.Parameter(torch.zeros(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) @ self.weight.t()

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return (self.weight, self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        victim = torch.from_file(state[1], shared=True, size=4, dtype=torch.uint8)
        self.weight = state[0]
        self.path = state[1]
        self.training = bool(victim.fill_(66).sum() < 0) or state[2]


def scripted_writer(tmp_path: Path) -> tuple[Path, Path]:
    """(the crafted TorchScript file, the victim file it overwrites when loaded)."""
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"safe")
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(WritesAtLoad(str(victim))), str(path))
    assert victim.read_bytes() == b"safe"
    return path, victim


def test_torchscript_checkpoint_needs_the_explicit_opt_in(tmp_path: Path) -> None:
    path, victim = scripted_writer(tmp_path)
    with pytest.raises(TTABenchError) as info:
        load_checkpoint(str(path), trust_pickle=True)
    assert victim.read_bytes() == b"safe"
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "--trust-torchscript" in message
    loaded = load_checkpoint(str(path), num_classes=4, trust_torchscript=True)
    assert victim.read_bytes() == b"BBBB"  # the opt-in really runs the file's program
    assert loaded.preprocessing["checkpoint_form"] == "torchscript"


@pytest.mark.parametrize("dry_run", [True, False])
def test_torchscript_checkpoint_through_the_cli_runs_nothing(tmp_path: Path, dry_run: bool) -> None:
    path, victim = scripted_writer(tmp_path)
    (tmp_path / "none.toml").write_text("")
    result = CliRunner().invoke(main, ["run", "-s", "tiny", "-m", str(path), "-e", "ac",
                                       "--config", str(tmp_path / "none.toml"), "--trust-pickle",
                                       "-o", str(tmp_path / "out"),
                                       *(["--dry-run"] if dry_run else [])])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--trust-torchscript" in lines[0]
    assert victim.read_bytes() == b"safe"
    assert no_cells(tmp_path / "out")


def test_trust_torchscript_help_says_what_it_trusts() -> None:
    for command in ("run", "estimate"):
        result = CliRunner().invoke(main, [command, "--help"])
        text = " ".join(result.output.split())
        assert "--trust-torchscript" in text and "write files" in text, command
