"""Segmentation metrics: hand-computed values, a brute-force surface reference, edge cases."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from selfseg.metrics import (
    METRIC_NAMES,
    average_surface_distance,
    dice,
    evaluate,
    hausdorff95,
    hm,
    iou,
    sensitivity,
    specificity,
    xor,
)

OVERLAP = (dice, iou, hm, xor, sensitivity, specificity)
SURFACE = (hausdorff95, average_surface_distance)


def _squares() -> tuple[np.ndarray, np.ndarray]:
    """Two 4x4 squares in an 8x8 image, the truth one row below the prediction."""
    prediction = np.zeros((8, 8), dtype=bool)
    truth = np.zeros((8, 8), dtype=bool)
    prediction[1:5, 1:5] = True
    truth[2:6, 1:5] = True
    return prediction, truth


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def _blob(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Irregular, possibly multi-part mask: smoothed noise above its median."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), 2.0)
    return noise > np.median(noise)


def _surface_points(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """(N, ndim) scaled coordinates of foreground pixels with a background or outside neighbour."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = np.ones_like(mask)
    for offset in itertools.product((0, 1, 2), repeat=mask.ndim):
        interior &= padded[tuple(slice(o, o + n) for o, n in zip(offset, mask.shape))]
    return np.argwhere(mask & ~interior) * np.asarray(spacing)


def _reference(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]
) -> tuple[float, float]:
    """(hd95, assd) by brute force: all pairwise distances between the two surfaces."""
    distances = cdist(_surface_points(prediction, spacing), _surface_points(truth, spacing))
    to_truth, to_prediction = distances.min(axis=1), distances.min(axis=0)
    hd95 = max(np.percentile(to_truth, 95), np.percentile(to_prediction, 95))
    return hd95, np.concatenate([to_truth, to_prediction]).mean()


def test_overlap_metrics_on_offset_squares() -> None:
    prediction, truth = _squares()
    # TP = 3 rows x 4 = 12, FP = 4 (row 1), FN = 4 (row 5), TN = 64 - 20 = 44.
    assert dice(prediction, truth) == 0.75  # 2*12 / (2*12 + 4 + 4) = 24/32
    assert iou(prediction, truth) == 0.6  # 12 / 20
    assert hm(prediction, truth) == 0.4  # 1 - 0.6
    assert xor(prediction, truth) == 0.5  # (4 + 4) / 16
    assert sensitivity(prediction, truth) == 0.75  # 12 / 16
    assert specificity(prediction, truth) == 11 / 12  # 44 / 48


def test_surface_metrics_on_offset_squares() -> None:
    prediction, truth = _squares()
    # Each surface is a 12-pixel ring. Of the prediction's ring, its top row (4 pixels) and the two
    # middle pixels of its bottom row (inside the truth) are 1 from the truth's ring; the other 6
    # lie on it. The other direction is the mirror image: 6 ones and 6 zeros each way.
    assert hausdorff95(prediction, truth) == 1.0
    assert average_surface_distance(prediction, truth) == 0.5


@pytest.mark.parametrize(
    ("shape", "seeds", "spacing"),
    [
        ((40, 48), (1, 2), (0.5, 2.0)),
        ((40, 48), (3, 4), (2.0, 0.5)),
        ((40, 48), (5, 6), (1.0, 1.0)),
        ((33, 21), (7, 8), (0.3, 1.7)),
        ((12, 16, 20), (9, 10), (2.5, 0.5, 1.0)),
    ],
)
def test_surface_metrics_match_brute_force(
    shape: tuple[int, ...], seeds: tuple[int, int], spacing: tuple[float, ...]
) -> None:
    prediction, truth = _blob(shape, seeds[0]), _blob(shape, seeds[1])
    hd95, assd = _reference(prediction, truth, spacing)
    assert hausdorff95(prediction, truth, spacing=spacing) == pytest.approx(hd95, abs=1e-9)
    assert average_surface_distance(prediction, truth, spacing=spacing) == pytest.approx(
        assd, abs=1e-9
    )


def test_shifted_disc() -> None:
    disc = _disc((48, 48), (24, 22), 10)
    shifted = np.roll(disc, 3, axis=1)
    assert abs(hausdorff95(disc, shifted) - 3) < 0.5
    assert 0 < average_surface_distance(disc, shifted) < 3


def test_identical_masks() -> None:
    disc = _disc((48, 48), (24, 22), 10)
    assert hausdorff95(disc, disc) == 0.0
    assert average_surface_distance(disc, disc) == 0.0
    assert dice(disc, disc) == 1.0


def test_doubling_spacing_doubles_surface_distances() -> None:
    prediction, truth = _blob((40, 48), 11), _blob((40, 48), 12)
    for metric in SURFACE:
        assert metric(prediction, truth, spacing=(2.0, 2.0)) == 2 * metric(prediction, truth)


def test_non_binary_input_is_foreground_where_nonzero() -> None:
    prediction, truth = _squares()
    assert evaluate(prediction * 255, truth * -0.5) == evaluate(prediction, truth)


def test_both_empty() -> None:
    empty = np.zeros((6, 7), dtype=bool)
    assert dice(empty, empty) == 1.0
    assert iou(empty, empty) == 1.0
    assert hm(empty, empty) == 0.0
    assert xor(empty, empty) == 0.0
    assert hausdorff95(empty, empty) == 0.0
    assert average_surface_distance(empty, empty) == 0.0
    assert math.isnan(sensitivity(empty, empty))
    assert specificity(empty, empty) == 1.0


def test_prediction_empty() -> None:
    empty, (_, truth) = np.zeros((8, 8), dtype=bool), _squares()
    assert dice(empty, truth) == 0.0
    assert iou(empty, truth) == 0.0
    assert hm(empty, truth) == 1.0
    assert xor(empty, truth) == 1.0
    assert hausdorff95(empty, truth) == math.inf
    assert average_surface_distance(empty, truth) == math.inf
    assert sensitivity(empty, truth) == 0.0
    assert specificity(empty, truth) == 1.0


def test_truth_empty() -> None:
    (prediction, _), empty = _squares(), np.zeros((8, 8), dtype=bool)
    assert dice(prediction, empty) == 0.0
    assert iou(prediction, empty) == 0.0
    assert hm(prediction, empty) == 1.0
    assert xor(prediction, empty) == math.inf
    assert hausdorff95(prediction, empty) == math.inf
    assert average_surface_distance(prediction, empty) == math.inf
    assert math.isnan(sensitivity(prediction, empty))
    assert specificity(prediction, empty) == 48 / 64  # TN = 64 - 16, FP = 16


def test_specificity_is_nan_without_negatives() -> None:
    prediction, _ = _squares()
    assert math.isnan(specificity(prediction, np.ones((8, 8), dtype=bool)))


@pytest.mark.parametrize("metric", [*OVERLAP, *SURFACE, evaluate])
def test_shape_mismatch_raises(metric) -> None:
    message = "prediction and truth must have the same shape, got (8, 8) and (8, 9)"
    with pytest.raises(ValueError, match=re.escape(message)):
        metric(np.ones((8, 8)), np.ones((8, 9)))


@pytest.mark.parametrize("metric", [*SURFACE, evaluate])
def test_wrong_spacing_length_raises(metric) -> None:
    message = "spacing must have one value per axis of the 2-D masks, got (1.0, 1.0, 1.0)"
    prediction, truth = _squares()
    with pytest.raises(ValueError, match=re.escape(message)):
        metric(prediction, truth, spacing=(1, 1, 1))


def test_evaluate_matches_each_metric() -> None:
    prediction, truth = _blob((30, 36), 13), _blob((30, 36), 14)
    spacing = (0.5, 2.0)
    result = evaluate(prediction, truth, spacing=spacing)
    assert tuple(result) == METRIC_NAMES
    expected = [metric(prediction, truth) for metric in OVERLAP]
    expected += [metric(prediction, truth, spacing=spacing) for metric in SURFACE]
    assert list(result.values()) == expected
