"""selfseg.foreground.morphology: the same pixels as scipy.ndimage's binary morphology with skimage's disk."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import disk

from selfseg.foreground.morphology import disk_closing, disk_dilation, disk_erosion, disk_opening, fill_holes


def _masks() -> list[np.ndarray]:
    """Random, smooth, full, empty and one-row masks of odd sizes, some narrower than the largest radius."""
    rng = np.random.default_rng(3)
    masks = []
    for height, width in ((1, 1), (1, 9), (7, 3), (23, 31), (40, 17), (64, 64)):
        masks.append(rng.random((height, width)) < 0.6)
        masks.append(ndimage.gaussian_filter(rng.random((height, width)), 2) > 0.5)
        masks.append(np.ones((height, width), dtype=bool))
        row = np.zeros((height, width), dtype=bool)
        row[height // 2] = True
        masks.append(row)
    masks.append(np.zeros((12, 12), dtype=bool))
    return masks


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 6, 13, 40])
def test_equal_to_ndimage_with_skimage_disk(radius: int) -> None:
    element = disk(radius).astype(bool)
    for mask in _masks():
        assert np.array_equal(disk_erosion(mask, radius), ndimage.binary_erosion(mask, element))
        assert np.array_equal(disk_dilation(mask, radius), ndimage.binary_dilation(mask, element))
        assert np.array_equal(disk_opening(mask, radius), ndimage.binary_opening(mask, element))
        padded = ndimage.binary_closing(np.pad(mask, radius), element)
        closed = padded[radius : padded.shape[0] - radius, radius : padded.shape[1] - radius]
        assert np.array_equal(disk_closing(mask, radius), closed)


def test_fill_holes_equal_to_ndimage() -> None:
    rng = np.random.default_rng(8)
    masks = _masks() + [rng.random(rng.integers(1, 30, 2)) < rng.random() for _ in range(300)]
    for mask in masks:
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))


def test_fill_holes_fills_what_the_edge_cannot_reach() -> None:
    mask = np.zeros((7, 9), dtype=bool)
    mask[1:6, 1:6] = True
    mask[3, 3] = False  # a hole
    mask[1:6, 7] = True
    mask[3, 8] = True
    mask[2, 7] = False  # an opening onto the image's edge, diagonal only to the inside
    filled = fill_holes(mask)
    assert filled[3, 3] and not filled[2, 7]
    assert filled.sum() == mask.sum() + 1


def test_opening_cuts_a_line_and_keeps_a_blob() -> None:
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:20, 5:20] = True
    mask[25, :] = True  # a hair, one pixel thick
    opened = disk_opening(mask, 2)
    assert not opened[25].any()
    assert opened[8:17, 8:17].all()
    assert opened.sum() == 15 * 15 - 4 * 3  # the square loses three pixels at each corner


def test_closing_keeps_a_region_at_the_frame() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    mask[:, :6] = True
    mask[10, 2] = False  # a one-pixel hole
    closed = disk_closing(mask, 2)
    assert closed[:, :6].all() and not closed[:, 6:].any()
    assert not ndimage.binary_closing(mask, disk(2)).all(axis=0)[0]  # unpadded, the frame eats its border


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"radius must be >= 0, got -1"):
        disk_erosion(np.ones((3, 3), dtype=bool), -1)
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\), got \(2, 3, 3\)"):
        disk_dilation(np.ones((2, 3, 3), dtype=bool), 1)
    with pytest.raises(ValueError, match=r"mask must have shape \(H, W\), got \(4,\)"):
        fill_holes(np.ones(4, dtype=bool))
