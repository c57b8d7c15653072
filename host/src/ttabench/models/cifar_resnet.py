"""``cifar10-resnet18``: the trained CIFAR-10 ResNet-18 that ships inside ``pyautoattack``.

The weights are ``pyautoattack/examples/model_test.pt`` (a state dict) and the architecture is
the ``ResNet18`` function of ``pyautoattack/examples/resnet.py``; both are located in the
installed package (the ``examples`` folder is not an importable package, so the file is loaded
by path). The network takes 32 px images in [0, 1] without normalization; it has 20
BatchNorm2d layers and classifies foolbox's 20 CIFAR-10 test images all correctly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ttabench.api import LoadedModel
from ttabench.errors import TTABenchError
from ttabench.models.base import NormalizedModel, find_classifier, weights_hash

NUM_CLASSES = 10
#: CIFAR-10's class names in label order (the output index of each).
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")


def pyautoattack_examples() -> Path:
    """The ``examples`` folder of the installed pyautoattack package."""
    spec = importlib.util.find_spec("pyautoattack")
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "examples"
        if (folder / "model_test.pt").is_file() and (folder / "resnet.py").is_file():
            return folder
    raise TTABenchError(
        "cifar10-resnet18 needs pyautoattack's examples/model_test.pt and examples/resnet.py; "
        "install them with: pip install pyautoattack==0.2.0"
    )


def _resnet_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("_ttabench_pyautoattack_resnet", path)
    if spec is None or spec.loader is None:
        raise TTABenchError(f"cannot load the ResNet definition from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_cifar10_resnet18() -> nn.Module:
    """The pyautoattack CIFAR-10 ResNet-18 with its trained weights, in eval mode."""
    folder = pyautoattack_examples()
    net = _resnet_module(folder / "resnet.py").ResNet18()
    state = torch.load(folder / "model_test.pt", map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def load_cifar10_resnet18(
    arg: str | None = None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """The ``cifar10-resnet18`` model source (no argument; inputs in [0, 1], not normalized)."""
    if arg:
        raise TTABenchError(f"model cifar10-resnet18 takes no argument, got '{arg}'")
    module = NormalizedModel(build_cifar10_resnet18(), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return LoadedModel(
        module=module.eval(),
        num_classes=NUM_CLASSES,
        model_id="cifar10-resnet18",
        weights_hash=weights_hash(module),
        preprocessing={"mean": [0.0] * 3, "std": [1.0] * 3, "input_size": 32,
                       "normalization": "none (inputs in [0, 1])"},
        classifier=find_classifier(module),
        class_names=CLASS_NAMES,
    )
