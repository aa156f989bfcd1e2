"""The ``"lungs"`` prior: two large dark regions inside the body, left and right (CT, chest X-ray)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import inverse_gaussian_gradient, morphological_geodesic_active_contour

from selfseg.foreground.morphology import disk_closing, disk_erosion, disk_opening, fill_holes
from selfseg.foreground.radiograph import below_neck, below_shoulders, fill_lateral, is_radiograph
from selfseg.foreground.regions import (
    EIGHT,
    clusters_by_grey,
    disk_radius,
    frame_band,
    grey_contrast,
    regions_of,
)


def lungs_mask(
    labels: np.ndarray, grey: np.ndarray, *, margin: float = 0.05, opening: float = 0.012, min_area: float = 0.01,
    pair: float = 0.2, closing: float = 0.04, dark_tolerance: float = 0.05, outside_scales: tuple[float, ...] = (1, 4, 8),
    prefer_darker: float = 0.05, shoulders: float = 0.85, neck: float = 0.3, lateral_depth: float = 0.016,
    radiograph_contrast: float = 0.15, snap_iterations: int = 4, return_radiograph: bool = False,
) -> np.ndarray | tuple[np.ndarray, bool]:
    """Both lungs from the cluster map (see the module docstring). (H, W) bool, empty if none found
    (also when the darkest cluster does not reach the frame: no dark surround, no body); with
    ``return_radiograph``, also whether the radiograph steps ran (``radiograph.is_radiograph``).

    Args:
        labels, grey: (H, W) int cluster map and (H, W) float image in [0, 1].
        margin: body erosion (and regrowth) distance, as a fraction of the shorter side.
        opening, closing: radii of the clean-up disks, as fractions of the shorter side.
        min_area: lung candidates smaller than this fraction of the image are ignored.
        pair: the second region is the other lung if it has this fraction of the first one's area and lies
            across the midline; the largest alone is both lungs (joined across the mediastinum) if its
            parts on either side of the midline are within this fraction of each other.
        dark_tolerance: clusters whose mean grey is within this of the darkest one's count as darkest
            when finding the outside (a network may split flat black air into two striped clusters).
        outside_scales: the outside is the darkest clusters' frame-connected part after an opening of
            ``opening`` times each of these, in turn, until a left/right pair is found: a larger one cuts
            the bridges (the neck, a dark fat layer on CT) through which the lungs would count as outside.
        prefer_darker: a candidate of more (brighter) clusters must score this fraction higher than the
            darker one before it: the lungs are the body's darkest structure; a near tie is fat joining them.
        shoulders: on a radiograph (``radiograph.is_radiograph``), the mask is cut above the first row where
            the body is this fraction of its widest: the apices lie at the shoulders, and what lies above
            them is as dark as the lungs on many chest X-rays.
        neck: on a radiograph, a band across the mask's top that joins both lungs is cut if it is at most
            this fraction of the mask's height (``radiograph.below_neck``; 0 turns it off).
        lateral_depth: on a radiograph, after the edge snap, each lung's outer side is filled towards its
            convex hull by at most this fraction of the shorter side per row (``radiograph.fill_lateral``).
        radiograph_contrast: the ``radiograph.is_radiograph`` threshold.
        snap_iterations: steps of a morphological geodesic active contour (scikit-image) that move the
            mask's boundary outward, at most one pixel a step, until it meets an edge of ``grey``: the
            darkest clusters stop short of the brighter lung rims and bases that annotators include.
            0 turns it off.
    """
    order, means = clusters_by_grey(labels, grey)
    darkest = np.isin(labels, order[means <= means[0] + dark_tolerance])
    found = _search(labels, grey, order, darkest, margin=margin, opening=opening, min_area=min_area, pair=pair,
                    outside_scales=outside_scales, prefer_darker=prefer_darker)
    mask, radiograph = np.zeros(labels.shape, dtype=bool), False
    if found is not None:
        best, best_k, best_body = found
        grow, close = disk_radius(margin, labels.shape), disk_radius(closing, labels.shape)
        mask = _regrow(best, np.isin(labels, order[:best_k]) & best_body, grow, close)
        radiograph = is_radiograph(mask, best_body, grey, radiograph_contrast)
        if radiograph:
            mask = below_neck(below_shoulders(mask, best_body, shoulders), neck)
        mask = snap_to_edges(mask, grey, snap_iterations)
        if radiograph:
            mask = fill_lateral(mask, disk_radius(lateral_depth, labels.shape))
    return (mask, radiograph) if return_radiograph else mask


def _search(
    labels: np.ndarray, grey: np.ndarray, order: np.ndarray, darkest: np.ndarray, *, margin: float, opening: float,
    min_area: float, pair: float, outside_scales: tuple[float, ...], prefer_darker: float,
) -> tuple[np.ndarray, int, np.ndarray] | None:
    """The best lung candidate of ``lungs_mask`` (its arguments): (lungs, how many of the darkest clusters of
    ``order`` make them, the body they lie in), or None."""
    height, width = labels.shape
    frame = frame_band(labels.shape)
    radius = disk_radius(opening, labels.shape)
    band = max(1, round(0.03 * float(np.hypot(height, width))))
    grow = disk_radius(margin, labels.shape)
    best, best_score, best_k, best_body, best_pair = None, -np.inf, 0, None, False
    for scale in outside_scales:
        outside = _outside(darkest, frame, disk_radius(opening * scale, labels.shape))
        if not outside.any():  # no dark surround: no body to look inside
            break
        body = ~outside
        inner = disk_erosion(body, grow)
        for k in range(1, len(order)):
            candidate = disk_opening(np.isin(labels, order[:k]) & inner, radius)
            regions = [r for r in regions_of(candidate, min_area * labels.size) if not (r & frame).any()]
            if not regions:
                continue
            lungs, paired = _pair_of(regions, pair)
            score = max(grey_contrast(lungs, grey, band, within=body), 0.005) * np.sqrt(lungs.mean())
            score *= 1.0 if paired else 0.5
            if score > best_score * (1 + prefer_darker):
                best, best_score, best_k, best_body, best_pair = lungs, score, k, body, paired
        if best_pair:
            break
    return None if best is None else (best, best_k, best_body)


def _outside(darkest: np.ndarray, frame: np.ndarray, radius: int) -> np.ndarray:
    """The regions of ``darkest`` (opened with a disk of ``radius``) that reach the ``frame`` band. (H, W) bool."""
    components, _ = ndimage.label(disk_opening(darkest, radius), structure=EIGHT)
    return np.isin(components, np.unique(components[frame & (components > 0)]))


def _pair_of(regions: list[np.ndarray], pair: float) -> tuple[np.ndarray, bool]:
    """The lungs among candidate ``regions`` (see ``lungs_mask``'s ``pair``) and whether they make a pair."""
    regions = sorted(regions, key=lambda r: -int(r.sum()))
    width = regions[0].shape[1]
    halves = np.array([regions[0][:, : width // 2].sum(), regions[0][:, width // 2 :].sum()])
    lungs, paired = regions[0], bool(halves.min() >= pair * halves.max())  # both lungs joined
    if len(regions) > 1 and regions[1].sum() >= pair * regions[0].sum():
        sides = [np.nonzero(r)[1].mean() / width - 0.5 for r in regions[:2]]
        if sides[0] * sides[1] < 0:
            lungs, paired = regions[0] | regions[1], True
    return lungs, paired


def _regrow(lungs: np.ndarray, allowed: np.ndarray, grow: int, radius: int) -> np.ndarray:
    """``lungs`` grown by ``grow`` pixels inside ``allowed`` (their clusters in the body), then each connected
    region closed with a disk of ``radius`` and hole-filled on its own (closing both together could bridge a
    thin mediastinum and fill it in). (H, W) bool."""
    grown = lungs | (allowed & (ndimage.distance_transform_edt(~lungs) <= grow))
    components, _ = ndimage.label(grown, structure=EIGHT)
    mask = np.zeros(lungs.shape, dtype=bool)
    for index in np.unique(components[lungs]):  # lungs lie inside grown: no background label here
        mask |= fill_holes(disk_closing(components == index, radius))
    return mask


def snap_to_edges(mask: np.ndarray, grey: np.ndarray, iterations: int = 4) -> np.ndarray:
    """``mask`` after ``iterations`` steps of ``skimage.segmentation.morphological_geodesic_active_contour``
    (a balloon force outward, stopped by the edges of ``grey``, one smoothing pass a step, which may also
    take off single-pixel spurs). (H, W) bool."""
    if iterations == 0 or not mask.any():
        return mask
    edges = inverse_gaussian_gradient(grey, alpha=100, sigma=1)
    snapped = morphological_geodesic_active_contour(
        edges, iterations, init_level_set=mask.astype(np.int8), smoothing=1, balloon=1, threshold="auto"
    )
    return snapped.astype(bool)


def lies_low(mask: np.ndarray, limit: float = 0.7) -> bool:
    """True when the (H, W) ``mask``'s centroid lies below ``limit`` of the image's height: lungs on a chest
    X-ray never do (they fill the upper and middle thorax), while the gaps between the arms and the chest do,
    which the rule picks on a film whose few clusters join the lungs to the body. Basal CT slices can, so
    ``foreground.implausible`` asks it on radiographs only. False for an empty mask."""
    rows = np.nonzero(mask)[0]
    return rows.size > 0 and float(rows.mean()) > limit * (mask.shape[0] - 1)
