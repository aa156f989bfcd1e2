"""Pictures of results: label colours, colourised cluster maps, mask overlays (uint8 RGB arrays)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from selfseg.checks import check_shape

__all__ = ["colorize_labels", "label_colors", "overlay"]

# Tableau 10, then its ten lighter companions: distinct on screen, none black or white.
_PALETTE = np.array(
    [
        (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
        (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
        (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
        (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
    ],
    dtype=np.uint8,
)

_GOLDEN = (5**0.5 - 1) / 2


def label_colors(n: int) -> np.ndarray:
    """``n`` distinct, deterministic colours, (n, 3) uint8; colour ``i`` is for label ``i + 1``.

    The first 20 come from a fixed qualitative palette, the rest step the hue by the golden ratio
    and cycle through three brightness/saturation levels.
    """
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    extra = [
        colorsys.hsv_to_rgb((i * _GOLDEN) % 1.0, (0.85, 0.55, 0.7)[i % 3], (0.95, 0.8, 0.6)[i % 3])
        for i in range(max(0, n - len(_PALETTE)))
    ]
    extra = np.rint(np.array(extra, dtype=np.float64).reshape(-1, 3) * 255).astype(np.uint8)
    return np.concatenate([_PALETTE[:n], extra])


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """Colour a (H, W) non-negative integer label map with ``label_colors``; label 0 is black. (H, W, 3) uint8."""
    labels = np.asarray(labels)
    check_shape("labels", labels, ("H", "W"))
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be non-negative")
    n = int(labels.max()) if labels.size else 0
    lut = np.concatenate([np.zeros((1, 3), dtype=np.uint8), label_colors(n)])
    return lut[labels]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    *,
    color: Sequence[int] = (0, 255, 0),
    alpha: float = 0.4,
    contour: bool = True,
) -> np.ndarray:
    """Draw ``mask`` over ``image``. (H, W, 3) uint8.

    Args:
        image: (H, W) or (H, W, C) float in [0, 1], C 1 (grey) or 3 (colour).
        mask: (H, W) bool.
        color: RGB of the mask, 0..255.
        alpha: opacity of the colour inside the mask (0: image only, 1: flat colour).
        contour: also draw the mask's outline (its pixels next to the background or the image
            border) in full colour.
    """
    image = np.asarray(image)
    check_shape("image", image, ("H", "W"), ("H", "W", 1), ("H", "W", 3))
    if image.ndim == 2:
        image = image[:, :, None]
    mask = np.asarray(mask, dtype=bool)
    check_shape("mask", mask, image.shape[:2])
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = np.clip(np.asarray(color, dtype=np.float64), 0, 255)
    if rgb.shape != (3,):
        raise ValueError(f"color must be three values (R, G, B), got {color!r}")
    out = np.repeat(np.clip(image, 0, 1) * 255.0, 3 // image.shape[2], axis=2)
    out[mask] = (1 - alpha) * out[mask] + alpha * rgb
    if contour:
        out[mask & ~ndimage.binary_erosion(mask)] = rgb
    return np.rint(out).astype(np.uint8)
