"""``mnist-cnn``: a narrow 4-conv BatchNorm network for the ``mnist-c`` suite, trained on first use.

Architecture (32 px, 3-channel input): four blocks conv3x3-BN-ReLU with 16, 32, 64, 64
channels, 2x2 max-pooling after the first three, global average pooling, linear head ``fc``;
channels-last memory format (an entropy-minimisation step on the BN affine parameters runs at
about 3,300 images/s on one core here, batch 64).
Inputs are normalised inside the model with the MNIST mean/std (0.1307, 0.3081) per channel.

Training (seeded, deterministic on the CPU): the 2,500 ``train`` digits of ``mnist-c``, Adam
with a one-cycle schedule, label smoothing 0.05, and augmentations that are NOT among the 19
test corruptions, so the model degrades gradually under them instead of collapsing (AugMix
spirit): a random affine map (rotation, shear, scale, translation) and one of identity,
autocontrast, equalize, posterize, solarize, invert, then random erasing of a rectangle with a
constant gray. No noise, blur, contrast, brightness, weather, pixelation or JPEG.

The weights are cached at ``<cache_dir>/models/mnist-cnn-<seed>.pt`` (temp file + rename; one
process trains while others wait on a file lock).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from ttabench.api import LoadedModel
from ttabench.errors import TTABenchError
from ttabench.models.base import NormalizedModel, weights_hash
from ttabench.paths import DATA_ENV, cache_dir as default_cache_dir
from ttabench.store import atomic_file
from ttabench.suites.mnistc import DEFAULT_SEED, ensure_base, suite_root

NUM_CLASSES = 10
MEAN = (0.1307, 0.1307, 0.1307)
STD = (0.3081, 0.3081, 0.3081)
WIDTHS = (16, 32, 64, 64)


class MnistCNN(nn.Module):
    """conv-BN-ReLU x 4 (``widths`` channels, 16-32-64-64 by default, max-pool after all but
    the last), GAP, ``fc``."""

    def __init__(self, num_classes: int = NUM_CLASSES,
                 widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for index, width in enumerate(widths):
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_classes)
        # channels-last convolutions are ~1.6x faster on the CPU (same weights, same math)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x.contiguous(memory_format=torch.channels_last)))


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe; every field is recorded in the checkpoint and the model's record."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    label_smoothing: float = 0.05
    augment_p: float = 0.9
    erase_p: float = 0.4
    n_train: int | None = None


# --------------------------------------------------------------------------- augmentation


def _random_affine(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rotation +-20 deg, shear +-15 deg, scale 0.85-1.15, translation +-3 px (bilinear)."""
    n, _, h, _ = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=gen)

    angle = uniform(-20, 20) * math.pi / 180
    shear = uniform(-15, 15) * math.pi / 180
    scale = uniform(0.85, 1.15)
    shift = uniform(-3, 3), uniform(-3, 3)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(shear)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos / scale
    theta[:, 0, 1] = (-sin + tan * cos) / scale
    theta[:, 1, 0] = sin / scale
    theta[:, 1, 1] = (cos + tan * sin) / scale
    theta[:, 0, 2] = shift[0] * 2 / h
    theta[:, 1, 2] = shift[1] * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _equalize(x: torch.Tensor) -> torch.Tensor:
    """Per-image histogram equalisation over 256 gray levels (cdf mapping; channels shared)."""
    levels = (x * 255).round().long().clamp(0, 255)
    flat = levels.flatten(1)
    hist = torch.zeros(x.shape[0], 256).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float))
    cdf = hist.cumsum(1)
    first = cdf.gather(1, (hist > 0).float().argmax(1, keepdim=True))
    lut = ((cdf - first) / (cdf[:, -1:] - first).clamp(min=1)).clamp(0, 1)
    return lut.gather(1, flat).view_as(x)


def _photometric(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One op per image: identity, autocontrast, equalize, posterize (2-5 bits), solarize, invert."""
    n = x.shape[0]
    op = torch.randint(0, 6, (n,), generator=gen).view(n, 1, 1, 1)
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    autocontrast = (x - low) / (high - low).clamp(min=1e-3)
    bits = torch.randint(2, 6, (n,), generator=gen).view(n, 1, 1, 1)
    step = 2.0 ** (8 - bits)
    posterize = torch.floor(x * 255 / step) * step / 255
    threshold = (0.3 + 0.6 * torch.rand(n, generator=gen)).view(n, 1, 1, 1)
    solarize = torch.where(x >= threshold, 1 - x, x)
    choices = [x, autocontrast, _equalize(x), posterize, solarize, 1 - x]
    out = x.clone()
    for index, candidate in enumerate(choices):
        out = torch.where(op == index, candidate, out)
    return out


def _random_erase(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``p`` per image, fill a rectangle (2-20 % of the area) with a gray."""
    n, _, h, w = x.shape
    apply = torch.rand(n, generator=gen) < p
    area = (0.02 + 0.18 * torch.rand(n, generator=gen)) * h * w
    ratio = torch.exp((torch.rand(n, generator=gen) - 0.5) * 2 * math.log(3))
    eh = (area * ratio).sqrt().clamp(1, h).long()
    ew = (area / ratio).sqrt().clamp(1, w).long()
    top = (torch.rand(n, generator=gen) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=gen) * (w - ew + 1)).long()
    value = torch.rand(n, generator=gen)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    box = (
        (rows >= top.view(n, 1, 1)) & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1)) & (cols < (left + ew).view(n, 1, 1))
        & apply.view(n, 1, 1)
    )
    return torch.where(box.unsqueeze(1), value.view(n, 1, 1, 1), x)


def augment(x: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """The training augmentation of a float batch in [0, 1] (see the module docstring)."""
    n = x.shape[0]
    keep = (torch.rand(n, generator=gen) >= config.augment_p).view(n, 1, 1, 1)
    y = _photometric(_random_affine(x, gen), gen)
    y = torch.where(keep, x, y)
    return _random_erase(y, config.erase_p, gen).clamp(0, 1)


# --------------------------------------------------------------------------- training


def train_mnist_cnn(
    images: np.ndarray, labels: np.ndarray, seed: int = 0, config: TrainConfig = TrainConfig()
) -> nn.Module:
    """Train on uint8 (N, 32, 32, 3) images; deterministic on the CPU for a given seed.

    Returns the bare network (inputs already normalised with ``MEAN``/``STD``), in eval mode.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = MnistCNN()
    return fit_network(net, images, labels, seed, config)


def fit_network(net: nn.Module, images: np.ndarray, labels: np.ndarray, seed: int,
                config: TrainConfig = TrainConfig()) -> nn.Module:
    """The mnist-c training recipe (module docstring) applied to an initialised ``net``:
    seeded augmentation and batch order, Adam with a one-cycle schedule; eval mode after."""
    if config.n_train is not None:
        images, labels = images[: config.n_train], labels[: config.n_train]
    x_all = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float() / 255
    y_all = torch.from_numpy(np.array(labels, dtype=np.int64))
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, len(x_all) // config.batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    net.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(x_all), generator=gen)
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            x = augment(x_all[batch], config, gen)
            loss = F.cross_entropy(
                net((x - mean) / std), y_all[batch], label_smoothing=config.label_smoothing
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


def _data_root(cache_dir: Path) -> Path:
    """The mnist-c folder: under ``$TTABENCH_DATA_DIR`` if set, else ``<cache_dir>/data``."""
    return suite_root(os.environ.get(DATA_ENV) or cache_dir / "data", DEFAULT_SEED)


def trained_network(seed: int, cache_dir: Path, config: TrainConfig = TrainConfig()) -> nn.Module:
    """The network for ``seed``, from ``<cache_dir>/models/mnist-cnn-<seed>.pt`` or trained
    (building mnist-c's clean arrays if needed) and cached."""
    return cached_network("mnist-cnn", MnistCNN, seed, cache_dir, config)


def cached_network(name: str, build: Callable[[], nn.Module], seed: int, cache_dir: Path,
                   config: TrainConfig = TrainConfig()) -> nn.Module:
    """Network ``build()`` trained with ``fit_network`` on mnist-c's train split for ``seed``,
    read from ``<cache_dir>/models/<name>-<seed>.pt`` when that file holds this ``config``,
    else trained (initialised under ``torch.manual_seed(seed)``) and cached atomically.

    Training holds ``<name>-<seed>.pt.lock`` (``filelock``): a second process asking for the
    same network waits for the first one's training and then reads its file."""
    path = Path(cache_dir) / "models" / f"{name}-{seed}.pt"
    net = _read_checkpoint(path, build, config)
    if net is not None:
        return net
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        net = _read_checkpoint(path, build, config)  # trained by another process meanwhile
        if net is not None:
            return net
        root = _data_root(Path(cache_dir))
        ensure_base(root, DEFAULT_SEED)
        images = np.load(root / "train.npy")
        labels = np.load(root / "train_labels.npy")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build()
        net = fit_network(net, images, labels, seed, config)
        with atomic_file(path) as handle:
            torch.save({"state_dict": net.state_dict(), "config": asdict(config), "seed": seed},
                       handle)
    return net


def _read_checkpoint(path: Path, build: Callable[[], nn.Module],
                     config: TrainConfig) -> nn.Module | None:
    """``build()`` with the weights of ``path`` in eval mode, or None when the file is missing,
    unreadable, of another architecture or trained with another ``config``."""
    if not path.is_file():
        return None
    net = build()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("config") != asdict(config):
            return None
        net.load_state_dict(payload["state_dict"])
    except (OSError, RuntimeError, KeyError, ValueError, AttributeError):
        return None  # unreadable or stale checkpoint: retrain and overwrite it
    return net.eval()


def load_mnist_network(
    name: str, build: Callable[[], nn.Module], config: TrainConfig, arg: str | None,
    cache_dir: Path | None, num_classes: int | None, cache_name: str | None = None,
) -> LoadedModel:
    """The model source ``name`` of the mnist-c networks: ``build()`` trained with ``config``
    (``cached_network``, file ``<cache_name or name>-<seed>.pt``) for the integer seed ``arg``
    (default 0), normalised with the MNIST mean/std, classifier ``net.fc``; its id is
    ``<name>:<seed>``."""
    if num_classes not in (None, NUM_CLASSES):
        raise TTABenchError(f"{name} has {NUM_CLASSES} classes, not {num_classes}")
    try:
        seed = int(arg) if arg else 0
    except ValueError:
        raise TTABenchError(f"{name}: the argument is an integer seed, got '{arg}'") from None
    net = cached_network(cache_name or name, build, seed,
                         Path(cache_dir) if cache_dir else default_cache_dir(), config)
    module = NormalizedModel(net, mean=MEAN, std=STD).eval()
    return LoadedModel(
        module=module,
        num_classes=NUM_CLASSES,
        model_id=f"{name}:{seed}",
        weights_hash=weights_hash(module),
        preprocessing={
            "mean": list(MEAN),
            "std": list(STD),
            "input_size": 32,
            "training": {"seed": seed, "data": "mnist-c train (2,500 digits)", **asdict(config)},
        },
        classifier="net.fc",
    )


def load_mnist_cnn(
    arg: str | None = None, *, cache_dir: Path | None = None, num_classes: int | None = None
) -> LoadedModel:
    """The ``mnist-cnn`` model source; ``arg`` is an optional integer training seed (default 0)."""
    return load_mnist_network("mnist-cnn", MnistCNN, TrainConfig(), arg, cache_dir, num_classes)
