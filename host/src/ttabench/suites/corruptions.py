"""The 19 common corruptions of Hendrycks & Dietterich at 32 px, seeded and batched.

Every function maps a batch of uint8 images ``(N, H, W, 3)`` (RGB) and a severity 1-5 to a
uint8 batch of the same shape, drawing every random number from the ``np.random.Generator``
it is given, so a build is byte-for-byte reproducible from a seed (no global ``np.random``).

The recipes follow CIFAR-10-C's ``make_cifar_c.py`` (Hendrycks & Dietterich, ICLR 2019), not
ImageNet-C's, whose constants are far too harsh for 32 px images. They are reimplemented here
(vectorised over the batch, seeded), and the constants are tuned for the ``mnist-c`` suite:
white 28 px digits padded to 32 px on a black background, which react differently from natural
photos (a thin stroke vanishes under noise that leaves a CIFAR object recognisable, while a
black background shrugs off a JPEG quality that blurs CIFAR textures). ``CONSTANTS`` holds
every per-severity table; each entry's comment says how it differs from CIFAR-10-C's and why
(the aim: accuracy of a source model falls gradually and monotonically with severity instead of
collapsing to chance). Differences in mechanics from the reference recipes:

- ``impulse_noise``: salt-and-pepper per channel value with our generator (skimage's
  ``random_noise`` is not seedable through a Generator);
- ``glass_blur``: the sequential pixel swaps of the reference become, per iteration, a gather
  from a random offset in ``[-d, d]`` for every pixel (same local shuffling, vectorised);
- ``motion_blur``: ImageMagick's one-sided Gaussian line kernel (radius, sigma) drawn with
  OpenCV at a random angle in [-45, 45] degrees;
- ``frost``: the frost textures shipped in the ``corrupt-tta`` wheel, shrunk by 0.2 as in
  CIFAR-10-C, random crop;
- ``spatter``: a smoothed-noise droplet mask blended with mud or water colour (simplified);
- ``jpeg_compression``: several round trips, each on a randomly shifted 8x8 block grid;
- ``saturate`` acts on HSV saturation; on gray digits (saturation 0) only the additive term
  tints the image, so its constants carry that term.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from io import BytesIO

import cv2
import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

Batch = np.ndarray
CorruptionFn = Callable[[Batch, int, np.random.Generator], Batch]

#: Per-severity constants (index 0 = severity 1). Each comment gives CIFAR-10-C's values. All
#: tables were tuned on a sweep of candidate values against the ``mnist-cnn`` source model
#: (eval mode) so that its accuracy falls from about 90-95 % at severity 1 to 25-50 % at
#: severity 5, monotonically; CIFAR-10-C's values leave most digits intact (e.g. gaussian
#: noise .10 or JPEG quality 40 barely change a white-on-black digit).
CONSTANTS: dict[str, list] = {
    # std of additive noise. CIFAR-10-C: .04 .06 .08 .09 .10
    "gaussian_noise": [0.08, 0.10, 0.12, 0.14, 0.17],
    # photons per unit intensity. CIFAR-10-C: 500 250 100 75 50
    "shot_noise": [2.0, 1.4, 1.0, 0.6, 0.35],
    # fraction of values set to 0 or 1. CIFAR-10-C: .01 .02 .03 .05 .07
    "impulse_noise": [0.012, 0.018, 0.025, 0.035, 0.05],
    # std of multiplicative noise (it only touches the stroke). CIFAR-10-C: .06 .1 .12 .16 .2
    "speckle_noise": [0.7, 1.4, 2.6, 4.5, 8.0],
    # sigma. CIFAR-10-C: .4 .6 .7 .8 1
    "gaussian_blur": [1.4, 1.8, 2.2, 2.6, 3.2],
    # (sigma, max_delta, iterations). CIFAR-10-C: (.05,1,1) (.25,1,1) (.4,1,1) (.25,1,2) (.4,1,2).
    # A small sigma leaves the shuffled pixels as noise; ours blur more and shuffle further.
    "glass_blur": [(0.5, 1, 1), (0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 2), (1.0, 3, 2)],
    # (disk radius, alias blur). CIFAR-10-C: (.3,.4) (.4,.5) (.5,.6) (1,.2) (1.5,.1)
    "defocus_blur": [(2.5, 0.3), (3.0, 0.3), (3.5, 0.3), (4.0, 0.3), (4.5, 0.3)],
    # (radius, sigma). CIFAR-10-C: (10,1) (10,1.5) (10,2) (10,2.5) (12,3)
    "motion_blur": [(14, 4.5), (18, 6.0), (30, 10.0), (36, 12.0), (48, 16.0)],
    # (largest zoom, step) of the averaged zooms 1, 1+step, ... CIFAR-10-C: (1.06,.01)
    # (1.11,.01) (1.16,.01) (1.21,.01) (1.26,.01)
    "zoom_blur": [(1.6, 0.04), (1.8, 0.05), (2.0, 0.06), (2.3, 0.08), (3.0, 0.12)],
    # (mean, std, zoom, threshold, blur radius, blur sigma, blend). CIFAR-10-C:
    # (.1,.2,1,.6,8,3,.95) (.1,.2,1,.5,10,4,.9) (.15,.3,1.75,.55,10,4,.9) (.25,.3,2.25,.6,12,6,.85)
    # (.3,.3,1.25,.65,14,12,.8): ours start at CIFAR's severity 3 and go past its severity 5.
    "snow": [
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.90),
        (0.25, 0.3, 2.25, 0.60, 12, 6, 0.85),
        (0.30, 0.3, 1.25, 0.65, 14, 12, 0.80),
        (0.32, 0.3, 1.25, 0.63, 14, 12, 0.78),
        (0.34, 0.3, 1.25, 0.61, 14, 12, 0.76),
    ],
    # (image weight, frost weight). CIFAR-10-C: (1,.2) (1,.3) (.9,.4) (.85,.4) (.75,.45)
    "frost": [(1.0, 0.2), (1.0, 0.3), (0.9, 0.5), (0.8, 0.7), (0.7, 0.8)],
    # (fog strength, wibble decay). CIFAR-10-C: (.2,3) (.5,3) (.75,2.5) (1,2) (1.5,1.75)
    "fog": [(0.35, 2.8), (0.8, 2.2), (1.8, 1.7), (2.4, 1.57), (3.0, 1.5)],
    # added to HSV value. CIFAR-10-C: .05 .1 .15 .2 .3. The model's accuracy is flat (about
    # 80 %) for shifts between .2 and .6 and not monotone there, so severities 3-5 skip it.
    "brightness": [0.10, 0.15, 0.635, 0.66, 0.70],
    # contrast factor. CIFAR-10-C: .75 .5 .4 .3 .15
    "contrast": [0.28, 0.22, 0.17, 0.13, 0.09],
    # (alpha = largest displacement, sigma, affine jitter), in pixels. CIFAR-10-C (x32):
    # (0,0,.08) (.05,.2,.07) (.08,.06,.06) (.1,.04,.05) (.1,.03,.03), not monotone in effect;
    # ours grow together.
    "elastic_transform": [(4.0, 2.0, 2.0), (5.0, 2.0, 2.5), (6.5, 2.0, 3.0), (8.0, 2.0, 3.5),
                          (10.0, 2.0, 4.0)],
    # resize factor (32 px -> 12, 10, 9, 8, 7 px). CIFAR-10-C: .95 .9 .85 .75 .65
    "pixelate": [0.38, 0.32, 0.29, 0.26, 0.22],
    # (JPEG quality, round trips). CIFAR-10-C: quality 80 65 58 50 40, one pass. A 32 px
    # white-on-black digit survives even quality 2 in one pass (97 % accuracy), so the
    # severities repeat the round trip on shifted block grids.
    "jpeg_compression": [(3, 2), (3, 4), (2, 6), (2, 10), (1, 16)],
    # (threshold, blur sigma, blend). CIFAR-10-C uses a liquid/mud recipe; simplified here.
    "spatter": [(0.65, 1.5, 0.7), (0.60, 1.8, 0.8), (0.55, 2.2, 0.9), (0.50, 2.2, 1.0),
                (0.40, 2.5, 1.0)],
    # (saturation factor, added saturation). CIFAR-10-C: (.3,0) (.1,0) (1.5,0) (2,.1) (2.5,.2).
    # Gray digits have saturation 0, so only the added term acts (a red tint).
    "saturate": [(1.0, 0.7), (1.0, 0.8), (1.0, 0.85), (1.0, 0.9), (1.0, 1.0)],
}


def _unit(x: Batch) -> np.ndarray:
    return np.asarray(x, dtype=np.float32) / np.float32(255.0)


def _to_uint8(x: np.ndarray) -> Batch:
    """Float in [0, 1] to uint8 (clip, scale, round half to even)."""
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a batch over H and W (reflect border, truncate 4 sigma)."""
    return gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def _convolve(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each image of a float32 batch with a 2-D kernel (OpenCV, reflect-101 border)."""
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return out


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom each image of a float32 batch (N, H, W, C) by ``factor`` about its centre, keeping
    (H, W): bilinear, border replicated (``dst = factor * (src - centre) + centre``)."""
    h, w = x.shape[1:3]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    matrix = np.float32([[factor, 0, (1 - factor) * cx], [0, factor, (1 - factor) * cy]])
    out = np.empty_like(x)
    for i, image in enumerate(x):
        zoomed = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
        out[i] = zoomed.reshape(out[i].shape)
    return out


def _motion_kernel(radius: int, sigma: float, angle: float) -> np.ndarray:
    """A one-sided Gaussian-weighted line of length ``radius`` rotated by ``angle`` degrees."""
    size = 2 * radius + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    offsets = np.arange(radius + 1)
    kernel[radius, radius : radius + radius + 1] = np.exp(-(offsets**2) / (2 * sigma**2))
    rotation = cv2.getRotationMatrix2D((float(radius), float(radius)), angle, 1.0)
    kernel = cv2.warpAffine(kernel, rotation, (size, size))
    return kernel / kernel.sum()


def _plasma(n: int, size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square plasma fractals (n, size, size) in [0, 1]; ``size`` a power of two."""
    grid = np.zeros((n, size, size), dtype=np.float64)
    step, wibble = size, 100.0

    def noisy_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0:size:step, 0:size:step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        grid[:, half:size:step, half:size:step] = noisy_mean(squares)
        centres = grid[:, half:size:step, half:size:step]
        corners = grid[:, 0:size:step, 0:size:step]
        total = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        grid[:, 0:size:step, half:size:step] = noisy_mean(total)
        total = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        grid[:, half:size:step, 0:size:step] = noisy_mean(total)
        step //= 2
        wibble /= decay
    grid -= grid.min(axis=(1, 2), keepdims=True)
    return grid / grid.max(axis=(1, 2), keepdims=True)


@lru_cache(maxsize=1)
def _frost_textures() -> tuple[np.ndarray, ...]:
    """The six frost photos of the corrupt-tta wheel, RGB float32 in [0, 1], shrunk by 0.2."""
    textures = []
    folder = resources.files("corrupt_tta.assets.frost")
    for index in range(1, 7):
        name = f"frost{index}.{'png' if index <= 3 else 'jpg'}"
        with resources.as_file(folder.joinpath(name)) as path:
            bgr = cv2.imread(str(path))
        small = cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2, interpolation=cv2.INTER_AREA)
        textures.append(small[..., ::-1].astype(np.float32) / 255.0)
    return tuple(textures)


def _set_value(x: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Replace HSV value (max channel) keeping hue and saturation; black maps to gray ``value``."""
    old = x.max(axis=-1, keepdims=True)
    scale = np.divide(value, old, out=np.zeros_like(old), where=old > 0)
    return np.where(old > 0, x * scale, value)


def _set_saturation(x: np.ndarray, factor: float, add: float) -> np.ndarray:
    """HSV saturation ``s -> clip(s * factor + add)`` keeping hue and value (hue 0 for grays)."""
    value = x.max(axis=-1, keepdims=True)
    low = x.min(axis=-1, keepdims=True)
    sat = np.divide(value - low, value, out=np.zeros_like(value), where=value > 0)
    new_sat = np.clip(sat * factor + add, 0.0, 1.0)
    # each channel is value * (1 - sat * t) with t in [0, 1] fixed by the hue; grays get t = (0,1,1)
    t = np.divide(value - x, value - low, out=np.zeros_like(x), where=(value - low) > 0)
    t = np.where((value - low) > 0, t, np.array([0.0, 1.0, 1.0], dtype=np.float32))
    return value * (1.0 - new_sat * t)


# --------------------------------------------------------------------------- noise


def gaussian_noise(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``x + N(0, c^2)`` per pixel and channel."""
    c = CONSTANTS["gaussian_noise"][severity - 1]
    y = _unit(x)
    return _to_uint8(y + rng.normal(0.0, c, size=y.shape))


def shot_noise(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``Poisson(x * c) / c`` (photon noise, ``c`` photons per unit intensity)."""
    c = CONSTANTS["shot_noise"][severity - 1]
    return _to_uint8(rng.poisson(_unit(x) * c) / c)


def impulse_noise(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Salt and pepper: each value becomes 0 or 1 (equally likely) with probability ``c``."""
    c = CONSTANTS["impulse_noise"][severity - 1]
    y = _unit(x)
    hit = rng.random(y.shape) < c
    salt = rng.random(y.shape) < 0.5
    return _to_uint8(np.where(hit, salt.astype(np.float32), y))


def speckle_noise(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``x + x * N(0, c^2)`` (multiplicative noise)."""
    c = CONSTANTS["speckle_noise"][severity - 1]
    y = _unit(x)
    return _to_uint8(y + y * rng.normal(0.0, c, size=y.shape))


# --------------------------------------------------------------------------- blur


def gaussian_blur(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Gaussian blur with standard deviation ``c`` pixels."""
    return _to_uint8(_blur(_unit(x), CONSTANTS["gaussian_blur"][severity - 1]))


def glass_blur(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Blur, then ``iterations`` rounds of local pixel shuffling (offsets in [-d, d]), blur."""
    sigma, delta, iterations = CONSTANTS["glass_blur"][severity - 1]
    y = _to_uint8(_blur(_unit(x), sigma))
    n, h, w = y.shape[:3]
    rows = np.arange(h)[None, :, None]
    cols = np.arange(w)[None, None, :]
    batch = np.arange(n)[:, None, None]
    for _ in range(iterations):
        dy = rng.integers(-delta, delta + 1, size=(n, h, w))
        dx = rng.integers(-delta, delta + 1, size=(n, h, w))
        y = y[batch, np.clip(rows + dy, 0, h - 1), np.clip(cols + dx, 0, w - 1)]
    return _to_uint8(_blur(_unit(y), sigma))


def defocus_blur(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Convolution with an anti-aliased disk of radius ``c[0]`` (alias blur ``c[1]``)."""
    radius, alias = CONSTANTS["defocus_blur"][severity - 1]
    span = np.arange(-8, 9)
    xx, yy = np.meshgrid(span, span)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    disk /= disk.sum()
    kernel = cv2.GaussianBlur(disk, ksize=(3, 3), sigmaX=alias)
    return _to_uint8(_convolve(_unit(x), kernel))


def motion_blur(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """One-sided Gaussian line blur (radius, sigma) at a random angle in [-45, 45] per image."""
    radius, sigma = CONSTANTS["motion_blur"][severity - 1]
    y = _unit(x)
    angles = rng.uniform(-45.0, 45.0, size=len(y))
    out = np.empty_like(y)
    for i, (image, angle) in enumerate(zip(y, angles)):
        kernel = _motion_kernel(radius, sigma, float(angle))
        out[i] = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    return _to_uint8(out)


def zoom_blur(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Mean of the image and its centre zooms by 1, 1+step, ... < ``c[0]``."""
    top, step = CONSTANTS["zoom_blur"][severity - 1]
    y = _unit(x)
    factors = np.arange(1.0, top, step)
    total = y.copy()
    for factor in factors:
        total += _clipped_zoom(y, float(factor))
    return _to_uint8(total / (len(factors) + 1))


# --------------------------------------------------------------------------- weather


def snow(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Thresholded, zoomed, motion-blurred noise flakes over a whitened image."""
    mean, std, zoom, threshold, radius, sigma, blend = CONSTANTS["snow"][severity - 1]
    y = _unit(x)
    n, h, w = y.shape[:3]
    layer = rng.normal(mean, std, size=(n, h, w, 1)).astype(np.float32)
    layer = _clipped_zoom(layer, zoom)[..., 0]
    layer[layer < threshold] = 0
    angles = rng.uniform(-135.0, -45.0, size=n)
    flakes = np.empty_like(layer)
    for i, angle in enumerate(angles):
        kernel = _motion_kernel(radius, sigma, float(angle))
        flakes[i] = cv2.filter2D(layer[i], -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    flakes = np.clip(flakes, 0, 1)[..., None]
    gray = (y @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    y = blend * y + (1 - blend) * np.maximum(y, gray * 1.5 + 0.5)
    return _to_uint8(y + flakes + np.rot90(flakes, k=2, axes=(1, 2)))


def frost(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``c[0] * x + c[1] * frost``: a random crop of one of six frost photos per image."""
    weight, frost_weight = CONSTANTS["frost"][severity - 1]
    y = _unit(x)
    n, h, w = y.shape[:3]
    textures = _frost_textures()
    choice = rng.integers(0, len(textures), size=n)
    layer = np.empty_like(y)
    for i, k in enumerate(choice):
        texture = textures[k]
        top = rng.integers(0, texture.shape[0] - h + 1)
        left = rng.integers(0, texture.shape[1] - w + 1)
        layer[i] = texture[top : top + h, left : left + w]
    return _to_uint8(weight * y + frost_weight * layer)


def fog(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``(x + c[0] * plasma) * max / (max + c[0])`` with a diamond-square plasma fractal."""
    strength, decay = CONSTANTS["fog"][severity - 1]
    y = _unit(x)
    n, h, w = y.shape[:3]
    size = 1 << int(np.ceil(np.log2(max(h, w))))
    plasma = _plasma(n, size, decay, rng)[:, :h, :w, None].astype(np.float32)
    peak = y.max(axis=(1, 2, 3), keepdims=True)
    return _to_uint8((y + strength * plasma) * peak / (peak + strength))


def spatter(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Droplets: smoothed noise above a threshold, blended with mud (odd images) or water."""
    threshold, sigma, blend = CONSTANTS["spatter"][severity - 1]
    y = _unit(x)
    n, h, w = y.shape[:3]
    liquid = _blur(rng.normal(size=(n, h, w, 1)).astype(np.float32), sigma)
    low = liquid.min(axis=(1, 2, 3), keepdims=True)
    high = liquid.max(axis=(1, 2, 3), keepdims=True)
    liquid = (liquid - low) / (high - low + 1e-8)
    mask = _blur((liquid > threshold).astype(np.float32), max(0.5, sigma / 2))
    mud = np.array([63, 42, 20], dtype=np.float32) / 255.0
    water = np.array([238, 238, 175], dtype=np.float32) / 255.0
    colour = np.where((rng.random(n) < 0.5)[:, None, None, None], mud, water)
    amount = blend * np.clip(mask, 0, 1)
    return _to_uint8(y * (1 - amount) + colour * amount)


# --------------------------------------------------------------------------- digital


def brightness(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """HSV value ``v -> clip(v + c)``."""
    c = CONSTANTS["brightness"][severity - 1]
    y = _unit(x)
    value = np.clip(y.max(axis=-1, keepdims=True) + c, 0.0, 1.0)
    return _to_uint8(_set_value(y, value))


def contrast(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``(x - mean) * c + mean`` with the per-image, per-channel mean."""
    c = CONSTANTS["contrast"][severity - 1]
    y = _unit(x)
    mean = y.mean(axis=(1, 2), keepdims=True)
    return _to_uint8((y - mean) * c + mean)


def saturate(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """HSV saturation ``s -> clip(s * c[0] + c[1])``."""
    factor, add = CONSTANTS["saturate"][severity - 1]
    return _to_uint8(_set_saturation(_unit(x), factor, add))


def elastic_transform(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Random affine jitter of three points (``c[2]`` px), then a smooth displacement field
    (uniform noise blurred with sigma ``c[1]``, scaled by ``alpha``; alpha normalises the
    field's largest value to ``c[0]`` pixels), bilinear, reflect border."""
    alpha, sigma, jitter = CONSTANTS["elastic_transform"][severity - 1]
    y = _unit(x)
    n, h, w = y.shape[:3]
    centre = np.float32([h // 2, w // 2])
    side = min(h, w) // 3
    pts1 = np.float32([centre + side, [centre[0] + side, centre[1] - side], centre - side])
    shifts = rng.uniform(-jitter, jitter, size=(n, 3, 2)).astype(np.float32)
    field = gaussian_filter(rng.uniform(-1, 1, size=(n, 2, h, w)), (0, 0, sigma, sigma),
                            mode="reflect", truncate=3)
    field /= np.abs(field).max(axis=(1, 2, 3), keepdims=True) + 1e-12
    field = (field * alpha).astype(np.float32)
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = np.empty_like(y)
    for i in range(n):
        matrix = cv2.getAffineTransform(pts1, pts1 + shifts[i])
        warped = cv2.warpAffine(y[i], matrix, (w, h), borderMode=cv2.BORDER_REFLECT_101)
        out[i] = cv2.remap(warped, grid_x + field[i, 0], grid_y + field[i, 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    return _to_uint8(out)


def pixelate(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Box-downsample to ``c`` of the size and box-upsample back."""
    c = CONSTANTS["pixelate"][severity - 1]
    h, w = x.shape[1:3]
    small = (max(1, int(w * c)), max(1, int(h * c)))
    out = np.empty_like(x)
    for i, image in enumerate(x):
        img = Image.fromarray(image).resize(small, Image.BOX).resize((w, h), Image.BOX)
        out[i] = np.asarray(img)
    return out


def jpeg_compression(x: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """``passes`` JPEG round trips at quality ``q`` (PIL); before each pass the image is shifted
    by a random offset in [0, 8)^2 (reflect padding) so the 8x8 block grids do not line up and
    the losses accumulate (generation loss), then shifted back."""
    quality, passes = CONSTANTS["jpeg_compression"][severity - 1]
    h, w = x.shape[1:3]
    out = np.empty_like(x)
    for i, image in enumerate(x):
        for _ in range(passes):
            dy, dx = rng.integers(0, 8, size=2)
            padded = np.pad(image, ((dy, 8 - dy), (dx, 8 - dx), (0, 0)), mode="reflect")
            buffer = BytesIO()
            Image.fromarray(padded).save(buffer, "JPEG", quality=int(quality))
            buffer.seek(0)
            decoded = np.asarray(Image.open(buffer).convert("RGB"))
            image = decoded[dy : dy + h, dx : dx + w]
        out[i] = image
    return out


CORRUPTION_FUNCTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    "saturate": saturate,
}


def corrupt(name: str, images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Apply corruption ``name`` at ``severity`` (1-5) to uint8 images (N, H, W, 3)."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1-5, got {severity}")
    out = CORRUPTION_FUNCTIONS[name](images, severity, rng)
    assert out.dtype == np.uint8 and out.shape == images.shape, (name, out.dtype, out.shape)
    return out
