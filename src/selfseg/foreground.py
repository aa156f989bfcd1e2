"""Foreground selection: which clusters make the mask the user wants.

Without ground truth (``select_foreground``), under a target prior:

- ``"lesion"`` (``lesion_mask``): one compact blob, usually darker than its surroundings, near the
  centre and rarely touching the image frame. Candidates are the connected regions of each cluster and
  of each union of the k darkest clusters, opened to cut hairs, rulers and ink lines; each is scored by
  ``contrast * sqrt(area) * (1 - frame contact)**2 * centrality * solidity`` and the best one, holes
  filled, is replaced by its convex hull (annotators outline the whole lesion).
- ``"lungs"`` (``lungs_mask``): two large dark regions inside the body, left and right (CT and chest
  X-ray). The body is what the darkest cluster's frame-connected regions leave (opened at growing
  scales until a left/right pair appears, to cut narrow bridges to the outside); lung candidates are
  the dark-cluster unions inside the body eroded by a margin (this cuts the body's dark rim), scored by
  contrast and area with a bonus for a left/right pair, or for one region with a large part on each side
  (lungs joined at the front), the darker of two near-equal candidates kept, then grown back by the
  margin inside their clusters, closed and hole-filled one connected region at a time (so that the
  closing does not bridge a thin mediastinum and fill it in).
- ``"auto"`` (``resolve_target``): lungs on grey images when the lung rule finds them, else lesion.

``point=(x, y)`` takes the region of the cluster under that pixel instead (interactive use), and
``oracle_mask`` is the papers' protocol with the ground truth, for reproducing their figures only.
``choose_mask`` is the single entry point the engine and the batch runner use; ``most_agreed`` picks, among
the masks chosen from several cluster maps of one image, the one the others agree with most.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image, disk
from skimage.transform import resize

from selfseg.checks import check_shape, look_up_option
from selfseg.metrics import dice

__all__ = [
    "FOREGROUNDS",
    "TARGETS",
    "check_rule",
    "choose_mask",
    "is_grey",
    "lesion_mask",
    "lungs_mask",
    "most_agreed",
    "oracle_mask",
    "point_mask",
    "resolve_target",
    "select_foreground",
]

TARGETS = ("auto", "lesion", "lungs")
"""Target priors of ``select_foreground``."""

FOREGROUNDS = ("auto", "oracle")
"""How ``choose_mask`` chooses: without ground truth, or the papers' protocol with it."""

_EIGHT = np.ones((3, 3), dtype=bool)


def _frame(shape: tuple[int, int], width: float = 0.02) -> np.ndarray:
    """Boolean (H, W) map of the band along the image frame, ``width`` of the shorter side wide (>= 1 px).

    A band rather than the outermost ring, so that a thin border artefact (networks often give the
    outermost pixels a cluster of their own) does not hide that a region reaches the frame.
    """
    w = _radius(width, shape)
    frame = np.ones(shape, dtype=bool)
    frame[w:-w, w:-w] = False
    return frame


def _radius(fraction: float, shape: tuple[int, ...]) -> int:
    """A structuring-element radius: ``fraction`` of the shorter side, at least 1 pixel."""
    return max(1, round(fraction * min(shape[:2])))


def _closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with a disk, padded so that regions at the frame are not eaten."""
    padded = ndimage.binary_closing(np.pad(mask, radius), disk(radius))
    return padded[radius:-radius, radius:-radius]


def _convex_hull(mask: np.ndarray) -> np.ndarray:
    """``convex_hull_image`` of a non-empty (H, W) mask, computed on its bounding box: the same pixels,
    without testing every pixel of the image against the hull."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    hull = np.zeros(mask.shape, dtype=bool)
    hull[box] = convex_hull_image(mask[box])
    return hull


def _regions(mask: np.ndarray, min_pixels: float) -> list[np.ndarray]:
    """Connected regions (8-connectivity) of ``mask`` with at least ``min_pixels`` pixels, holes filled."""
    components, count = ndimage.label(mask, structure=_EIGHT)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = np.flatnonzero(sizes >= max(1.0, min_pixels))
    return [ndimage.binary_fill_holes(components == index) for index in keep if index != 0]


def _clusters_by_grey(labels: np.ndarray, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cluster ids of ``labels`` sorted from darkest to brightest mean ``grey``, and those means."""
    ids = np.unique(labels)
    means = ndimage.mean(grey, labels, ids)
    order = np.argsort(means)
    return ids[order], means[order]


def _contrast(region: np.ndarray, grey: np.ndarray, width: int, within: np.ndarray | None = None) -> float:
    """Mean grey of the band of ``width`` pixels around ``region`` (inside ``within``) minus the region's."""
    # ``width`` dilations by the 3x3 square are one (2 width + 1)-square maximum filter, run separably
    band = ndimage.maximum_filter(region, size=2 * width + 1, mode="constant") & ~region
    if within is not None:
        band &= within
    return float(grey[band].mean() - grey[region].mean()) if band.any() else 0.0


def lesion_mask(
    labels: np.ndarray, grey: np.ndarray, *, opening: float = 0.012, min_area: float = 0.005, max_area: float = 0.95
) -> np.ndarray:
    """The most lesion-like region of the cluster map (see the module docstring). (H, W) bool.

    Args:
        labels: (H, W) int cluster map.
        grey: (H, W) float image in [0, 1].
        opening: radius of the opening that removes thin structures, as a fraction of the shorter side.
        min_area, max_area: candidate regions outside these fractions of the image are ignored.

    Returns the region with holes filled (not yet hull-smoothed); empty if no candidate qualifies.
    """
    frame = _frame(labels.shape)
    band = max(1, round(0.03 * float(np.hypot(*labels.shape))))
    element = disk(_radius(opening, labels.shape))
    height, width = labels.shape
    order, _ = _clusters_by_grey(labels, grey)
    candidates = [np.isin(labels, order[:k]) for k in range(1, len(order))]
    candidates += [labels == label for label in order[1:-1]]
    best, best_score, source = np.zeros(labels.shape, dtype=bool), -np.inf, None
    for candidate in candidates:
        for region in _regions(ndimage.binary_opening(candidate, element), min_area * labels.size):
            area = float(region.mean())
            if area > max_area:
                continue
            rows, cols = np.nonzero(region)
            offset = np.hypot(rows.mean() / height - 0.5, cols.mean() / width - 0.5)
            centrality = 1 - offset / np.hypot(0.5, 0.5)
            touch = float((region & frame).sum()) / float(frame.sum())
            solidity = float(region.sum()) / float(_convex_hull(region).sum())
            score = (
                max(_contrast(region, grey, band), 0.005) * np.sqrt(area) * (1 - touch) ** 2 * centrality
                * solidity
            )
            if score > best_score:
                best, best_score, source = region, score, candidate
    if source is None:
        return best
    # give back what the opening shaved off the chosen region (corners, a rough rim), not what it cut away
    return ndimage.binary_fill_holes(best | (source & ndimage.binary_dilation(best, element)))


def lungs_mask(
    labels: np.ndarray,
    grey: np.ndarray,
    *,
    margin: float = 0.05,
    opening: float = 0.012,
    min_area: float = 0.01,
    pair: float = 0.2,
    closing: float = 0.04,
    dark_tolerance: float = 0.05,
    outside_scales: tuple[float, ...] = (1, 4, 8),
    prefer_darker: float = 0.05,
) -> np.ndarray:
    """Both lungs from the cluster map (see the module docstring). (H, W) bool, empty if none found
    (also when the darkest cluster does not reach the frame: no dark surround, no body).

    Args:
        labels: (H, W) int cluster map.
        grey: (H, W) float image in [0, 1].
        margin: body erosion (and regrowth) distance, as a fraction of the shorter side.
        opening, closing: radii of the clean-up disks, as fractions of the shorter side.
        min_area: lung candidates smaller than this fraction of the image are ignored.
        pair: the second region counts as the other lung if it has at least this fraction of the
            first one's area and lies on the other side of the vertical midline; the largest region alone
            counts as both lungs (joined in front of the heart on CT, or across the mediastinum) if its
            part on either side of the midline has at least this fraction of the other part.
        dark_tolerance: clusters whose mean grey is within this of the darkest one's count as darkest
            when finding the outside (a network may split flat black air into two striped clusters).
        outside_scales: the outside is the darkest clusters' frame-connected part after an opening of
            ``opening`` times each of these, in turn, until a left/right pair is found: a larger one
            cuts the narrow bridges (the neck on an X-ray, a dark fat layer on CT) through which lungs
            sharing the outside air's cluster would count as outside.
        prefer_darker: a candidate of more (brighter) clusters must score this fraction higher than the
            darker one before it: the lungs are the darkest structure in the body, and a near tie means a
            fat or partial-volume cluster joining them (CT).
    """
    height, width = labels.shape
    frame = _frame(labels.shape)
    order, means = _clusters_by_grey(labels, grey)
    element = disk(_radius(opening, labels.shape))
    darkest = np.isin(labels, order[means <= means[0] + dark_tolerance])
    band = max(1, round(0.03 * float(np.hypot(height, width))))
    grow = _radius(margin, labels.shape)
    best, best_score, best_k, best_body, best_pair = None, -np.inf, 0, None, False
    for scale in outside_scales:
        opened = ndimage.binary_opening(darkest, disk(_radius(opening * scale, labels.shape)))
        components, _ = ndimage.label(opened, structure=_EIGHT)
        outside = np.isin(components, np.unique(components[frame & (components > 0)]))
        if not outside.any():  # no dark surround: no body to look inside
            break
        body = ~outside
        inner = ndimage.binary_erosion(body, disk(grow))
        for k in range(1, len(order)):
            candidate = ndimage.binary_opening(np.isin(labels, order[:k]) & inner, element)
            regions = [r for r in _regions(candidate, min_area * labels.size) if not (r & frame).any()]
            if not regions:
                continue
            regions.sort(key=lambda r: -int(r.sum()))
            halves = np.array([regions[0][:, : width // 2].sum(), regions[0][:, width // 2 :].sum()])
            lungs, paired = regions[0], bool(halves.min() >= pair * halves.max())  # both lungs joined
            if len(regions) > 1 and regions[1].sum() >= pair * regions[0].sum():
                sides = [np.nonzero(r)[1].mean() / width - 0.5 for r in regions[:2]]
                if sides[0] * sides[1] < 0:
                    lungs, paired = regions[0] | regions[1], True
            score = max(_contrast(lungs, grey, band, within=body), 0.005) * np.sqrt(lungs.mean())
            score *= 1.0 if paired else 0.5
            if score > best_score * (1 + prefer_darker):
                best, best_score, best_k, best_body, best_pair = lungs, score, k, body, paired
        if best_pair:
            break
    if best is None:
        return np.zeros(labels.shape, dtype=bool)
    near = ndimage.distance_transform_edt(~best) <= grow
    grown = best | (np.isin(labels, order[:best_k]) & best_body & near)
    components, _ = ndimage.label(grown, structure=_EIGHT)
    radius = _radius(closing, labels.shape)
    mask = np.zeros(labels.shape, dtype=bool)
    for index in np.unique(components[best]):  # best lies inside grown: no background label here
        mask |= ndimage.binary_fill_holes(_closing(components == index, radius))
    return mask


def point_mask(labels: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """The connected region (8-connectivity, holes filled) of the cluster under pixel ``point`` = (x, y)."""
    x, y = point
    components, _ = ndimage.label(labels == labels[y, x], structure=_EIGHT)
    return ndimage.binary_fill_holes(components == components[y, x])


def is_grey(image: np.ndarray) -> bool:
    """True for a grey image: (H, W), (H, W, 1), or (H, W, C) in [0, 1] whose channels agree within 1/255 at
    every pixel (CT and X-rays, often stored as RGB)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    return float(np.ptp(image, axis=2).max()) <= 1 / 255


def resolve_target(image: np.ndarray) -> str:
    """The target prior ``"auto"`` tries first: ``"lungs"`` for grey images (``is_grey``: CT, X-ray), else
    ``"lesion"``."""
    return "lungs" if is_grey(image) else "lesion"


def _nearest_resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes of ``array`` to ``shape`` (pixel centres aligned)."""
    rows = ((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0]).astype(np.intp)
    cols = ((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1]).astype(np.intp)
    return array[rows[:, None], cols[None, :]]


def select_foreground(
    labels: np.ndarray, image: np.ndarray, *, target: str = "auto", work_size: int = 256
) -> tuple[np.ndarray, str]:
    """Choose the target mask from a cluster map and its image, without ground truth.

    Args:
        labels: (H, W) int cluster map.
        image: (H, W) or (H, W, C) float image in [0, 1], same height and width.
        target: "lesion", "lungs" or "auto" (``resolve_target``; falls back to lesion when the lung
            rule finds no lungs).
        work_size: the rules run on copies whose longer side is at most this (cost stays bounded).

    Returns:
        (H, W) bool mask and the prior that made it ("lesion" or "lungs").

    A dark disc (cluster 2) on bright skin (cluster 1):

    >>> import numpy as np
    >>> yy, xx = np.mgrid[:64, :64]
    >>> disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 12**2
    >>> mask, chosen = select_foreground(np.where(disc, 2, 1), np.where(disc, 0.2, 0.8), target="lesion")
    >>> chosen, bool(mask[32, 32]), bool(mask[0, 0])
    ('lesion', True, False)
    """
    look_up_option(target, TARGETS, name="target")
    check_shape("image", image, labels.shape, (*labels.shape, "C"))
    grey = image if image.ndim == 2 else image.mean(axis=2)
    scale = min(1.0, work_size / max(labels.shape))
    small = (max(2, round(labels.shape[0] * scale)), max(2, round(labels.shape[1] * scale)))
    if small != labels.shape:
        labels_small = _nearest_resize(labels, small)
        grey = resize(grey, small, order=1, anti_aliasing=True)
    else:
        labels_small = labels
    chosen = resolve_target(image) if target == "auto" else target
    mask = lungs_mask(labels_small, grey) if chosen == "lungs" else np.zeros(small, dtype=bool)
    if chosen == "lungs" and target == "auto" and not mask.any():
        chosen = "lesion"
    if chosen == "lesion":
        mask = lesion_mask(labels_small, grey)
    if small != labels.shape:
        mask = _nearest_resize(mask, labels.shape)
    if chosen == "lesion" and mask.any():
        mask = _convex_hull(mask)
    return mask, chosen


def oracle_mask(labels: np.ndarray, truth: np.ndarray, *, crop: bool = False) -> np.ndarray:
    """The papers' protocol, which needs the ground truth: NOT a segmentation method. (H, W) bool.

    Returns the cluster with the largest overlap with ``truth`` ((H, W) bool). With ``crop``, it is
    also multiplied by ``truth`` dilated twice with a 5x5 square (the released S3-Net code's
    ``create_mask``; its MS-Former code uses 7x7). An empty ``truth`` gives an empty mask.
    """
    check_shape("truth", truth, labels.shape)
    truth = truth.astype(bool)
    if not truth.any():
        return np.zeros(labels.shape, dtype=bool)
    mask = labels == np.bincount(labels[truth]).argmax()
    if crop:
        mask &= ndimage.binary_dilation(truth, structure=np.ones((5, 5), dtype=bool), iterations=2)
    return mask


def most_agreed(masks: list[np.ndarray]) -> int:
    """Index of the mask with the highest mean Dice with the others (ties: the first); 0 for a single mask.

    The medoid of masks chosen from several cluster maps of one image: a choice that only one map makes
    (a lesion cluster merged with the skin, a cluster cut in two) is outvoted by those the maps agree on.
    """
    if not masks:
        raise ValueError("most_agreed needs at least one mask")
    agreement = [sum(dice(mask, other) for other in masks) for mask in masks]
    return int(np.argmax(agreement))


def check_rule(
    *,
    foreground: str = "auto",
    target: str = "auto",
    point: tuple[int, int] | None = None,
    truth: np.ndarray | bool | None = None,
    oracle_crop: bool = False,
    shape: tuple[int, ...] | None = None,
) -> None:
    """Raise ValueError unless ``choose_mask`` can apply these arguments (to an image of ``shape``, (H, W, ...)).

    ``truth`` may be True to say that a ground truth will be given; the point and the truth are checked
    against ``shape`` when it is given.
    """
    truth = None if truth is False else truth
    look_up_option(foreground, FOREGROUNDS, name="foreground")
    look_up_option(target, TARGETS, name="target")
    if (foreground == "oracle") != (truth is not None):
        raise ValueError("foreground='oracle' needs truth, and truth is only used by foreground='oracle'")
    if oracle_crop and foreground != "oracle":
        raise ValueError("oracle_crop needs foreground='oracle'")
    if point is not None and foreground != "auto":
        raise ValueError("point picks the mask itself; it cannot be combined with foreground='oracle'")
    if shape is None:
        return
    if point is not None and not (0 <= point[0] < shape[1] and 0 <= point[1] < shape[0]):
        raise ValueError(f"point {tuple(point)} is outside the {shape[1]}x{shape[0]} image (x < {shape[1]}, y < {shape[0]})")
    if truth is not None and truth is not True:
        check_shape("truth", np.asarray(truth), shape[:2])


def choose_mask(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    foreground: str = "auto",
    target: str = "auto",
    point: tuple[int, int] | None = None,
    truth: np.ndarray | None = None,
    oracle_crop: bool = False,
) -> tuple[np.ndarray, str]:
    """The mask under one selection rule, and the name of what chose it. The engine's and runner's entry point.

    ``foreground="auto"``: ``point_mask`` when ``point`` is given (named "point"), else
    ``select_foreground`` with ``target`` (named by the prior used, "lesion" or "lungs").
    ``foreground="oracle"``: ``oracle_mask`` with ``truth`` (named "oracle" or "oracle+crop").

    Raises:
        ValueError: see ``check_rule``.
    """
    check_rule(
        foreground=foreground, target=target, point=point, truth=truth, oracle_crop=oracle_crop, shape=labels.shape
    )
    if foreground == "oracle":
        return oracle_mask(labels, np.asarray(truth), crop=oracle_crop), "oracle+crop" if oracle_crop else "oracle"
    if point is not None:
        return point_mask(labels, point), "point"
    return select_foreground(labels, image, target=target)
