"""The ``"polyp"`` prior: one compact region of the endoscope's field that stands out from the mucosa.

Colonoscopy frames show the mucosa inside a black frame (an octagon, often with text and a thumbnail
inset on it). A polyp is a raised region that the endoscope's light makes brighter and the tissue
redder or yellower than the mucosa around it, and that the endoscopist keeps near the centre. Candidates
are the connected regions of each cluster inside the field (opened to cut vessels and folds); each is
scored by ``(1 + its positive CIELAB excess over a band around it) * size prior * centrality**2`` (the size
prior is log-normal around 8 % of the field).
Colour clusters rarely separate a polyp from the mucosa it grows from, so this prior is far less
reliable than the lesion and lung priors (docs/results.md gives its figures and ceiling).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.color import rgb2lab

from selfseg.foreground.morphology import disk_dilation, disk_erosion, disk_opening, fill_holes
from selfseg.foreground.regions import EIGHT, centrality, disk_radius, regions_of

__all__ = ["endoscope_field", "looks_endoscopic", "polyp_candidates", "polyp_mask"]

BLACK = 0.12
"""Pixels whose brightest channel is below this belong to the endoscope's black frame."""


def endoscope_field(image: np.ndarray) -> np.ndarray:
    """The (H, W) bool field of view of an (H, W, C) image: its largest region brighter than ``BLACK``, holes
    filled (text and insets on the frame are left out), less a thin rim."""
    bright = image.max(axis=2) >= BLACK
    bright = disk_opening(bright, disk_radius(0.015, bright.shape))
    components, count = ndimage.label(bright, structure=EIGHT)
    if count == 0:
        return np.ones(bright.shape, dtype=bool)
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    field = fill_holes(components == largest)
    return disk_erosion(field, disk_radius(0.01, field.shape))


def looks_endoscopic(image: np.ndarray, *, corner: float = 0.05, black_share: float = 0.8) -> bool:
    """True for an endoscope frame: all four corners black (squares of ``corner`` of the shorter side, each at
    least ``black_share`` black) around a red-orange field (median CIELAB a* and b* above 12).

    Dermoscopy vignettes also darken the corners, but their skin is far less saturated; grey images
    (CT, X-ray) are never endoscopic.
    """
    if image.ndim == 2 or image.shape[2] < 3:
        return False
    step = max(1, max(image.shape[:2]) // 256)  # a subsample: the test need not see every pixel
    small = image[::step, ::step, :3]
    side = max(2, round(corner * min(small.shape[:2])))
    black = small.max(axis=2) < BLACK
    corners = (black[:side, :side], black[:side, -side:], black[-side:, :side], black[-side:, -side:])
    if min(float(c.mean()) for c in corners) < black_share or black.all():
        return False
    _, a, b = np.median(rgb2lab(small)[~black], axis=0)
    return bool(a > 12 and b > 12)


def polyp_candidates(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    opening: float = 0.012,
    band: float = 0.03,
    min_area: float = 0.005,
    max_area: float = 0.6,
    typical_area: float = 0.08,
    area_spread: float = 1.5,
) -> list[tuple[np.ndarray, float]]:
    """The candidate regions of the polyp prior and their scores (see the module docstring).

    Args:
        labels: (H, W) int cluster map.
        image: (H, W, C) float image in [0, 1], C in {1, 3} (a grey image is scored on its brightness alone).
        opening: radius of the opening that cuts thin structures, as a fraction of the shorter side.
        band: width of the surround a candidate is compared with, as a fraction of the shorter side.
        min_area, max_area: candidates outside these fractions of the field are left out.
        typical_area, area_spread: the size prior, log-normal in the fraction of the field: its median and the
            standard deviation of its logarithm (polyps cover from under 1 % to over 30 % of the field).

    Returns:
        (region (H, W) bool with holes filled, score) for every candidate.
    """
    field = endoscope_field(image)
    lab = rgb2lab(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[..., :3])
    radius, surround = disk_radius(opening, labels.shape), disk_radius(band, labels.shape)
    field_area = float(field.sum())
    candidates = []
    for label in np.unique(labels[field]):
        for region in regions_of(disk_opening((labels == label) & field, radius), min_area * field_area):
            area = float(region.sum()) / field_area
            ring = disk_dilation(region, surround) & ~region & field
            if area > max_area or not ring.any():
                continue
            excess = np.clip(lab[region].mean(axis=0) - lab[ring].mean(axis=0), 0, None).sum()
            size = np.exp(-0.5 * (np.log(area / typical_area) / area_spread) ** 2)
            candidates.append((region, float((1 + excess) * size * centrality(region) ** 2)))
    return candidates


def polyp_mask(labels: np.ndarray, image: np.ndarray, **options) -> np.ndarray:
    """The best-scoring of ``polyp_candidates(labels, image, **options)``: (H, W) bool, empty if there is none."""
    candidates = polyp_candidates(labels, image, **options)
    if not candidates:
        return np.zeros(labels.shape, dtype=bool)
    return max(candidates, key=lambda candidate: candidate[1])[0]
