"""Image arrays: the one check and conversion of an image array before it is clustered (``as_float_image``)."""

from __future__ import annotations

import numpy as np

from selfseg.checks import check_shape
from selfseg.decoding import MIN_SIDE

__all__ = ["as_float_image"]


def as_float_image(image: np.ndarray) -> np.ndarray:
    """Check and convert an image array to float32 (H, W, C) in [0, 1], C in {1, 3}.

    Accepts (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped); bool, uint8, uint16 (scaled by
    their range) or float (kept if inside [0, 1], else min-max scaled). Sides must be at least ``MIN_SIDE``.

    >>> as_float_image(np.full((4, 5), 255, dtype=np.uint8)).shape
    (4, 5, 1)
    """
    image = np.asarray(image)
    check_shape("image", image, ("H", "W"), ("H", "W", 1), ("H", "W", 3), ("H", "W", 4))
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[0] < MIN_SIDE or image.shape[1] < MIN_SIDE:
        raise ValueError(f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {image.shape[0]}x{image.shape[1]}")
    image = image[:, :, :3]
    if image.dtype == bool:
        return image.astype(np.float32)
    if image.dtype in (np.uint8, np.uint16):
        return image.astype(np.float32) / np.iinfo(image.dtype).max
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must be bool, uint8, uint16 or float, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        image = (image - low) / max(high - low, 1e-12)
    return image
