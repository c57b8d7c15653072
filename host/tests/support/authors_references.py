"""Shared by the side-by-side tests of adapters against their authors' code
(``host/tests/test_adapters_authors_code.py``, ``tests/test_entropy_adapters_authors_code.py``):
the stream, the tolerance check, and the authors' test-time augmentation written with the
torchvision ops their code calls.

``tta_transforms`` re-states qinenergy/cotta ``cifar/cotta.py`` ``get_tta_transforms`` (with
``my_transforms.py`` ``ColorJitterPro``, ``GaussianNoise``, ``Clip``), and with
``cotta_augs=False`` mariodoebler/test-time-adaptation ``augmentations/transforms_cotta.py``
``get_tta_transforms`` as ROID calls it. Its draws come from torch's global generator.
"""

from __future__ import annotations

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from ttabench.api import to_unit_float
from ttabench.suites.tiny import make_images

TOL = 1e-5


def stream(steps: int, batch: int, noise: float = 90.0, seed: int = 300) -> list[torch.Tensor]:
    """``steps`` batches of noisy tiny-suite images, float in [0, 1]."""
    return [to_unit_float(make_images(batch, seed=seed + t, noise=noise)[0]) for t in range(steps)]


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, atol=TOL, rtol=0, msg=lambda m: f"{what}: {m}")


def color_jitter_pro(img: torch.Tensor) -> torch.Tensor:
    """``ColorJitterPro.forward`` with the strong ranges: randperm(5), one factor per op."""
    ranges = [(0.6, 1.4), (0.7, 1.3), (0.5, 1.5), (-0.06, 0.06), (0.7, 1.3)]
    for fn_id in torch.randperm(5):
        factor = torch.tensor(1.0).uniform_(*ranges[fn_id]).item()
        if fn_id == 0:
            img = TF.adjust_brightness(img, factor)
        if fn_id == 1:
            img = TF.adjust_contrast(img, factor)
        if fn_id == 2:
            img = TF.adjust_saturation(img, factor)
        if fn_id == 3:
            img = TF.adjust_hue(img, factor)
        if fn_id == 4:
            img = TF.adjust_gamma(img.clamp(1e-8, 1.0), factor)
    return img


def tta_transforms(n_pixels: int, padding_mode: str = "edge", cotta_augs: bool = True) -> T.Compose:
    ops = [lambda img: torch.clip(img, 0.0, 1.0), color_jitter_pro,
           T.Pad(padding=int(n_pixels / 2), padding_mode=padding_mode),
           T.RandomAffine(degrees=[-15, 15], translate=(1 / 16, 1 / 16), scale=(0.9, 1.1),
                          shear=None, interpolation=T.InterpolationMode.BILINEAR, fill=0)]
    if cotta_augs:
        ops += [T.GaussianBlur(kernel_size=5, sigma=[0.001, 0.5]), T.CenterCrop(size=n_pixels),
                T.RandomHorizontalFlip(p=0.5),
                lambda img: img + (torch.randn(img.size()) * 0.005 + 0.0).to(img.device),
                lambda img: torch.clip(img, 0.0, 1.0)]
    else:
        ops += [T.CenterCrop(size=n_pixels), T.RandomHorizontalFlip(p=0.5),
                lambda img: torch.clip(img, 0.0, 1.0)]
    return T.Compose(ops)
