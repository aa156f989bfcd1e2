"""A ground-truth-free confidence of a mask: how well its inside and its surround separate on the image.

``mask_confidence`` takes the grey level (channel mean) of a band just inside the mask's boundary and of a
band just outside it (each 3 % of the image diagonal wide) and measures their separation,
``|mean_in - mean_out| / (std_in + std_out)``, mapped to [0, 1) by ``s / (1 + s)``. A mask that follows a
real boundary scores high; one cut through a uniform region, or grown into its surround, scores low, so
sorting by it puts the doubtful masks first (docs/results.md measures how well it ranks them).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from selfseg.checks import check_shape

__all__ = ["BAND", "WORK_SIZE", "mask_confidence"]

BAND = 0.03
"""Width of the inner and outer bands, as a fraction of the image diagonal (at least 2 px)."""
WORK_SIZE = 256
"""The measure runs on copies whose longer side is at most this, like the foreground rules."""


def mask_confidence(mask: np.ndarray, image: np.ndarray) -> float:
    """Confidence in [0, 1) of an (H, W) bool ``mask`` of an (H, W) or (H, W, C) image in [0, 1]; 0 for an
    empty or full mask.

    >>> import numpy as np
    >>> yy, xx = np.mgrid[:64, :64]
    >>> disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 15**2
    >>> image = np.where(disc, 0.3, 0.7) + np.random.default_rng(0).normal(0, 0.05, disc.shape)
    >>> mask_confidence(disc, image) > 0.7, mask_confidence(np.roll(disc, 20, axis=1), image) < 0.5
    (True, True)
    """
    mask = np.asarray(mask, dtype=bool)
    check_shape("image", image, mask.shape, (*mask.shape, "C"))
    grey = image if image.ndim == 2 else image.mean(axis=2)
    scale = min(1.0, WORK_SIZE / max(mask.shape))
    if scale < 1:
        small = (max(2, round(mask.shape[0] * scale)), max(2, round(mask.shape[1] * scale)))
        grey = resize(grey, small, order=1, anti_aliasing=True)
        mask = resize(mask.astype(np.float32), small, order=0) > 0.5
    if not mask.any() or mask.all():
        return 0.0
    size = 2 * max(2, round(BAND * float(np.hypot(*mask.shape)))) + 1
    outside = ndimage.maximum_filter(mask, size=size, mode="constant") & ~mask
    inside = mask & ~ndimage.minimum_filter(mask, size=size, mode="constant", cval=True)
    inside = inside if inside.any() else mask  # a mask thinner than the band: all of it
    if not outside.any():
        return 0.0
    a, b = grey[inside], grey[outside]
    separation = abs(float(a.mean()) - float(b.mean())) / (float(a.std()) + float(b.std()) + 1e-6)
    return separation / (1 + separation)
