from __future__ import annotations

import numpy as np
import pytest

from selfseg.visualize import colorize_labels, label_colors, overlay


def test_label_colors_distinct_and_deterministic():
    colors = label_colors(300)
    assert colors.shape == (300, 3) and colors.dtype == np.uint8
    assert len(np.unique(colors, axis=0)) == 300
    assert not (colors == 0).all(axis=1).any()  # black is reserved for label 0
    np.testing.assert_array_equal(colors, label_colors(300))
    np.testing.assert_array_equal(label_colors(7), colors[:7])


def test_label_colors_edge_cases():
    assert label_colors(0).shape == (0, 3)
    with pytest.raises(ValueError):
        label_colors(-1)


def test_colorize_labels():
    labels = np.array([[0, 1, 1], [2, 3, 0]], dtype=np.int32)
    rgb = colorize_labels(labels)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[labels == 0], 0)
    colors = label_colors(3)
    for label in (1, 2, 3):
        np.testing.assert_array_equal(rgb[labels == label], colors[[label - 1]].repeat((labels == label).sum(), 0))


def test_colorize_labels_all_background_and_bad_input():
    np.testing.assert_array_equal(colorize_labels(np.zeros((2, 2), dtype=np.uint8)), 0)
    with pytest.raises(ValueError):
        colorize_labels(np.zeros((2, 2, 1), dtype=int))
    with pytest.raises(ValueError):
        colorize_labels(np.array([[-1, 0]]))
    with pytest.raises(TypeError):
        colorize_labels(np.zeros((2, 2), dtype=float))


def _square_mask(shape=(9, 10), rows=slice(2, 7), cols=slice(3, 8)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


def test_overlay_inside_outside_and_contour():
    image = np.full((9, 10, 1), 0.2, dtype=np.float32)
    mask = _square_mask()
    out = overlay(image, mask, color=(0, 255, 0), alpha=0.4)
    assert out.shape == (9, 10, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[~mask], 51)  # grey 0.2 -> 51
    interior = np.zeros_like(mask)
    interior[3:6, 4:7] = True
    np.testing.assert_array_equal(out[interior], [[31, 133, 31]] * interior.sum())  # 0.6 * 51 + 0.4 * c
    np.testing.assert_array_equal(out[mask & ~interior], [[0, 255, 0]] * (mask & ~interior).sum())


def test_overlay_without_contour_blends_whole_mask():
    image = np.full((9, 10), 0.2, dtype=np.float32)  # (H, W) is accepted too
    mask = _square_mask()
    out = overlay(image, mask, color=(255, 0, 0), alpha=0.25, contour=False)
    np.testing.assert_array_equal(out[mask], [[102, 38, 38]] * mask.sum())  # 0.75 * 51 + 0.25 * c
    np.testing.assert_array_equal(out[~mask], 51)


def test_overlay_colour_image_and_border_contour():
    rng = np.random.default_rng(0)
    image = rng.random((6, 7, 3)).astype(np.float32)
    mask = _square_mask((6, 7), slice(0, 6), slice(0, 3))  # touches the image border
    out = overlay(image, mask, color=(0, 0, 255), alpha=0.0)
    np.testing.assert_array_equal(out[~mask], np.rint(image[~mask] * 255))
    np.testing.assert_array_equal(out[:, 0], [[0, 0, 255]] * 6)  # border pixels outline the mask
    np.testing.assert_array_equal(out[2:4, 1], np.rint(image[2:4, 1] * 255))  # alpha 0: interior untouched
    np.testing.assert_array_equal(overlay(image, np.zeros((6, 7), bool)), np.rint(image * 255))


def test_overlay_rejects_bad_input():
    image = np.zeros((4, 5, 3), dtype=np.float32)
    with pytest.raises(ValueError):
        overlay(image, np.zeros((5, 4), dtype=bool))
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 5, 2)), np.zeros((4, 5), dtype=bool))
    with pytest.raises(ValueError):
        overlay(image, np.zeros((4, 5), dtype=bool), alpha=1.5)
    with pytest.raises(ValueError):
        overlay(image, np.zeros((4, 5), dtype=bool), color=(1, 2))
