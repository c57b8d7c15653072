"""Model sources: timm, torchvision, robustbench, checkpoint files, cifar10-resnet18.

Weights are fabricated in tmp_path in each hub's on-disk layout (nothing can be downloaded);
loaded weights are compared tensor by tensor with what was saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ttabench.errors import TTABenchError
from ttabench.models.base import weights_hash
from ttabench.models.cifar_resnet import load_cifar10_resnet18
from ttabench.models.hubs import (
    load_checkpoint,
    load_robustbench,
    load_timm,
    load_torchvision,
    robustbench_weight_file,
)
from ttabench.models.tiny import TinyCNN
from ttabench.registry import load_model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_timm_local_file_round_trip(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet18", pretrained=False)
    folder = tmp_path / "weights" / "timm"
    folder.mkdir(parents=True)
    torch.save(net.state_dict(), folder / "resnet18.pth")
    loaded = load_timm("resnet18", cache_dir=tmp_path)
    assert same_weights(loaded.module.net, net)
    assert loaded.num_classes == 1000 and loaded.classifier == "net.fc"
    assert loaded.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert loaded.weights_hash == weights_hash(loaded.module)
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), net.eval()((x - mean) / std), atol=1e-5)


def test_timm_finetuned_head_and_env_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import timm

    net = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "resnet10t.pth")
    monkeypatch.setenv("TTABENCH_TIMM_WEIGHTS", str(folder))
    loaded = load_timm("resnet10t", cache_dir=tmp_path / "cache", num_classes=10)
    assert loaded.num_classes == 10 and same_weights(loaded.module.net, net)
    with pytest.raises(TTABenchError, match="does not fit"):
        load_timm("resnet10t", cache_dir=tmp_path / "cache", num_classes=7)


def test_timm_missing_weights_and_random(tmp_path: Path) -> None:
    with pytest.raises(TTABenchError) as info:
        load_timm("resnet18", cache_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "weights" / "timm") in message and "\n" not in message
    with pytest.raises(TTABenchError, match="no model"):
        load_timm("resnet9000?random", cache_dir=tmp_path)
    a = load_timm("resnet10t?random", cache_dir=tmp_path, num_classes=5)
    b = load_timm("resnet10t@random", cache_dir=tmp_path, num_classes=5)
    assert a.num_classes == 5 and a.weights_hash == b.weights_hash  # seeded


def test_torchvision_from_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(TTABenchError, match="resnet18-f37072fd.pth"):
        load_torchvision("resnet18", cache_dir=tmp_path)
    torch.manual_seed(2)
    net = resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    loaded = load_torchvision("resnet18", cache_dir=tmp_path)  # IMAGENET1K_V1 by default
    assert loaded.model_id == "torchvision:resnet18/IMAGENET1K_V1"
    assert same_weights(loaded.module.net, net) and loaded.num_classes == 1000
    assert loaded.preprocessing["std"] == pytest.approx([0.229, 0.224, 0.225])
    assert loaded.preprocessing["resize"] == [256] and loaded.preprocessing["input_size"] == [224]
    with pytest.raises(TTABenchError, match="no weights 'V9'"):
        load_torchvision("resnet18/V9", cache_dir=tmp_path)


def test_robustbench_compat_and_missing_file(tmp_path: Path) -> None:
    from ttabench.compat import import_robustbench

    module = import_robustbench()
    import pyautoattack

    assert sys.modules["autoattack"] is pyautoattack and module.__name__ == "robustbench"
    with pytest.raises(TTABenchError) as info:
        load_robustbench("cifar10/Standard", cache_dir=tmp_path)
    expected = robustbench_weight_file("cifar10", "Standard", "corruptions", tmp_path)
    assert str(expected) in str(info.value)
    assert "`ttabench fetch-model robustbench:cifar10/Standard/corruptions`" in str(info.value)
    assert expected == tmp_path / "weights/robustbench/cifar10/corruptions/Standard.pt"
    with pytest.raises(TTABenchError, match="robustbench:<dataset>/<name>"):
        load_robustbench("Standard", cache_dir=tmp_path)


def test_robustbench_loads_fabricated_file(tmp_path: Path) -> None:
    from ttabench.compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    name = "Hendrycks2020AugMix_ResNeXt"
    zoo = model_dicts[BenchmarkDataset("cifar10")][ThreatModel("corruptions")]
    torch.manual_seed(3)
    net = zoo[name]["model"]()
    path = robustbench_weight_file("cifar10", name, "corruptions", tmp_path)
    path.parent.mkdir(parents=True)
    torch.save(net.state_dict(), path)
    loaded = load_robustbench(f"cifar10/{name}", cache_dir=tmp_path)
    assert loaded.num_classes == 10 and same_weights(loaded.module.net, net)
    assert loaded.model_id == f"robustbench:cifar10/{name}/corruptions"


def test_checkpoint_forms(tmp_path: Path) -> None:
    torch.manual_seed(4)
    net = TinyCNN(num_classes=6).eval()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
    torch.save(net, tmp_path / "whole.pt")
    torch.jit.save(torch.jit.script(net), tmp_path / "scripted.pt")
    for file, form in (("whole.pt", "module"), ("scripted.pt", "torchscript")):
        loaded = load_checkpoint(str(tmp_path / file), trust_pickle=True, trust_torchscript=True)
        assert loaded.preprocessing["checkpoint_form"] == form and loaded.num_classes == 6
        with torch.no_grad():
            assert torch.allclose(loaded.module(x), expected, atol=1e-6)
    import timm

    head = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    torch.save({"arch": "timm:resnet10t", "state_dict": head.state_dict(), "num_classes": 3,
                "mean": [0.5] * 3, "std": [0.5] * 3}, tmp_path / "dict.pth")
    loaded = load_model(str(tmp_path / "dict.pth"), cache_dir=tmp_path)  # a path -> checkpoint
    assert loaded.num_classes == 3 and same_weights(loaded.module.net, head)
    assert loaded.preprocessing["mean"] == [0.5] * 3
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(TTABenchError, match="neither a module"):
        load_checkpoint(str(tmp_path / "bad.pt"))
    with pytest.raises(TTABenchError, match="not found"):
        load_checkpoint(str(tmp_path / "absent.pt"))


def test_cifar10_resnet18_from_pyautoattack(tmp_path: Path) -> None:
    loaded = load_model("cifar10-resnet18", cache_dir=tmp_path)
    bn = [m for m in loaded.module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bn) == 20 and loaded.num_classes == 10 and loaded.classifier == "net.linear"
    assert loaded.preprocessing["mean"] == [0.0] * 3 and loaded.preprocessing["std"] == [1.0] * 3
    assert loaded.weights_hash == load_cifar10_resnet18().weights_hash
    with torch.no_grad():
        assert loaded.module(torch.rand(2, 3, 32, 32)).shape == (2, 10)
