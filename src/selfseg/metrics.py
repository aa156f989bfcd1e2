"""Segmentation metrics: a predicted mask against a ground-truth mask.

Every function takes ``prediction`` and ``truth`` of the same shape, (H, W) or (D, H, W); values
other than 0 count as foreground. Overlap metrics share one confusion count (TP, FP, FN, TN):

- ``dice`` = 2 TP / (2 TP + FP + FN); ``iou`` (Jaccard) = TP / (TP + FP + FN); ``hm`` = 1 - IoU;
- ``xor`` = |P xor G| / |G| = (FP + FN) / (TP + FN);
- ``sensitivity`` = TP / (TP + FN); ``specificity`` = TN / (TN + FP).

Surface metrics measure, in units of ``spacing`` (pixel size per axis, default 1.0), the distance
from each surface point of one mask to the nearest surface point of the other. A mask's surface is
the mask minus its binary erosion with full connectivity, the outside of the image counting as
background (an object touching the image edge has a surface there).

- ``hausdorff95`` follows MONAI's ``compute_hausdorff_distance(percentile=95)``: the larger of the
  two directed 95th percentiles (prediction to truth, truth to prediction). Some papers instead pool
  the distances of both directions and take a single 95th percentile, usually a little smaller;
  that pooled convention is not the one used here.
- ``average_surface_distance`` (ASSD) is the mean of the pooled distances of both directions.

Empty masks (P: prediction, G: truth):

==============  =========  ==  ===  ==========  ===========
case            dice, iou  hm  xor  hd95, assd  sensitivity
==============  =========  ==  ===  ==========  ===========
P and G empty   1          0   0    0           nan
P empty, G not  0          1   1    inf         0
G empty, P not  0          1   inf  inf         nan
==============  =========  ==  ===  ==========  ===========

``specificity`` is nan when there are no negatives (G covers the whole image), and 1 when both
masks are empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = [
    "METRIC_NAMES",
    "average_surface_distance",
    "dice",
    "evaluate",
    "hausdorff95",
    "hm",
    "iou",
    "sensitivity",
    "specificity",
    "xor",
]

METRIC_NAMES: tuple[str, ...] = (
    "dice", "iou", "hm", "xor", "sensitivity", "specificity", "hd95", "assd"
)


def _binarize(prediction: ArrayLike, truth: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``prediction != 0`` and ``truth != 0``, (H, W) or (D, H, W), of one shape."""
    prediction, truth = np.asarray(prediction) != 0, np.asarray(truth) != 0
    if prediction.shape != truth.shape:
        raise ValueError(
            "prediction and truth must have the same shape, "
            f"got {prediction.shape} and {truth.shape}"
        )
    return prediction, truth


def _confusion(prediction: ArrayLike, truth: ArrayLike) -> tuple[int, int, int, int]:
    """Pixel counts (TP, FP, FN, TN)."""
    prediction, truth = _binarize(prediction, truth)
    tp = int(np.count_nonzero(prediction & truth))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(truth)) - tp
    return tp, fp, fn, truth.size - tp - fp - fn


def _ratio(numerator: int, denominator: int, *, if_zero: float) -> float:
    """``numerator / denominator``, or ``if_zero`` when the denominator is 0."""
    return numerator / denominator if denominator else if_zero


def dice(prediction: ArrayLike, truth: ArrayLike) -> float:
    """Dice coefficient 2 TP / (2 TP + FP + FN); 1 when both masks are empty.

    >>> import numpy as np
    >>> round(dice(np.array([[1, 1, 0, 0]], bool), np.array([[1, 0, 0, 0]], bool)), 3)
    0.667
    >>> dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    1.0
    """
    tp, fp, fn, _ = _confusion(prediction, truth)
    return _ratio(2 * tp, 2 * tp + fp + fn, if_zero=1.0)


def iou(prediction: ArrayLike, truth: ArrayLike) -> float:
    """Intersection over union (Jaccard) TP / (TP + FP + FN); 1 when both masks are empty."""
    tp, fp, fn, _ = _confusion(prediction, truth)
    return _ratio(tp, tp + fp + fn, if_zero=1.0)


def hm(prediction: ArrayLike, truth: ArrayLike) -> float:
    """The "HM" error 1 - IoU; 0 when both masks are empty."""
    return 1.0 - iou(prediction, truth)


def xor(prediction: ArrayLike, truth: ArrayLike) -> float:
    """|P xor G| / |G|; with G empty, 0 if P is empty too, else inf."""
    tp, fp, fn, _ = _confusion(prediction, truth)
    return _ratio(fp + fn, tp + fn, if_zero=np.inf if fp else 0.0)


def sensitivity(prediction: ArrayLike, truth: ArrayLike) -> float:
    """TP / (TP + FN); nan when the truth is empty."""
    tp, _, fn, _ = _confusion(prediction, truth)
    return _ratio(tp, tp + fn, if_zero=np.nan)


def specificity(prediction: ArrayLike, truth: ArrayLike) -> float:
    """TN / (TN + FP); nan when the truth covers the whole image."""
    _, fp, _, tn = _confusion(prediction, truth)
    return _ratio(tn, tn + fp, if_zero=np.nan)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Foreground pixels of ``mask`` with a background neighbour (full connectivity), same shape."""
    structure = np.ones((3,) * mask.ndim, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _surface_metric(
    prediction: ArrayLike,
    truth: ArrayLike,
    spacing: Sequence[float] | None,
    reduce: Callable[[np.ndarray, np.ndarray], float],
) -> float:
    """``reduce`` of the directed surface distances (prediction to truth, truth to prediction).

    0 when both masks are empty, inf when only one is.
    """
    prediction, truth = _binarize(prediction, truth)
    spacing = (1.0,) * prediction.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != prediction.ndim:
        raise ValueError(
            f"spacing must have one value per axis of the {prediction.ndim}-D masks, got {spacing}"
        )
    if not prediction.any() or not truth.any():
        return 0.0 if prediction.any() == truth.any() else np.inf
    surface_prediction, surface_truth = _surface(prediction), _surface(truth)
    to_truth = ndimage.distance_transform_edt(~surface_truth, sampling=spacing)
    to_prediction = ndimage.distance_transform_edt(~surface_prediction, sampling=spacing)
    return float(reduce(to_truth[surface_prediction], to_prediction[surface_truth]))


def hausdorff95(
    prediction: ArrayLike, truth: ArrayLike, *, spacing: Sequence[float] | None = None
) -> float:
    """95 % Hausdorff distance: the larger of the two directed 95th percentiles (as MONAI)."""
    return _surface_metric(
        prediction, truth, spacing, lambda a, b: max(np.percentile(a, 95), np.percentile(b, 95))
    )


def average_surface_distance(
    prediction: ArrayLike, truth: ArrayLike, *, spacing: Sequence[float] | None = None
) -> float:
    """Average symmetric surface distance (ASSD): mean surface distance over both directions."""
    return _surface_metric(prediction, truth, spacing, lambda a, b: np.concatenate([a, b]).mean())


def evaluate(
    prediction: ArrayLike, truth: ArrayLike, *, spacing: Sequence[float] | None = None
) -> dict[str, float]:
    """Every metric, keyed by ``METRIC_NAMES`` in that order."""
    return {
        "dice": dice(prediction, truth),
        "iou": iou(prediction, truth),
        "hm": hm(prediction, truth),
        "xor": xor(prediction, truth),
        "sensitivity": sensitivity(prediction, truth),
        "specificity": specificity(prediction, truth),
        "hd95": hausdorff95(prediction, truth, spacing=spacing),
        "assd": average_surface_distance(prediction, truth, spacing=spacing),
    }
