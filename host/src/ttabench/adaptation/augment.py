"""CoTTA's test-time augmentation, written in torch ops.

Follows qinenergy/cotta ``cifar/cotta.py`` ``get_tta_transforms`` with ``my_transforms.py``
``ColorJitterPro``, ``GaussianNoise`` and ``Clip`` (the same pipeline is BIT-DA/RoTTA
``core/utils/custom_transforms.py``; mariodoebler/test-time-adaptation
``augmentations/transforms_cotta.py`` gives ROID the variant without blur and noise). One call
draws one set of parameters, in the authors' order, and applies it to the whole batch
(``x``: float images (N, 3, H, W), H = W):

1. clip to [0, 1];
2. colour jitter, the five operations in the order of ``randperm(5)``, each factor drawn when
   its turn comes: brightness b: ``clamp(b x)``; contrast c: ``clamp(c x + (1 - c) mean(gray
   x))`` (mean per image); saturation s: ``clamp(s x + (1 - s) gray x)``; hue h: the HSV hue
   rotated by h; gamma g: ``clamp(clamp(x, 1e-8, 1)^g)``, where gray = 0.2989 R + 0.587 G +
   0.114 B and clamp is to [0, 1];
3. pad by floor(H / 2) on every side (``padding_mode`` edge, or reflect);
4. affine map about the centre of the padded image: rotation by a ~ U(deg) degrees, integer
   translation (round(U(-W'/16, W'/16)), round(U(-H'/16, H'/16))), scale s ~ U(scale);
   bilinear sampling at pixel centres, zeros outside;
5. (``blur_and_noise``) gaussian blur, kernel 5 with sigma ~ U(sigma), reflect padding;
6. centre crop back to H x W;
7. horizontal flip when ``rand() < 0.5``;
8. (``blur_and_noise``) additive noise N(0, 0.005^2) drawn per pixel on the CPU;
9. clip to [0, 1].

The draws come from the caller's CPU ``torch.Generator`` in the order the authors' code makes
them from torch's global generator, so a generator seeded like the global one gives their
parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

#: (low, high) of each jitter factor, in the order of ColorJitterPro's randperm(5) indices.
JITTER_NAMES = ("brightness", "contrast", "saturation", "hue", "gamma")
STRONG_JITTER = ((0.6, 1.4), (0.7, 1.3), (0.5, 1.5), (-0.06, 0.06), (0.7, 1.3))
SOFT_JITTER = ((0.8, 1.2), (0.85, 1.15), (0.75, 1.25), (-0.03, 0.03), (0.85, 1.15))
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator).item())


def grayscale(x: Tensor) -> Tensor:
    """Luma 0.2989 R + 0.587 G + 0.114 B, shape (N, 1, H, W)."""
    r, g, b = x.unbind(dim=-3)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(-3)


def _mix(x: Tensor, other: Tensor, factor: float) -> Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]."""
    return (factor * x + (1.0 - factor) * other).clamp(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: float) -> Tensor:
    return _mix(x, torch.zeros_like(x), factor)


def adjust_contrast(x: Tensor, factor: float) -> Tensor:
    return _mix(x, grayscale(x).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation(x: Tensor, factor: float) -> Tensor:
    return _mix(x, grayscale(x), factor)


def adjust_gamma(x: Tensor, gamma: float) -> Tensor:
    """x^gamma clamped to [0, 1], after clamping x to [1e-8, 1] (ColorJitterPro's NaN guard)."""
    return x.clamp(1e-8, 1.0).pow(gamma).clamp(0.0, 1.0)


def adjust_hue(x: Tensor, shift: float) -> Tensor:
    """Rotate the HSV hue by ``shift`` (a fraction of the colour wheel).

    RGB to HSV: V = max, C = max - min, S = C / V (0 where C = 0), H = (R'/6) mod 1 with
    R' = (G - B)/C where V = R, 2 + (B - R)/C where V = G (and not R), 4 + (R - G)/C otherwise.
    HSV to RGB: sector i = floor(6H) mod 6, f = 6H - floor(6H), p = V(1 - S), q = V(1 - S f),
    t = V(1 - S(1 - f)) (each clamped to [0, 1]); (R, G, B) per sector 0..5 is (V, t, p),
    (q, V, p), (p, V, t), (p, q, V), (t, p, V), (V, p, q).
    """
    r, g, b = x.unbind(dim=-3)
    value = x.max(dim=-3).values
    chroma = value - x.min(dim=-3).values
    flat = chroma == 0
    saturation = chroma / torch.where(flat, torch.ones_like(value), value)
    safe = torch.where(flat, torch.ones_like(chroma), chroma)
    at_r = value == r
    at_g = (value == g) & ~at_r
    at_b = ~at_r & ~at_g
    sector_hue = (at_r * ((g - b) / safe) + at_g * (2.0 + (b - r) / safe)
                  + at_b * (4.0 + (r - g) / safe))
    hue = torch.fmod(sector_hue / 6.0 + 1.0, 1.0)
    hue = (hue + shift) % 1.0
    scaled = hue * 6.0
    sector = torch.floor(scaled)
    f = scaled - sector
    sector = sector.to(torch.int64) % 6
    p = (value * (1.0 - saturation)).clamp(0.0, 1.0)
    q = (value * (1.0 - saturation * f)).clamp(0.0, 1.0)
    t = (value * (1.0 - saturation * (1.0 - f))).clamp(0.0, 1.0)
    candidates = torch.stack((value, p, q, t))  # index 0: V, 1: p, 2: q, 3: t
    table = torch.tensor([[0, 2, 1, 1, 3, 0],   # R per sector
                          [3, 0, 0, 2, 1, 1],   # G
                          [1, 1, 3, 0, 0, 2]],  # B
                         device=x.device)
    channels = [candidates.gather(0, table[c][sector].unsqueeze(0)).squeeze(0) for c in range(3)]
    return torch.stack(channels, dim=-3)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue, adjust_gamma)


def affine_about_centre(x: Tensor, angle: float, translate: tuple[int, int],
                        scale: float) -> Tensor:
    """Rotate by ``angle`` degrees, scale by ``scale`` and shift by ``translate`` (dx, dy)
    pixels about the image centre; bilinear, zeros outside.

    Output pixel centre (u, v), in pixels from the image centre, samples the input at
    R(-angle) (u - dx, v - dy) / scale, R the rotation matrix [[cos, -sin], [sin, cos]].
    """
    height, width = x.shape[-2:]
    rad = math.radians(angle)
    cos, sin = math.cos(rad) / scale, math.sin(rad) / scale
    dx, dy = float(translate[0]), float(translate[1])
    inverse = torch.tensor([[cos, sin, cos * -dx + sin * -dy],
                            [-sin, cos, -sin * -dx + cos * -dy]], dtype=x.dtype, device=x.device)
    u = torch.linspace(-width * 0.5 + 0.5, width * 0.5 - 0.5, steps=width, device=x.device)
    v = torch.linspace(-height * 0.5 + 0.5, height * 0.5 - 0.5, steps=height, device=x.device)
    centres = torch.stack((u.expand(height, width), v.unsqueeze(1).expand(height, width),
                           torch.ones(height, width, device=x.device)), dim=-1)
    to_unit = inverse.T / torch.tensor([0.5 * width, 0.5 * height], dtype=x.dtype,
                                       device=x.device)
    grid = (centres.view(1, height * width, 3) @ to_unit).view(1, height, width, 2)
    return F.grid_sample(x, grid.expand(x.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="zeros", align_corners=False)


def gaussian_blur(x: Tensor, sigma: float, size: int = 5) -> Tensor:
    """Blur with the normalized 2-D gaussian exp(-(i^2 + j^2) / (2 sigma^2)), i, j in
    -(size-1)/2 .. (size-1)/2, reflect padding, each channel on its own."""
    half = (size - 1) * 0.5
    taps = torch.linspace(-half, half, steps=size, dtype=x.dtype, device=x.device)
    weights = torch.exp(-0.5 * (taps / sigma).pow(2))
    weights = weights / weights.sum()
    kernel = torch.outer(weights, weights).expand(x.shape[-3], 1, size, size)
    pad = size // 2
    return F.conv2d(F.pad(x, [pad, pad, pad, pad], mode="reflect"), kernel, groups=x.shape[-3])


def centre_crop(x: Tensor, height: int, width: int) -> Tensor:
    top = int(round((x.shape[-2] - height) / 2.0))
    left = int(round((x.shape[-1] - width) / 2.0))
    return x[..., top:top + height, left:left + width]


@dataclass(frozen=True)
class TTAugment:
    """The augmentation; ``padding_mode`` "edge" (CoTTA, RoTTA) or "reflect" (ROID),
    ``blur_and_noise`` False for ROID's variant, ``soft`` the authors' milder ranges."""

    padding_mode: str = "edge"
    blur_and_noise: bool = True
    soft: bool = False
    noise_std: float = 0.005

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        height, width = x.shape[-2:]
        x = x.clamp(0.0, 1.0)
        ranges = SOFT_JITTER if self.soft else STRONG_JITTER
        for index in torch.randperm(5, generator=generator).tolist():
            x = JITTER_OPS[index](x, _uniform(*ranges[index], generator))
        pad = int(height / 2)
        x = F.pad(x, [pad, pad, pad, pad], mode="replicate" if self.padding_mode == "edge"
                  else "reflect")
        degrees = 8.0 if self.soft else 15.0
        angle = _uniform(-degrees, degrees, generator)
        max_dx, max_dy = x.shape[-1] / 16, x.shape[-2] / 16
        translate = (int(round(_uniform(-max_dx, max_dx, generator))),
                     int(round(_uniform(-max_dy, max_dy, generator))))
        scale = _uniform(*((0.95, 1.05) if self.soft else (0.9, 1.1)), generator)
        x = affine_about_centre(x, angle, translate, scale)
        if self.blur_and_noise:
            x = gaussian_blur(x, _uniform(0.001, 0.25 if self.soft else 0.5, generator))
        x = centre_crop(x, height, width)
        if torch.rand(1, generator=generator).item() < 0.5:
            x = x.flip(-1)
        if self.blur_and_noise:
            x = x + (torch.randn(x.shape, generator=generator) * self.noise_std).to(x.device)
        return x.clamp(0.0, 1.0)

    def record(self) -> dict[str, object]:
        return {"padding_mode": self.padding_mode, "blur_and_noise": self.blur_and_noise,
                "soft": self.soft, "noise_std": self.noise_std if self.blur_and_noise else None}
