"""The offline model pool: member specs, the pool list, seeded cached training, the file lock."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from ttabench import registry
from ttabench.errors import TTABenchError
from ttabench.models import mnist_cnn
from ttabench.models.mnist_cnn import MnistCNN, TrainConfig, cached_network
from ttabench.models.mnist_pool import MEMBERS, ConvMLP, load_mnist_pool
from ttabench.models.pools import MNIST_POOL, POOLS, expand_models
from ttabench.testing import check_model_source

SMALL = TrainConfig(epochs=1, n_train=64)


@pytest.fixture()
def small_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every member trained by the 1-epoch, 64-image recipe; a private data folder and cache."""
    monkeypatch.setenv("TTABENCH_DATA_DIR", str(tmp_path / "data"))
    for name, member in list(MEMBERS.items()):
        monkeypatch.setitem(MEMBERS, name, replace(member, config=SMALL))
    return tmp_path / "cache"


def test_the_pool_lists_every_member_and_the_two_offline_models() -> None:
    assert POOLS["mnist-pool"] == MNIST_POOL and len(MNIST_POOL) >= 6
    assert MNIST_POOL[:2] == ("mnist-cnn:0", "mnist-resnet:0")
    assert [spec.partition(":")[2] for spec in MNIST_POOL[2:]] == list(MEMBERS)
    for spec in MNIST_POOL:
        assert registry.model_spec(spec)[0] in registry.names("models")


@pytest.mark.parametrize("name", list(MEMBERS))
def test_every_member_is_a_batchnorm_network_with_a_linear_head(name: str) -> None:
    net = MEMBERS[name].build()
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert isinstance(net.fc, torch.nn.Linear) and net(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_expand_models_replaces_pool_names_and_refuses_repeats() -> None:
    assert expand_models(["tiny-cnn"]) == ["tiny-cnn"]
    assert expand_models(["mnist-pool"]) == list(MNIST_POOL)
    assert expand_models(["tiny-cnn", "mnist-pool"]) == ["tiny-cnn", *MNIST_POOL]
    with pytest.raises(TTABenchError, match="'mnist-cnn:0' is named twice"):
        expand_models(["mnist-cnn:0", "mnist-pool"])
    with pytest.raises(TTABenchError, match="empty"):
        expand_models([])


def test_member_conformance_cache_and_seed(small_pool: Path) -> None:
    check_model_source(load_mnist_pool, "convmlp", cache_dir=small_pool)
    path = small_pool / "models" / "mnist-pool-convmlp-0.pt"
    stamp = path.stat().st_mtime_ns
    loaded = registry.load_model("mnist-pool:convmlp", small_pool)
    assert path.stat().st_mtime_ns == stamp  # read from the cache, not retrained
    assert loaded.model_id == "mnist-pool:convmlp:0" and loaded.classifier == "net.fc"
    assert loaded.preprocessing["training"] == {"seed": 0, "data": "mnist-c train (2,500 digits)",
                                                **asdict(SMALL)}
    other = registry.load_model("mnist-pool:convmlp:5", small_pool)
    assert other.model_id == "mnist-pool:convmlp:5" and other.weights_hash != loaded.weights_hash
    assert (small_pool / "models" / "mnist-pool-convmlp-5.pt").is_file()


def test_training_a_member_is_seeded(small_pool: Path, tmp_path: Path) -> None:
    first = load_mnist_pool("cnn-short", cache_dir=small_pool)
    again = load_mnist_pool("cnn-short", cache_dir=tmp_path / "elsewhere")
    assert first.model_id == "mnist-pool:cnn-short:1"  # the member's own seed
    assert first.weights_hash == again.weights_hash


def test_bad_member_specs_are_one_error() -> None:
    with pytest.raises(TTABenchError, match="is a pool of models"):
        load_mnist_pool(None)
    with pytest.raises(TTABenchError, match="unknown mnist-pool member 'cnn'; members: cnn-narrow"):
        load_mnist_pool("cnn")
    with pytest.raises(TTABenchError, match="integer seed"):
        load_mnist_pool("convmlp:x")
    with pytest.raises(TTABenchError, match="10 classes"):
        load_mnist_pool("convmlp", num_classes=100)


def test_a_second_loader_waits_for_the_training_and_reads_its_file(
        small_pool: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock is held here as a training process would hold it: a loader asking meanwhile
    waits, then reads the checkpoint written under the lock instead of training again."""
    path = small_pool / "models" / "mnist-cnn-2.pt"
    path.parent.mkdir(parents=True)
    trained: list[int] = []
    monkeypatch.setattr(mnist_cnn, "fit_network", lambda *a, **k: trained.append(1))
    got: list[torch.nn.Module] = []
    with FileLock(str(path) + ".lock"):
        waiting = threading.Thread(
            target=lambda: got.append(cached_network("mnist-cnn", MnistCNN, 2, small_pool, SMALL)))
        waiting.start()
        time.sleep(0.5)
        assert waiting.is_alive() and not got  # blocked on the lock
        torch.manual_seed(9)
        weights = MnistCNN().state_dict()
        torch.save({"state_dict": weights, "config": asdict(SMALL), "seed": 2}, path)
    waiting.join(timeout=60)
    assert not trained and len(got) == 1
    assert all(torch.equal(v, got[0].state_dict()[k]) for k, v in weights.items())


def test_a_checkpoint_of_another_architecture_is_retrained(small_pool: Path) -> None:
    path = small_pool / "models" / "mnist-pool-convmlp-0.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": MnistCNN().state_dict(), "config": asdict(SMALL), "seed": 0}, path)
    loaded = load_mnist_pool("convmlp", cache_dir=small_pool)
    assert isinstance(loaded.module.net, ConvMLP)
    assert set(torch.load(path, weights_only=True)["state_dict"]) == set(ConvMLP().state_dict())

