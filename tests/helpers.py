"""Test helpers shared by several test modules (tiny synthetic inputs)."""

from __future__ import annotations

import numpy as np


def disc_image(height: int = 30, width: int = 40) -> np.ndarray:
    """(height, width, 3) float32: a dark brown disc (radius a quarter of the shorter side) on light skin."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 4) ** 2
    image = np.full((height, width, 3), 0.85, dtype=np.float32)
    image[disc] = (0.35, 0.2, 0.15)
    return image
