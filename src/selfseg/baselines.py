"""Classical baselines: cluster maps without a network, scored through the same foreground step.

Each takes a float (H, W, C) image in [0, 1] and returns an int32 (H, W) cluster map, clusters >= 1,
at the image's own resolution.
"""

from __future__ import annotations

import functools
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


KMEANS_STARTS = 4
"""k-means++ starts of ``kmeans_labels``; the clustering of lowest inertia is kept."""

KMEANS_SAMPLE = 16384
"""Most pixels the starts of ``kmeans_labels`` are compared on (an even stride over the image)."""


def kmeans_labels(
    image: np.ndarray, *, n_clusters: int = 3, seed: int | None = None, starts: int = KMEANS_STARTS
) -> np.ndarray:
    """k-means of the pixel colours, or of any (H, W, D) per-pixel features -> (H, W) int32 clusters 1..n.

    The result depends on the pixels only: the same features give the same clusters whatever the fit's seed or
    the machine. An image with fewer distinct colours than ``n_clusters`` gets fewer clusters.

    Notes:
        ``starts`` k-means++ starts (Arthur & Vassilvitskii, SODA 2007), drawn from generators seeded 0, 1, ...,
        each refined by Lloyd's iterations (``scipy.cluster.vq.kmeans2``) on at most ``KMEANS_SAMPLE`` pixels; the
        centroids of lowest inertia there are refined on every pixel. One random start lands in another local
        optimum from seed to seed, and the mask chosen from the clusters moves with it (docs/experiments/
        single-image-spread.md); the best of several does so far less.

    .. deprecated:: 0.12
        ``seed`` is ignored: the clusters no longer depend on it.

    >>> image = np.zeros((4, 6, 3)); image[:, 3:] = 1.0
    >>> kmeans_labels(image, n_clusters=2)[0]
    array([1, 1, 1, 2, 2, 2], dtype=int32)
    """
    if seed is not None:
        warnings.warn("kmeans_labels: seed is ignored since selfseg 0.12", FutureWarning, stacklevel=2)
    pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
    if not np.isfinite(pixels).all():  # checked once here, not by scipy at each of the Lloyd iterations
        raise ValueError("kmeans_labels: the features contain NaN or infinite values")
    sample = pixels[:: -(-len(pixels) // KMEANS_SAMPLE)]
    lloyd = functools.partial(kmeans2, check_finite=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "One of the clusters is empty", UserWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        fits = [lloyd(sample, n_clusters, minit="++", seed=np.random.default_rng(start)) for start in range(starts)]
        centroids, assignment = min(fits, key=lambda fit: _inertia(sample, *fit))
        if len(sample) < len(pixels):
            _, assignment = lloyd(pixels, centroids, minit="matrix")
    return (assignment.reshape(image.shape[:2]) + 1).astype(np.int32)


def _inertia(points: np.ndarray, centroids: np.ndarray, assignment: np.ndarray) -> float:
    """Sum of squared distances of (N, D) ``points`` to their assigned centroids."""
    return float(((points - centroids[assignment]) ** 2).sum())
