"""The chest X-ray steps of the lung rule, on synthetic lung masks with a known answer."""

from __future__ import annotations

import numpy as np

from selfseg.foreground.radiograph import below_neck, fill_lateral, gap_column

SHAPE = (96, 128)


def _disc(centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def _lungs() -> np.ndarray:
    """Two lungs, rows 31-65 and 32-64, with a gap between columns 57 and 72."""
    return _disc((48, 38), 18) | _disc((48, 90), 17)


def test_gap_column_lies_between_the_lungs() -> None:
    lungs = _lungs()
    column = gap_column(lungs)
    assert 56 <= column <= 73 and not lungs[:, column].any()
    assert gap_column(np.ones((4, 2), dtype=bool)) == 1  # too narrow for thirds


def test_the_steps_keep_a_mask_too_narrow_for_two_lungs() -> None:
    narrow = np.ones((4, 2), dtype=bool)
    for step in (below_neck, fill_lateral):
        np.testing.assert_array_equal(step(narrow), narrow)


def test_below_neck_cuts_a_band_joining_the_lungs_over_the_gap() -> None:
    lungs = _lungs()
    mask = lungs.copy()
    mask[22:28, 30:100] = True  # the band across the neck
    mask[22:40, 30:36] = mask[22:40, 94:100] = True  # joined to each lung's apex
    cut = below_neck(mask)
    expected = mask.copy()
    expected[:28] = False
    np.testing.assert_array_equal(cut, expected)
    np.testing.assert_array_equal(below_neck(mask, max_height=0.1), mask)  # 6 of 44 rows: taller than 10 %
    np.testing.assert_array_equal(below_neck(mask, max_height=0), mask)
    np.testing.assert_array_equal(below_neck(lungs), lungs)  # nothing crosses the gap
    assert not below_neck(np.zeros(SHAPE, dtype=bool)).any()


def test_fill_lateral_fills_the_outer_side_only_and_at_most_depth_deep() -> None:
    lungs = _lungs()
    mask = lungs.copy()
    mask[40:43, 18:26] = False  # a notch in the left lung's outer (left) side: a rib's shadow
    mask[50:53, 100:108] = False  # and in the right lung's outer side
    mask[44:47, 48:57] = False  # a notch in the left lung's inner side: the hilum
    filled = fill_lateral(mask, depth=8)
    expected = fill_lateral(lungs, depth=8)  # the discs' own hull adds a few pixels on their stepped outer rims
    assert 0 < (expected & ~lungs).sum() <= 30 and not (expected & ~lungs)[:, 50:80].any()
    expected[44:47, 48:57] = False
    np.testing.assert_array_equal(filled, expected)
    shallow = fill_lateral(mask, depth=3)  # the notches are 4-5 pixels deep to the hull here
    np.testing.assert_array_equal((shallow & ~mask)[40:43, :64].sum(axis=1), [3, 3, 3])
    np.testing.assert_array_equal((shallow & ~mask)[40:43, :23], False)
    assert not fill_lateral(np.zeros(SHAPE, dtype=bool)).any()
