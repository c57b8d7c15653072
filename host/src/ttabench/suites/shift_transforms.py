"""Synthetic shifts for the calibration meta-set that are no evaluation corruption family.

Every function maps a batch of uint8 images ``(N, H, W, 3)`` and a strength ``level`` in
[0, 1] to a uint8 batch of the same shape, drawing every random number from the
``np.random.Generator`` it is given (per-image parameters vary around the level). Most follow
the extra corruptions of MNIST-C (Mu & Gilmer, 2019: rotate, shear, scale, translate, stripe,
dotted line / zigzag, canny edges) and stroke-width changes; none is one of the 15 evaluation
corruptions of ``ttabench.suites.npy_layout.CORRUPTIONS`` (a test checks the names, and
``ttabench.suites.meta_set.check_recipe`` refuses a recipe that uses one):

- ``rotate``: rotation by +-(0.5..1) x (20 + 60 level) degrees about the centre;
- ``shear``: horizontal or vertical shear, factor +-(0.5..1) x (0.2 + 0.8 level);
- ``scale``: shrink by up to 0.15 + 0.45 level or enlarge by up to 0.15 + 0.6 level;
- ``translate``: a shift of (0.5..1) x (2 + 9 level) px in a random direction (black fill);
- ``thicken`` / ``thin``: gray dilation / erosion with a square of side 2 (level < 0.5) or 3,
  applied to a fraction 0.3 + 0.7 level of the images;
- ``occlude``: 1-3 rectangles of side (0.5..1) x (6 + 12 level) px filled with black, white or
  gray;
- ``stripes``: 1 + round(3 level) full-length white lines, vertical or horizontal;
- ``scribble``: 1 + round(4 level) random white line segments (dotted line / zigzag);
- ``edges``: the Canny edges of the image blended in with weight 0.4 + 0.6 level;
- ``mirror``: a horizontal flip of a fraction 0.2 + 0.8 level of the images;
- ``overlay``: another image of the batch laid over each one at intensity 0.3 + 0.5 level
  (pixel-wise maximum), a distractor digit.

Geometric maps use OpenCV with bilinear sampling and a black border.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Batch = np.ndarray
ShiftFn = Callable[[Batch, float, np.random.Generator], Batch]


def _magnitudes(n: int, top: float, rng: np.random.Generator) -> np.ndarray:
    """Per-image magnitudes in [top / 2, top] with a random sign."""
    return rng.uniform(0.5, 1.0, n) * top * rng.choice([-1.0, 1.0], n)


def _warp(x: Batch, matrices: np.ndarray) -> Batch:
    """Each image through its own 2x3 affine matrix (bilinear, black border)."""
    h, w = x.shape[1:3]
    out = np.empty_like(x)
    for i, (image, matrix) in enumerate(zip(x, matrices)):
        out[i] = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return out


def _centred(x: Batch, linear: np.ndarray) -> np.ndarray:
    """2x3 matrices applying each 2x2 ``linear`` map about the image centre."""
    h, w = x.shape[1:3]
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    shift = centre - np.einsum("nij,j->ni", linear, centre)
    return np.concatenate([linear, shift[:, :, None]], axis=2).astype(np.float64)


def rotate(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    angles = np.deg2rad(_magnitudes(len(x), 20 + 60 * level, rng))
    cos, sin = np.cos(angles), np.sin(angles)
    return _warp(x, _centred(x, np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1)))


def shear(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    factors = _magnitudes(len(x), 0.2 + 0.8 * level, rng)
    vertical = rng.random(len(x)) < 0.5
    linear = np.tile(np.eye(2), (len(x), 1, 1))
    linear[~vertical, 0, 1] = factors[~vertical]
    linear[vertical, 1, 0] = factors[vertical]
    return _warp(x, _centred(x, linear))


def scale(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    grow = rng.random(len(x)) < 0.5
    amount = rng.uniform(0.5, 1.0, len(x))
    factors = np.where(grow, 1 + amount * (0.15 + 0.6 * level),
                       1 - amount * (0.15 + 0.45 * level))
    return _warp(x, _centred(x, factors[:, None, None] * np.eye(2)))


def translate(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    distance = rng.uniform(0.5, 1.0, len(x)) * (2 + 9 * level)
    angle = rng.uniform(0, 2 * np.pi, len(x))
    matrices = np.zeros((len(x), 2, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = 1
    matrices[:, 0, 2], matrices[:, 1, 2] = distance * np.cos(angle), distance * np.sin(angle)
    return _warp(x, matrices)


def _morphology(x: Batch, level: float, rng: np.random.Generator, dilate: bool) -> Batch:
    side = 2 if level < 0.5 else 3
    kernel = np.ones((side, side), np.uint8)
    chosen = rng.random(len(x)) < 0.3 + 0.7 * level
    out = x.copy()
    for i in np.flatnonzero(chosen):
        out[i] = cv2.dilate(x[i], kernel) if dilate else cv2.erode(x[i], kernel)
    return out


def thicken(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    return _morphology(x, level, rng, dilate=True)


def thin(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    return _morphology(x, level, rng, dilate=False)


def occlude(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    n, h, w = x.shape[:3]
    out = x.copy()
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):
            side_h, side_w = (rng.uniform(0.5, 1.0, 2) * (6 + 12 * level)).astype(int) + 1
            top, left = rng.integers(0, h - min(side_h, h) + 1), rng.integers(0, w - min(side_w, w) + 1)
            out[i, top:top + side_h, left:left + side_w] = rng.choice([0, 128, 255])
    return out


def stripes(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    n, h, w = x.shape[:3]
    out = x.copy()
    count = 1 + int(round(3 * level))
    for i in range(n):
        for _ in range(count):
            if rng.random() < 0.5:
                out[i, :, int(rng.integers(0, w))] = 255
            else:
                out[i, int(rng.integers(0, h)), :] = 255
    return out


def scribble(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    n, h, w = x.shape[:3]
    out = np.ascontiguousarray(x.copy())
    count = 1 + int(round(4 * level))
    for i in range(n):
        for _ in range(count):
            start = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            end = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(out[i], start, end, (255, 255, 255), 1)
    return out


def edges(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    weight = 0.4 + 0.6 * level
    out = np.empty_like(x)
    for i, image in enumerate(x):
        found = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 50, 150)
        blended = (1 - weight) * image.astype(np.float32) + weight * found[..., None]
        out[i] = np.rint(np.clip(blended, 0, 255)).astype(np.uint8)
    return out


def mirror(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    chosen = rng.random(len(x)) < 0.2 + 0.8 * level
    out = x.copy()
    out[chosen] = x[chosen][:, :, ::-1]
    return out


def overlay(x: Batch, level: float, rng: np.random.Generator) -> Batch:
    other = x[rng.permutation(len(x))].astype(np.float32)
    return np.maximum(x, np.rint((0.3 + 0.5 * level) * other).astype(np.uint8))


SHIFTS: dict[str, ShiftFn] = {
    "rotate": rotate, "shear": shear, "scale": scale, "translate": translate,
    "thicken": thicken, "thin": thin, "occlude": occlude, "stripes": stripes,
    "scribble": scribble, "edges": edges, "mirror": mirror, "overlay": overlay,
}


__all__ = ["SHIFTS"]
