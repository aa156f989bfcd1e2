"""Helpers the target priors share: bands, disks, regions, contrasts."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from selfseg.foreground.morphology import fill_holes

EIGHT = np.ones((3, 3), dtype=bool)
"""8-connectivity."""


def frame_band(shape: tuple[int, int], width: float = 0.02) -> np.ndarray:
    """Boolean (H, W) map of the band along the image frame, ``width`` of the shorter side wide (>= 1 px).

    A band rather than the outermost ring, so that a thin border artefact (networks often give the
    outermost pixels a cluster of their own) does not hide that a region reaches the frame.
    """
    w = disk_radius(width, shape)
    frame = np.ones(shape, dtype=bool)
    frame[w:-w, w:-w] = False
    return frame


def disk_radius(fraction: float, shape: tuple[int, ...]) -> int:
    """A structuring-element radius: ``fraction`` of the shorter side, at least 1 pixel."""
    return max(1, round(fraction * min(shape[:2])))


def convex_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a non-empty (H, W) mask, as ``skimage.morphology.convex_hull_image`` gives it: the pixels
    whose centres lie in the hull of the mask pixels' edge midpoints, its border included.

    Notes:
        ``convex_hull_image`` tests each pixel of the mask's bounding box against the hull polygon. Here each row of
        the box gets its span of columns from the hull's edges (``scipy.spatial.ConvexHull``'s facet equations):
        the same pixels, several times faster. The polygon's corners are half-integers, so a pixel centre off an
        edge lies at least 1e-5 pixel from it on images up to 10,000 pixels a side; ``HULL_TOLERANCE`` puts the
        centres on an edge in and no other.

    >>> mask = np.zeros((4, 5), dtype=bool)
    >>> mask[0, 1] = mask[2, 3] = mask[3, 0] = True
    >>> convex_hull(mask).astype(int)
    array([[0, 1, 0, 0, 0],
           [0, 1, 1, 0, 0],
           [1, 1, 1, 1, 0],
           [1, 1, 0, 0, 0]])
    """
    box = _bounding_box(mask)
    normal_row, normal_col, offset = ConvexHull(_outer_midpoints(mask[box])).equations.T  # inside: <= 0
    height, width = mask[box].shape
    span = HULL_TOLERANCE - offset - normal_row * np.arange(height)[:, None]  # (rows, edges): normal_col * col <= span
    # the top and bottom edges (normal_col 0, or nearly) have a positive span on every row of the box: their bound is
    # infinite or far outside it, so they cut no row
    with np.errstate(divide="ignore"):
        bound = span / normal_col
    low = np.ceil(np.where(normal_col < 0, bound, -np.inf).max(axis=1))
    high = np.floor(np.where(normal_col > 0, bound, np.inf).min(axis=1))
    hull = np.zeros(mask.shape, dtype=bool)
    hull[box] = (np.arange(width) >= low[:, None]) & (np.arange(width) <= high[:, None])
    return hull


HULL_TOLERANCE = 1e-9
"""How far (in pixels) outside an edge of ``convex_hull``'s polygon a pixel centre still counts as on it."""


def _bounding_box(mask: np.ndarray, grow: int = 0) -> tuple[slice, slice]:
    """The rows and columns of a non-empty (H, W) mask's bounding box, grown by ``grow`` pixels within the image."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.s_[max(rows[0] - grow, 0) : rows[-1] + grow + 1, max(cols[0] - grow, 0) : cols[-1] + grow + 1]


def _outer_midpoints(mask: np.ndarray) -> np.ndarray:
    """(N, 2) distinct edge midpoints of each row's first and last pixel of the (H, W) mask, above, below and
    outwards: their hull is that of every pixel's edge midpoints (the row's other pixels lie between the two)."""
    rows = np.flatnonzero(mask.any(axis=1))
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    doubled = 1 + np.concatenate([  # twice the midpoints' coordinates, + 1: non-negative integers
        np.stack([2 * rows + up, 2 * column + out], axis=1)
        for column, side in ((first, -1), (last, 1)) for up, out in ((-1, 0), (1, 0), (0, side))
    ])
    stride = 2 * mask.shape[1] + 2
    keys = np.unique(doubled[:, 0] * stride + doubled[:, 1])  # one key per point: qhull may fail on repeated points
    return (np.stack(np.divmod(keys, stride), axis=1) - 1) / 2


def regions_of(mask: np.ndarray, min_pixels: float) -> list[np.ndarray]:
    """Connected regions (8-connectivity) of ``mask`` with at least ``min_pixels`` pixels, holes filled.

    Each region's holes are filled within its bounding box, which gives the same pixels as filling them over the
    whole image (outside the box there is only background, connected to the image's border) at a fraction of the
    cost when the mask has many small regions."""
    components, count = ndimage.label(mask, structure=EIGHT)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    regions = []
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if sizes[index] >= max(1.0, min_pixels):
            region = np.zeros(mask.shape, dtype=bool)
            region[box] = fill_holes(components[box] == index)
            regions.append(region)
    return regions


def centrality(region: np.ndarray) -> float:
    """1 minus the distance of the (H, W) region's centroid from the image centre, over the half-diagonal
    (both in fractions of the sides): 1 at the centre, 0 in a corner."""
    rows, cols = np.nonzero(region)
    offset = np.hypot(rows.mean() / region.shape[0] - 0.5, cols.mean() / region.shape[1] - 0.5)
    return float(1 - offset / np.hypot(0.5, 0.5))


def clusters_by_grey(labels: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids of ``labels`` sorted from darkest to brightest mean ``grey``, and those means."""
    ids = np.unique(labels)
    means = ndimage.mean(grey, labels, ids)
    order = np.argsort(means)
    return ids[order], means[order]


def grey_contrast(region: np.ndarray, grey: np.ndarray, width: int, within: np.ndarray | None = None) -> float:
    """Mean grey of the band of ``width`` pixels around ``region`` (inside ``within``) minus the region's."""
    # ``width`` dilations by the 3x3 square are one (2 width + 1)-square maximum filter, run separably, on the
    # region's bounding box grown by ``width`` (no band pixel lies outside it): the band's pixels in the same order
    if not region.any():
        return 0.0
    box = _bounding_box(region, grow=width)
    band = ndimage.maximum_filter(region[box], size=2 * width + 1, mode="constant") & ~region[box]
    if within is not None:
        band &= within[box]
    return float(grey[box][band].mean() - grey[region].mean()) if band.any() else 0.0


def nearest_resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of ``array`` to ``shape`` (pixel centres aligned)."""
    rows = ((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0]).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1]).astype(np.intp)
    return array[rows[:, None], cols[None, :]]
