"""The ``"lesion"`` prior: one compact blob, usually darker than its surroundings (dermoscopy)."""

from __future__ import annotations

import numpy as np

from selfseg.foreground.morphology import disk_dilation, disk_opening, fill_holes
from selfseg.foreground.regions import (
    centrality,
    clusters_by_grey,
    convex_hull,
    disk_radius,
    frame_band,
    grey_contrast,
    regions_of,
)


def lesion_mask(
    labels: np.ndarray, grey: np.ndarray, *, opening: float = 0.012, min_area: float = 0.005, max_area: float = 0.95,
    contrast_exponent: float = 1.1,
) -> np.ndarray:
    """The most lesion-like region of the cluster map (see the module docstring). (H, W) bool.

    Args:
        labels: (H, W) int cluster map.
        grey: (H, W) float image in [0, 1].
        opening: radius of the opening that removes thin structures, as a fraction of the shorter side.
        min_area, max_area: candidate regions outside these fractions of the image are ignored.
        contrast_exponent: weight of a region's contrast in its score; a little over 1 settles near ties between a
            lesion and a larger, paler region touching the frame (docs/experiments/lesion-contrast-weight.md).

    Returns the region with holes filled (not yet hull-smoothed); empty if no candidate qualifies.
    """
    frame = frame_band(labels.shape)
    band = max(1, round(0.03 * float(np.hypot(*labels.shape))))
    radius = disk_radius(opening, labels.shape)
    order, _ = clusters_by_grey(labels, grey)
    candidates = [np.isin(labels, order[:k]) for k in range(1, len(order))]
    candidates += [labels == label for label in order[1:-1]]
    best, best_score, source = np.zeros(labels.shape, dtype=bool), -np.inf, None
    for candidate in candidates:
        for region in regions_of(disk_opening(candidate, radius), min_area * labels.size):
            area = float(region.mean())
            if area > max_area:
                continue
            touch = float((region & frame).sum()) / float(frame.sum())
            bound = (  # the score if the region were convex: solidity <= 1, so the score is at most this
                max(grey_contrast(region, grey, band), 0.005) ** contrast_exponent * np.sqrt(area) * (1 - touch) ** 2
                * centrality(region)
            )
            if bound <= best_score:  # it cannot win: skip its convex hull, the rule's costliest step
                continue
            solidity = float(region.sum()) / float(convex_hull(region).sum())
            score = bound * solidity
            if score > best_score:
                best, best_score, source = region, score, candidate
    if source is None:
        return best
    # give back what the opening shaved off the chosen region (corners, a rough rim), not what it cut away
    return fill_holes(best | (source & disk_dilation(best, radius)))
