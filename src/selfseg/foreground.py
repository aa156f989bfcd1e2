"""Foreground selection without ground truth: which clusters make the target mask.

First version (documented in docs/methods.md), in two steps:

1. ``cluster_mask``: the target is taken to be a region that is darker than its surroundings and
   stays off the image frame, like a skin lesion in dermoscopy or the lungs on CT. Every connected
   region of every cluster is scored; the best region is kept, together with the regions of the same
   cluster that score nearly as well (the second lung); regions of other clusters that touch it, stay
   off the frame and are darker than their surroundings are merged in (a lesion's rim is often a
   cluster of its own).
2. ``refine_mask``: the cluster boundary is snapped to the image. Pixel colours are projected on the
   line from the background cluster's mean colour to the mask's mean colour, Otsu's threshold splits
   that projection, and the above-threshold components that overlap the cluster mask are kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

__all__ = ["cluster_mask", "oracle_mask", "refine_mask", "region_scores", "select_foreground"]

_EIGHT = np.ones((3, 3), dtype=bool)


def _frame(shape: tuple[int, int]) -> np.ndarray:
    """Boolean (H, W) map of the outermost pixel ring."""
    frame = np.zeros(shape, dtype=bool)
    frame[0, :] = frame[-1, :] = frame[:, 0] = frame[:, -1] = True
    return frame


def region_scores(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    min_area: float = 0.002,
    ring: float = 0.03,
) -> list[dict]:
    """Score every connected region (8-connectivity, holes filled) of every cluster.

    Args:
        labels: (H, W) int cluster map, clusters >= 1.
        image: (H, W) or (H, W, C) float image in [0, 1] at the same resolution.
        min_area: regions smaller than this fraction of the image are ignored.
        ring: width of the surrounding band used for contrast, as a fraction of the image diagonal.

    Returns:
        One dict per region: ``label``, ``mask`` (filled, bool), ``area`` (fraction of the image),
        ``frame`` (fraction of the image frame it covers), ``contrast`` (mean grey of the surrounding
        band minus its own; positive when darker) and ``score``
        ``= max(contrast, 0.01) * sqrt(area) * (1 - frame) ** 4``.
    """
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (H, W), got {labels.shape}")
    grey = image if image.ndim == 2 else image.mean(axis=2)
    if grey.shape != labels.shape:
        raise ValueError(f"image must have the labels' shape {labels.shape}, got {image.shape}")
    frame = _frame(labels.shape)
    n_pixels = labels.size
    width = max(1, round(ring * float(np.hypot(*labels.shape))))
    regions = []
    for label in np.unique(labels):
        components, count = ndimage.label(labels == label, structure=_EIGHT)
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        for index in np.flatnonzero(sizes >= max(1, min_area * n_pixels)):
            if index == 0:
                continue
            mask = ndimage.binary_fill_holes(components == index)
            band = ndimage.binary_dilation(mask, structure=_EIGHT, iterations=width) & ~mask
            inside = float(grey[mask].mean())
            outside = float(grey[band].mean()) if band.any() else inside
            area = float(mask.sum()) / n_pixels
            touch = float((mask & frame).sum()) / float(frame.sum())
            contrast = outside - inside
            regions.append(
                {
                    "label": int(label),
                    "mask": mask,
                    "area": area,
                    "frame": touch,
                    "contrast": contrast,
                    "score": max(contrast, 0.01) * np.sqrt(area) * (1 - touch) ** 4,
                }
            )
    return regions


def cluster_mask(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    keep: float = 0.5,
    max_frame: float = 0.02,
    min_area: float = 0.002,
) -> np.ndarray:
    """Union of the clusters' regions that make the target (step 1). (H, W) bool.

    The best-scoring region (``region_scores``) is kept, with every other region of the same cluster
    scoring at least ``keep`` times as much. Then, until nothing changes, any region that touches
    the mask, covers less than ``max_frame`` of the image frame and is darker than its surroundings
    is merged in. Holes are filled. An image with a single cluster gives an empty mask.
    """
    regions = region_scores(labels, image, min_area=min_area)
    mask = np.zeros(labels.shape, dtype=bool)
    if len(np.unique(labels)) < 2 or not regions:
        return mask
    best = max(regions, key=lambda r: r["score"])
    rest = []
    for region in regions:
        if region["label"] == best["label"] and region["score"] >= keep * best["score"]:
            mask |= region["mask"]
        elif region["frame"] < max_frame and region["contrast"] > 0:
            rest.append(region)
    while rest:
        near = ndimage.binary_dilation(mask, structure=_EIGHT)
        touching = [(r["mask"] & near).any() for r in rest]
        if not any(touching):
            break
        for region, touches in zip(rest, touching):
            if touches:
                mask |= region["mask"]
        rest = [r for r, touches in zip(rest, touching) if not touches]
    return ndimage.binary_fill_holes(mask)


def refine_mask(mask: np.ndarray, image: np.ndarray, labels: np.ndarray, *, min_overlap: float = 0.1) -> np.ndarray:
    """Snap a cluster mask to the image's own boundary (step 2). (H, W) bool.

    The background colour is the mean of the largest cluster outside the mask. Each pixel's colour
    is projected on the background-to-mask colour line (0 = background, 1 = mask), Otsu's threshold
    on that projection over the whole image splits it, and the above-threshold components that hold
    at least ``min_overlap`` of the largest overlap with ``mask`` are kept; holes are filled.
    ``mask`` comes back unchanged when it is empty or has no contrast with the background.
    """
    if not mask.any() or mask.all():
        return mask
    pixels = image if image.ndim == 3 else image[:, :, None]
    away = labels[~ndimage.binary_dilation(mask, structure=_EIGHT, iterations=3)]
    if away.size == 0:
        return mask
    background = (labels == np.bincount(away).argmax()) & ~mask
    inside, outside = pixels[mask].mean(axis=0), pixels[background].mean(axis=0)
    direction = inside - outside
    norm = float(direction @ direction)
    if norm < 1e-8:
        return mask
    projection = ((pixels - outside) @ direction) / norm
    if np.ptp(projection) == 0:
        return mask
    components, count = ndimage.label(projection > threshold_otsu(projection), structure=_EIGHT)
    overlap = np.bincount(components[mask], minlength=count + 1)
    overlap[0] = 0
    if overlap.max() == 0:
        return mask
    return ndimage.binary_fill_holes((overlap >= min_overlap * overlap.max())[components] & (components > 0))


def _nearest_resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of ``array`` to ``shape`` (pixel centres aligned)."""
    rows = ((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0]).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1]).astype(np.intp)
    return array[rows[:, None], cols[None, :]]


def select_foreground(
    labels: np.ndarray, image: np.ndarray, *, refine: bool = True, work_size: int = 512
) -> np.ndarray:
    """Pick the target mask from a cluster map and its image, without ground truth. (H, W) bool.

    Args:
        labels: (H, W) int cluster map (clusters >= 1).
        image: (H, W) or (H, W, C) float image in [0, 1], same height and width.
        refine: snap the cluster mask to the image (``refine_mask``, at full resolution); False keeps
            the clusters' own boundary.
        work_size: the cluster step (``cluster_mask``) runs on a nearest-neighbour copy whose longer
            side is at most this, so its cost stays bounded on large images.
    """
    height, width = labels.shape
    scale = min(1.0, work_size / max(height, width))
    small = (max(2, round(height * scale)), max(2, round(width * scale)))
    if small == labels.shape:
        mask = cluster_mask(labels, image)
    else:
        mask = _nearest_resize(cluster_mask(_nearest_resize(labels, small), _nearest_resize(image, small)), labels.shape)
    return refine_mask(mask, image, labels) if refine else mask


def oracle_mask(labels: np.ndarray, truth: np.ndarray, *, crop: bool = False) -> np.ndarray:
    """The papers' protocol, which needs the ground truth: NOT a segmentation method. (H, W) bool.

    Returns the cluster with the largest overlap with ``truth`` ((H, W) bool). With ``crop``, it is
    also multiplied by ``truth`` dilated twice with a 5x5 square (the released S3-Net code's
    ``create_mask``; its MS-Former code uses 7x7). An empty ``truth`` gives an empty mask.
    """
    if truth.shape != labels.shape:
        raise ValueError(f"truth must have the labels' shape {labels.shape}, got {truth.shape}")
    truth = truth.astype(bool)
    if not truth.any():
        return np.zeros(labels.shape, dtype=bool)
    mask = labels == np.bincount(labels[truth]).argmax()
    if crop:
        mask &= ndimage.binary_dilation(truth, structure=np.ones((5, 5), dtype=bool), iterations=2)
    return mask
