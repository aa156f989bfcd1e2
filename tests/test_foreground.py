"""Foreground selection without ground truth, on synthetic cluster maps with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from selfseg.foreground import cluster_mask, oracle_mask, refine_mask, region_scores, select_foreground


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def _paint(labels: np.ndarray, grey_by_label: dict[int, float]) -> np.ndarray:
    image = np.zeros(labels.shape + (3,), dtype=np.float32)
    for label, grey in grey_by_label.items():
        image[labels == label] = grey
    return image


def test_lesion_beats_dark_corners_of_the_same_cluster() -> None:
    shape = (64, 64)
    lesion = _disc(shape, (32, 30), 12)
    corners = _disc(shape, (0, 0), 14) | _disc(shape, (63, 63), 14)
    labels = np.ones(shape, dtype=np.int32)
    labels[lesion | corners] = 2
    image = _paint(labels, {1: 0.8, 2: 0.2})
    np.testing.assert_array_equal(select_foreground(labels, image), lesion)
    np.testing.assert_array_equal(select_foreground(labels, image, refine=False), lesion)


def test_two_lungs_are_both_kept() -> None:
    shape = (60, 80)
    left, right = _disc(shape, (30, 22), 11), _disc(shape, (30, 58), 10)
    labels = np.ones(shape, dtype=np.int32)
    labels[left | right] = 2
    image = _paint(labels, {1: 0.7, 2: 0.1})
    np.testing.assert_array_equal(cluster_mask(labels, image), left | right)


def test_rim_cluster_is_merged_and_holes_filled() -> None:
    shape = (64, 64)
    outer, core, speck = _disc(shape, (32, 32), 16), _disc(shape, (32, 32), 9), _disc(shape, (32, 32), 2)
    labels = np.ones(shape, dtype=np.int32)
    labels[outer] = 3
    labels[core] = 2
    labels[speck] = 1
    image = _paint(labels, {1: 0.9, 2: 0.1, 3: 0.4})
    np.testing.assert_array_equal(cluster_mask(labels, image), outer)


def test_region_scores_report_frame_contact_and_contrast() -> None:
    shape = (40, 40)
    labels = np.ones(shape, dtype=np.int32)
    labels[_disc(shape, (20, 20), 8)] = 2
    image = _paint(labels, {1: 0.9, 2: 0.3})
    regions = {r["label"]: r for r in region_scores(labels, image)}
    assert regions[2]["frame"] == 0.0
    assert regions[2]["contrast"] == pytest.approx(0.6)
    assert regions[1]["frame"] == 1.0 and regions[1]["score"] == 0.0


def test_refine_snaps_a_too_small_mask_to_the_image_edge() -> None:
    shape = (64, 64)
    truth = _disc(shape, (32, 32), 14)
    image = np.where(truth[:, :, None], 0.3, 0.8).astype(np.float32) * np.ones(3, dtype=np.float32)
    labels = np.ones(shape, dtype=np.int32)
    too_small = _disc(shape, (32, 32), 8)
    labels[too_small] = 2
    np.testing.assert_array_equal(refine_mask(too_small, image, labels), truth)


def test_single_cluster_gives_empty_mask() -> None:
    labels = np.ones((16, 16), dtype=np.int32)
    assert not select_foreground(labels, np.full((16, 16), 0.5)).any()


def test_large_images_run_the_cluster_step_on_a_small_copy() -> None:
    shape = (200, 160)
    lesion = _disc(shape, (90, 85), 40)
    labels = np.where(lesion, 2, 1).astype(np.int32)
    image = _paint(labels, {1: 0.8, 2: 0.3})
    np.testing.assert_array_equal(select_foreground(labels, image, work_size=64), lesion)
    coarse = select_foreground(labels, image, work_size=64, refine=False)
    assert coarse.shape == shape
    assert (coarse & lesion).sum() / (coarse | lesion).sum() > 0.95


def test_oracle_picks_the_cluster_that_overlaps_the_truth_most() -> None:
    shape = (40, 40)
    lesion = _disc(shape, (20, 20), 8)
    labels = np.ones(shape, dtype=np.int32)
    labels[lesion] = 2
    labels[:5, :] = 3  # a band on the frame
    truth = np.zeros(shape, dtype=bool)
    truth[:6, :] = True  # the "target" is the band: the ground-truth-free rule cannot know that
    image = _paint(labels, {1: 0.6, 2: 0.2, 3: 0.5})
    np.testing.assert_array_equal(select_foreground(labels, image), lesion)
    np.testing.assert_array_equal(oracle_mask(labels, truth), labels == 3)
    assert not oracle_mask(labels, np.zeros(shape, dtype=bool)).any()


def test_oracle_crop_keeps_only_the_dilated_truth() -> None:
    labels = np.ones((30, 30), dtype=np.int32)
    labels[:, 15:] = 2
    truth = np.zeros((30, 30), dtype=bool)
    truth[10:20, 20:25] = True
    cropped = oracle_mask(labels, truth, crop=True)
    expected = np.zeros((30, 30), dtype=bool)
    expected[6:24, 16:29] = True  # two 5x5 dilations grow the truth by 4 pixels
    expected[:, :15] = False
    np.testing.assert_array_equal(cropped, expected)
    with pytest.raises(ValueError, match="truth must have the labels' shape"):
        oracle_mask(labels, truth[:5])
