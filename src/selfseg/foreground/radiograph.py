"""Steps of the lung rule for projection radiographs (chest X-rays) only.

On an X-ray the neck and the air or soft tissue above the shoulders are often as dark as the lungs and
join their clusters, and the lateral rims, where the ribs' shadows cross the lung, fall out of the darkest
clusters in a saw-tooth. ``lungs_mask`` runs these steps when ``is_radiograph`` holds: the cuts
(``below_shoulders``, ``below_neck``) before its edge snap, ``fill_lateral`` after it. On CT
the lungs are nearly air, the test fails and none of them runs (the shoulder cut would take the lungs'
front there: a body ellipse is narrow at the top).

All masks are (H, W) bool; the image's left and right lungs are the mask's parts on either side of the
gap between them (``gap_column``).
"""

from __future__ import annotations

import numpy as np

from selfseg.foreground.regions import convex_hull


def is_radiograph(lungs: np.ndarray, body: np.ndarray, grey: np.ndarray, threshold: float = 0.15) -> bool:
    """True when the ``lungs`` lie clearly between the air outside the ``body`` and the rest of the body in
    grey: (lungs - outside) / (rest - outside) of the median greys above ``threshold``. A projection (chest
    X-ray) adds the chest wall to every lung pixel, so the ratio is well above 0; on CT the lung
    parenchyma is nearly air, so it is near 0. All three are (H, W); False for an empty mask."""
    rest = body & ~lungs
    if not (lungs.any() and rest.any() and (~body).any()):
        return False
    outside = float(np.median(grey[~body]))
    spread = float(np.median(grey[rest])) - outside
    return spread > 0 and (float(np.median(grey[lungs])) - outside) / spread > threshold


def below_shoulders(mask: np.ndarray, body: np.ndarray, fraction: float = 0.85) -> np.ndarray:
    """``mask`` without the rows above the first row where ``body`` covers ``fraction`` of its widest row: on
    a chest X-ray that row is the shoulders, and what lies above it is neck."""
    widths = body.sum(axis=1)
    shoulder_row = int(np.argmax(widths >= fraction * widths.max()))
    cut = mask.copy()
    cut[:shoulder_row] = False
    return cut


def gap_column(mask: np.ndarray) -> int:
    """The column between the two lungs: the one of the middle third of ``mask`` with the fewest mask pixels
    (the middle column of a mask less than 3 pixels wide)."""
    third = mask.shape[1] // 3
    if third == 0:
        return mask.shape[1] // 2
    return third + int(np.argmin(mask[:, third : 2 * third].sum(axis=0)))


def below_neck(mask: np.ndarray, max_height: float = 0.3) -> np.ndarray:
    """``mask`` without the band across its top that joins both lungs over ``gap_column`` (the neck, or the
    air above the shoulders where the body fills the film's width and ``below_shoulders`` finds no
    shoulders), if that band is at most ``max_height`` of the mask's height; 0 turns the cut off. A taller
    joined part is left alone: lungs joined further down are not a band over the neck."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask
    column = gap_column(mask)
    crossing = mask[rows[0] :, max(column - 1, 0) : column + 2].any(axis=1)
    band = int(np.argmin(crossing))  # rows from the top down to the first that does not cross; 0 if none
    if band == 0 or band > max_height * (rows[-1] - rows[0] + 1):
        return mask
    cut = mask.copy()
    cut[: rows[0] + band] = False
    return cut


def fill_lateral(mask: np.ndarray, depth: int = 4) -> np.ndarray:
    """Each lung's outer side filled towards its convex hull, row by row, by at most ``depth`` pixels: the rib
    cage bounds the lungs from outside in a convex curve, while the darkest clusters stop short of it in
    shallow notches between the ribs' shadows. A deeper gap to the hull is a wedge under a leak above the
    apex, not a notch, and is filled only ``depth`` deep. The inner side (heart, hilum, mediastinum) is left
    as it is."""
    if not mask.any():
        return mask
    column = gap_column(mask)
    filled = mask.copy()
    for side, outer_is_left in ((np.s_[:, :column], True), (np.s_[:, column:], False)):
        lung = mask[side]
        if not lung.any():
            continue
        first, last = _row_ends(lung)
        cols = np.arange(lung.shape[1])
        if outer_is_left:
            outside = (cols < first[:, None]) & (cols >= first[:, None] - depth)
        else:
            outside = (cols > last[:, None]) & (cols <= last[:, None] + depth)
        filled[side] |= convex_hull(lung) & outside & lung.any(axis=1)[:, None]
    return filled


def _row_ends(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last column of ``mask`` in each row, (H,) each (0 and W - 1 in empty rows)."""
    first = mask.argmax(axis=1)
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)
    return first, last
