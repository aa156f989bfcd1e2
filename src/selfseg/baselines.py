"""Classical baselines: cluster maps without a network, scored through the same foreground step.

Each takes a float (H, W, C) image in [0, 1] and returns an int32 (H, W) cluster map, clusters >= 1,
at the image's own resolution.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.cluster.vq import kmeans2, vq
from skimage.filters import threshold_otsu

__all__ = ["KMEANS_REFINE_ITER", "kmeans_labels", "kmeans_maps", "kmeans_refine", "otsu_labels"]


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
    the machine. An image with fewer distinct colours than ``n_clusters`` gets fewer clusters. ``kmeans_maps``
    gives several cluster counts of one image for less.

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
    return kmeans_maps(image, (n_clusters,), starts=starts)[0]


def kmeans_maps(image: np.ndarray, counts: Sequence[int], *, starts: int = KMEANS_STARTS) -> list[np.ndarray]:
    """``kmeans_labels(image, n_clusters=k)`` for each k of ``counts``: a list of (H, W) int32 cluster maps.

    Notes:
        The refinement on every pixel runs Lloyd's iterations as ``kmeans2`` does, but on the image's distinct
        colours weighted by their pixel counts (``_Palette``), found once for all counts: an 8-bit colour image of
        512 x 512 pixels has 20,000-40,000 of them, a grey one at most 256. The centroids are the same sums over
        the same pixels, so the clusters are the same: bit for bit for the float32 images selfseg reads (8-bit
        levels) of up to 4 megapixels, whose sums are exact in double precision in any order; otherwise up to the
        sums' rounding.
    """
    pixels = _finite_points(image, "kmeans_labels")
    sample = pixels[:: -(-len(pixels) // KMEANS_SAMPLE)]
    lloyd = functools.partial(kmeans2, check_finite=False)
    refine = None  # (K, D) centroids of the sample -> (N,) assignment of every pixel
    if len(sample) < len(pixels):
        palette = _Palette.of(image, pixels)
        refine = palette.lloyd if palette is not None else lambda centroids: lloyd(pixels, centroids, minit="matrix")[1]
    maps = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "One of the clusters is empty", UserWarning)
        warnings.filterwarnings("ignore", "invalid value encountered in divide", RuntimeWarning)
        for n_clusters in counts:
            fits = [lloyd(sample, n_clusters, minit="++", seed=np.random.default_rng(start)) for start in range(starts)]
            centroids, assignment = min(fits, key=lambda fit: _inertia(sample, *fit))
            if refine is not None:
                assignment = refine(centroids)
            maps.append((assignment.reshape(image.shape[:2]) + 1).astype(np.int32))
    return maps


@dataclasses.dataclass(frozen=True)
class _Palette:
    """The distinct colours of an 8-bit image (every value k / 255, up to three channels), their pixel counts, and
    which colour each pixel has."""

    colours: np.ndarray  # (M, D) float64
    counts: np.ndarray  # (M,) float64
    index: np.ndarray  # (N,) each pixel's row of ``colours``

    @classmethod
    def of(cls, image: np.ndarray, pixels: np.ndarray) -> _Palette | None:
        """The palette of the (H, W, D) ``image`` (``pixels``: its (N, D) float64 values), or None unless it is an
        8-bit image of at most three channels."""
        if pixels.shape[1] > 3:
            return None
        levels = np.rint(pixels * 255)
        if levels.min() < 0 or levels.max() > 255:
            return None
        if not np.array_equal((levels / 255).astype(image.dtype), image.reshape(pixels.shape)):
            return None
        shifts = 8 * np.arange(pixels.shape[1])[::-1]
        keys, index, counts = np.unique((levels.astype(np.int64) << shifts).sum(axis=1), return_inverse=True, return_counts=True)
        colours = ((keys[:, None] >> shifts) & 255) / 255
        return cls(colours.astype(image.dtype).astype(np.float64), counts.astype(np.float64), index)

    def lloyd(self, centroids: np.ndarray, iterations: int = 10) -> np.ndarray:
        """The (N,) assignment of the pixels after ``kmeans2(pixels, centroids, iter=iterations, minit="matrix")``:
        each iteration assigns every colour to its nearest centroid, then moves each centroid with pixels to their
        mean (a centroid without pixels stays)."""
        for _ in range(iterations):
            assignment, _ = vq(self.colours, centroids, check_finite=False)
            centroids = _moved_centroids(self.colours, assignment, centroids, weights=self.counts)
        return assignment[self.index]


KMEANS_REFINE_ITER = 100
"""Most Lloyd iterations of ``kmeans_refine``; it stops earlier once no point changes cluster."""


def kmeans_refine(features: np.ndarray, start: np.ndarray, *, max_iter: int = KMEANS_REFINE_ITER) -> np.ndarray:
    """k-means of (H, W, D) per-pixel features started from a clustering of the same pixels -> (H, W) int32
    clusters 1..n, n at most the number of clusters in ``start``.

    Args:
        features: (H, W, D) finite features.
        start: (H, W) integer clusters >= 1 (e.g. ``kmeans_labels`` of the pixel colours), the starting partition.
        max_iter: most Lloyd iterations.

    Notes:
        Lloyd's iterations (Lloyd, IEEE Trans. Inf. Theory 1982) from the centroids of ``start``'s clusters in the
        feature space, until no pixel changes cluster or ``max_iter``; a centroid that loses its pixels stays where
        it was. There is no random draw: the result depends on the features and the start alone, and features that
        differ a little land in the same local optimum as long as the start does not move. Sums run in a fixed
        order (``np.bincount``), whatever the number of threads.

    >>> features = np.array([[[0.0], [0.1], [0.9], [1.0]]])
    >>> kmeans_refine(features, np.array([[1, 2, 2, 2]]))
    array([[1, 1, 2, 2]], dtype=int32)
    """
    if start.shape != features.shape[:-1] or start.size == 0 or start.min() < 1:
        raise ValueError(f"kmeans_refine: start must be {features.shape[:-1]} clusters >= 1, got {start.shape}")
    points = _finite_points(features, "kmeans_refine")
    ids, assignment = np.unique(start.ravel(), return_inverse=True)
    centroids = np.zeros((len(ids), points.shape[1]))
    for _ in range(max_iter):
        centroids = _moved_centroids(points, assignment, centroids)
        moved, _ = vq(points, centroids, check_finite=False)
        if np.array_equal(moved, assignment):
            break
        assignment = moved
    return (assignment.reshape(start.shape) + 1).astype(np.int32)


def _finite_points(features: np.ndarray, caller: str) -> np.ndarray:
    """(H, W, D) features as (H * W, D) float64 points; ValueError naming ``caller`` if any is NaN or infinite
    (checked once here, not by scipy at each of the Lloyd iterations)."""
    points = features.reshape(-1, features.shape[-1]).astype(np.float64)
    if not np.isfinite(points).all():
        raise ValueError(f"{caller}: the features contain NaN or infinite values")
    return points


def _moved_centroids(
    points: np.ndarray, assignment: np.ndarray, centroids: np.ndarray, *, weights: np.ndarray | None = None
) -> np.ndarray:
    """Lloyd's update: each of the (K, D) ``centroids`` moved to the mean of its (N, D) ``points`` (weighted by the
    (N,) ``weights``), summed by ``np.bincount`` in a fixed order; a centroid without points stays."""
    sizes = np.bincount(assignment, weights=weights, minlength=len(centroids))
    sums = np.stack(
        [np.bincount(assignment, weights=column if weights is None else weights * column, minlength=len(centroids))
         for column in points.T],
        axis=1,
    )
    return np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None], centroids)


def _inertia(points: np.ndarray, centroids: np.ndarray, assignment: np.ndarray) -> float:
    """Sum of squared distances of (N, D) ``points`` to their assigned centroids."""
    return float(((points - centroids[assignment]) ** 2).sum())
