"""Foreground selection: which clusters make the mask the user wants.

Without ground truth (``select_foreground``), under a target prior:

- ``"lesion"`` (``lesion_mask``): one compact blob, usually darker than its surroundings, near the
  centre and rarely touching the image frame. Candidates are the connected regions of each cluster and
  of each union of the k darkest clusters, opened to cut hairs, rulers and ink lines; each is scored by
  ``contrast**1.1 * sqrt(area) * (1 - frame contact)**2 * centrality * solidity`` and the best one, holes
  filled, is replaced by its convex hull (annotators outline the whole lesion).
- ``"lungs"`` (``lungs_mask``): two large dark regions inside the body, left and right (CT and chest
  X-ray). The body is what the darkest cluster's frame-connected regions leave (opened at growing
  scales until a left/right pair appears, to cut narrow bridges to the outside); lung candidates are
  the dark-cluster unions inside the body eroded by a margin (this cuts the body's dark rim), scored by
  contrast and area with a bonus for a left/right pair, or for one region with a large part on each side
  (lungs joined at the front), the darker of two near-equal candidates kept, then grown back by the
  margin inside their clusters, closed and hole-filled one connected region at a time (so that the
  closing does not bridge a thin mediastinum and fill it in). On a radiograph (``radiograph.is_radiograph``)
  the mask is cut above the shoulders and below a band over the neck (``radiograph``); then its
  boundary is moved outward to the image's edges (``lungs.snap_to_edges``, a geodesic active contour), and
  on a radiograph each lung's outer side is filled a few pixels towards its convex hull
  (``radiograph.fill_lateral``).
- ``"polyp"`` (``polyp.polyp_mask``): one compact region of the endoscope's field, brighter, redder or
  yellower than the mucosa around it and near the centre (colonoscopy; see ``selfseg.foreground.polyp``).
- ``"auto"`` (``resolve_target``): polyp on endoscope frames (black corners around a red-orange field),
  lungs on grey images when the lung rule finds them, else lesion.

``point=(x, y)`` takes the region of the cluster under that pixel instead (interactive use), and
``oracle_mask`` is the papers' protocol with the ground truth, for reproducing their figures only.
``choose_mask`` is the single entry point the engine and the batch runner use; ``most_agreed`` picks, among
the masks chosen from several cluster maps of one image, the one the others agree with most; ``implausible``
says when a chosen mask is one that the engine should try again with one more cluster (lungs lying low on a
radiograph).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from selfseg.checks import check_shape, look_up_option
from selfseg.foreground.lesion import lesion_mask
from selfseg.foreground.lungs import lies_low, lungs_mask
from selfseg.foreground.morphology import fill_holes
from selfseg.foreground.polyp import looks_endoscopic, polyp_mask
from selfseg.foreground.regions import EIGHT, centrality, convex_hull, frame_band, nearest_resize, regions_of
from selfseg.metrics import dice

__all__ = [
    "FOREGROUNDS",
    "TARGETS",
    "check_rule",
    "choose_mask",
    "implausible",
    "is_grey",
    "keep_prior",
    "lesion_mask",
    "lungs_mask",
    "most_agreed",
    "oracle_mask",
    "point_mask",
    "points_mask",
    "polyp_mask",
    "resolve_target",
    "rule_mask",
    "select_foreground",
    "toggle_region",
    "working_copies",
]

TARGETS = ("auto", "lesion", "lungs", "polyp")
"""Target priors of ``select_foreground`` (one module of this package each, except "auto")."""

FOREGROUNDS = ("auto", "oracle")
"""How ``choose_mask`` chooses: without ground truth, or the papers' protocol with it."""

def point_mask(labels: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """The connected region (8-connectivity, holes filled) of the cluster under pixel ``point`` = (x, y)."""
    x, y = point
    components, _ = ndimage.label(labels == labels[y, x], structure=EIGHT)
    return fill_holes(components == components[y, x])


def points_mask(labels: np.ndarray, points: Sequence[tuple[int, int]]) -> np.ndarray:
    """The union of ``point_mask`` over ``points`` ((x, y) each): several clicks take several regions. (H, W) bool,
    empty without points.

    >>> labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 3]])
    >>> points_mask(labels, [(0, 0), (3, 0)]).astype(int)
    array([[1, 1, 1, 1],
           [1, 1, 1, 1],
           [0, 0, 0, 0]])
    """
    mask = np.zeros(labels.shape, dtype=bool)
    for point in points:
        mask |= point_mask(labels, point)
    return mask


def toggle_region(mask: np.ndarray, labels: np.ndarray, point: tuple[int, int]) -> np.ndarray:
    """``mask`` with the region under ``point`` = (x, y) added if the pixel is not in the mask (``point_mask``: holes
    filled, as a point prompt takes it), or taken out if it is (the connected region of the cluster only, so a rim
    taken out leaves what it encloses): a click on a cluster adds it to the mask or takes it out. A new (H, W) bool
    array.

    >>> labels = np.array([[1, 1, 1, 2], [1, 3, 1, 2], [1, 1, 1, 2]])  # a rim of 1 around a core of 3
    >>> toggle_region(labels == 3, labels, (0, 0)).astype(int)  # the rim added, with what it encloses
    array([[1, 1, 1, 0],
           [1, 1, 1, 0],
           [1, 1, 1, 0]])
    >>> toggle_region(labels != 2, labels, (0, 0)).astype(int)  # the rim taken out, the core kept
    array([[0, 0, 0, 0],
           [0, 1, 0, 0],
           [0, 0, 0, 0]])
    """
    x, y = point
    if not mask[y, x]:
        return mask | point_mask(labels, point)
    components, _ = ndimage.label(labels == labels[y, x], structure=EIGHT)
    return mask & (components != components[y, x])


def is_grey(image: np.ndarray) -> bool:
    """True for a grey image: (H, W), (H, W, 1), or (H, W, C) in [0, 1] whose channels agree within 1/255 at
    every pixel (CT and X-rays, often stored as RGB)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return True
    if np.ptp(image[::8, ::8], axis=2).max() > 1 / 255:  # a colour image is told apart on a few of its pixels
        return False
    return float(np.ptp(image, axis=2).max()) <= 1 / 255


def resolve_target(image: np.ndarray) -> str:
    """The target prior ``"auto"`` tries first: ``"polyp"`` for endoscope frames (``polyp.looks_endoscopic``),
    ``"lungs"`` for grey images (``is_grey``: CT, X-ray), else ``"lesion"``."""
    if looks_endoscopic(image):
        return "polyp"
    return "lungs" if is_grey(image) else "lesion"


def _grey(image: np.ndarray) -> np.ndarray:
    """(H, W) mean of the channels of an (H, W) or (H, W, C) image."""
    return image if image.ndim == 2 else image.mean(axis=2)


def working_copies(labels: np.ndarray, image: np.ndarray, work_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """``labels`` (nearest) and ``image`` (bilinear, antialiased) resized so that the longer side is at most
    ``work_size``: what the target priors run on. Unchanged when already small enough."""
    scale = min(1.0, work_size / max(labels.shape))
    small = (max(2, round(labels.shape[0] * scale)), max(2, round(labels.shape[1] * scale)))
    if small == labels.shape:
        return labels, image
    return nearest_resize(labels, small), resize(image, small, order=1, anti_aliasing=True)


def select_foreground(
    labels: np.ndarray, image: np.ndarray, *, target: str = "auto", work_size: int = 256, resolved: str | None = None
) -> tuple[np.ndarray, str]:
    """Choose the target mask from a cluster map and its image, without ground truth.

    Args:
        labels: (H, W) int cluster map.
        image: (H, W) or (H, W, C) float image in [0, 1], same height and width.
        target: one of ``TARGETS``: "lesion", "lungs", "polyp" or "auto" (``resolve_target``; falls back
            to lesion when the lung rule finds no lungs).
        work_size: the rules run on copies whose longer side is at most this (cost stays bounded).
        resolved: for ``target="auto"``, what ``resolve_target(image)`` gives, when the caller already knows it
            (several cluster maps of one image).

    Returns:
        (H, W) bool mask and the prior that made it ("lesion", "lungs" or "polyp").

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
    chosen = (resolved or resolve_target(image)) if target == "auto" else target
    colour = chosen == "polyp"  # the other priors look at the grey levels only
    labels_small, pixels = working_copies(labels, np.atleast_3d(image) if colour else _grey(image), work_size)
    if colour:
        mask = polyp_mask(labels_small, pixels)
    else:
        mask = lungs_mask(labels_small, pixels) if chosen == "lungs" else np.zeros(labels_small.shape, dtype=bool)
        if chosen == "lungs" and target == "auto" and not mask.any():
            chosen = "lesion"
        if chosen == "lesion":
            mask = lesion_mask(labels_small, pixels)
    if labels_small.shape != labels.shape:
        mask = nearest_resize(mask, labels.shape)
    if chosen in ("lesion", "polyp") and mask.any():
        mask = convex_hull(mask)  # annotators outline the whole lesion or polyp
    return mask, chosen


def keep_prior(probability: np.ndarray, prior: str) -> np.ndarray:
    """The (H, W) bool mask of a foreground ``probability`` map kept within a target ``prior``: for a lesion or a
    polyp, the region of ``probability > 0.5`` with the most probability mass, weighted by its centrality squared
    and down-weighted by its share on the image frame (a vignette or the endoscope's border is not the target), as
    its convex hull; for lungs, the two largest regions; any other prior: the thresholded map. For masks that come
    from a model rather than from clusters (``study.predict_mask``).

    >>> probability = np.zeros((9, 9)); probability[3:6, 3:6] = 0.9; probability[0, 0] = 1.0
    >>> int(keep_prior(probability, "lesion").sum())
    9
    """
    mask = probability > 0.5
    regions = regions_of(mask, 1)
    if prior not in ("lesion", "polyp", "lungs") or not regions:
        return mask
    if prior == "lungs":
        return np.logical_or.reduce(sorted(regions, key=lambda region: -int(region.sum()))[:2])
    frame = frame_band(mask.shape)

    def score(region: np.ndarray) -> float:
        on_frame = (region & frame).sum() / region.sum()
        return float(probability[region].sum()) * centrality(region) ** 2 * (1 - min(0.9, 5 * on_frame))

    return convex_hull(max(regions, key=score))


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


def implausible(mask: np.ndarray, chosen: str, labels: np.ndarray, image: np.ndarray) -> bool:
    """True for a mask that its prior ``chosen`` (what ``choose_mask`` named for the cluster map ``labels`` of
    ``image``) does not fit, and that one more cluster may mend: lungs on a radiograph whose centroid lies in
    the image's lowest 30 % (``lungs.lies_low``), picked where three clusters joined the lungs to the body of
    a chest X-ray. On CT (the lung rule's ``radiograph.is_radiograph`` fails) basal slices hold lungs that
    low, and the mask stands. ``labels`` and ``image`` are those ``choose_mask`` was given."""
    if chosen != "lungs" or not lies_low(mask):
        return False
    labels_small, grey = working_copies(labels, _grey(image))
    return lungs_mask(labels_small, grey, return_radiograph=True)[1]


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
    return rule_mask(labels, image, foreground=foreground, target=target, point=point, truth=truth, oracle_crop=oracle_crop)


def rule_mask(
    labels: np.ndarray,
    image: np.ndarray,
    *,
    foreground: str,
    target: str,
    point: tuple[int, int] | None,
    truth: np.ndarray | None,
    oracle_crop: bool,
    resolved: str | None = None,
) -> tuple[np.ndarray, str]:
    """``choose_mask`` for arguments already checked (``check_rule``): the mask and what chose it. ``resolved``:
    as ``select_foreground``'s."""
    if foreground == "oracle":
        return oracle_mask(labels, np.asarray(truth), crop=oracle_crop), "oracle+crop" if oracle_crop else "oracle"
    if point is not None:
        return point_mask(labels, point), "point"
    return select_foreground(labels, image, target=target, resolved=resolved)
