"""Classical baselines: cluster maps without a network, scored through the same foreground step.

Each takes a float (H, W, C) image in [0, 1] and returns an int32 (H, W) cluster map, clusters >= 1,
at the image's own resolution.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.cluster.vq import kmeans2
from skimage.filters import threshold_otsu

__all__ = ["kmeans_labels", "otsu_labels"]


def otsu_labels(image: np.ndarray) -> np.ndarray:
    """Two clusters of the grey level (channel mean) split at Otsu's threshold: 1 below, 2 above."""
    grey = image.mean(axis=2)
    if np.ptp(grey) == 0:
        return np.ones(grey.shape, dtype=np.int32)
    return np.where(grey > threshold_otsu(grey), 2, 1).astype(np.int32)


def kmeans_labels(image: np.ndarray, *, n_clusters: int = 3, seed: int = 0) -> np.ndarray:
    """k-means of the pixel colours, or of any (H, W, D) per-pixel features (``scipy.cluster.vq.kmeans2``,
    k-means++ start, seeded). An image with fewer distinct colours than ``n_clusters`` gets fewer clusters
    (scipy's warnings about the empty ones are silenced)."""
    pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "One of the clusters is empty", UserWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        _, assignment = kmeans2(pixels, n_clusters, minit="++", seed=np.random.default_rng(seed))
    return (assignment.reshape(image.shape[:2]) + 1).astype(np.int32)
