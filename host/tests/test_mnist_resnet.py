"""mnist-resnet: the model-source conformance kit, seeded training, the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttabench.models import mnist_resnet
from ttabench.models.mnist_cnn import TrainConfig, fit_network
from ttabench.models.mnist_resnet import MnistResNet, load_mnist_resnet
from ttabench.suites.mnistc import mnist_digits, to_32px
from ttabench.testing import check_model_source

SMALL = TrainConfig(epochs=1, n_train=64)


@pytest.fixture()
def small_recipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TTABENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(mnist_resnet, "TRAIN_CONFIG", SMALL)
    return tmp_path / "cache"


def test_conformance_kit_and_cache(small_recipe: Path) -> None:
    check_model_source(load_mnist_resnet, "4", cache_dir=small_recipe)
    path = small_recipe / "models" / "mnist-resnet-4.pt"
    stamp = path.stat().st_mtime_ns
    loaded = load_mnist_resnet("4", cache_dir=small_recipe)
    assert path.stat().st_mtime_ns == stamp  # read from the cache, not retrained
    assert loaded.model_id == "mnist-resnet:4" and loaded.classifier == "net.fc"
    assert loaded.preprocessing["training"]["epochs"] == 1
    bns = [m for m in loaded.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 10


def test_training_is_seeded() -> None:
    images, labels = mnist_digits()
    x, y = to_32px(images[:64]), labels[:64]
    config = TrainConfig(epochs=1, batch_size=32)

    def train(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return fit_network(MnistResNet(), x, y, seed, config).state_dict()

    a, b, c = train(0), train(0), train(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_argument_is_one_error() -> None:
    from ttabench.errors import TTABenchError

    with pytest.raises(TTABenchError, match="integer seed"):
        load_mnist_resnet("x")
    with pytest.raises(TTABenchError, match="10 classes"):
        load_mnist_resnet(None, num_classes=100)
