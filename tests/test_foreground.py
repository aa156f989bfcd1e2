"""Foreground selection, on synthetic cluster maps with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import convex_hull_image

from selfseg.foreground import (
    check_rule,
    choose_mask,
    implausible,
    is_grey,
    lesion_mask,
    lungs_mask,
    most_agreed,
    oracle_mask,
    point_mask,
    resolve_target,
    select_foreground,
)
from selfseg.foreground.lungs import lies_low, snap_to_edges
from selfseg.foreground.radiograph import below_shoulders, fill_lateral, is_radiograph
from selfseg.foreground.regions import convex_hull, grey_contrast


def _disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def _paint(labels: np.ndarray, grey_by_label: dict[int, float], tint: bool = True) -> np.ndarray:
    """An image with one grey per cluster; ``tint`` makes it a colour image (dermoscopy-like)."""
    image = np.zeros(labels.shape + (3,), dtype=np.float32)
    for label, grey in grey_by_label.items():
        image[labels == label] = grey
    if tint:
        image[:, :, 0] = np.clip(image[:, :, 0] + 0.05, 0, 1)
    return image


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _body(shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    """A cluster map of an elliptic body (cluster 2) in dark air (cluster 1), CT-like, centred, with
    semi-axes 5/12 of the height and 29/64 of the width (40 and 58 px at the default 96x128)."""
    height, width = shape
    yy, xx = np.mgrid[:height, :width]
    body = ((yy - height / 2) / (height * 5 / 12)) ** 2 + ((xx - width / 2) / (width * 29 / 64)) ** 2 < 1
    return np.where(body, 2, 1).astype(np.int32)


def _chest(shape=(96, 128), ring: bool = False, stripes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """CT-like cluster map: dark air outside, a bright body, two dark lungs and a small trachea inside.

    With ``ring``, the outermost pixel ring is a cluster of its own; with ``stripes``, every other pair
    of columns of the air is cluster 4 (both network artefacts seen on real CT). Returns (labels, lungs).
    """
    xx = np.arange(shape[1])
    left, right = _disc(shape, (48, 38), 18), _disc(shape, (48, 90), 17)
    trachea = _disc(shape, (30, 64), 3)
    labels = _body(shape)
    labels[left | right | trachea] = 1
    if ring:
        labels[[0, -1], :] = 3
        labels[:, [0, -1]] = 3
    if stripes:
        labels[(labels == 1) & (xx % 4 < 2)] = 4
    return labels, left | right


def test_lesion_beats_dark_corners_hair_and_a_frame_patch() -> None:
    shape = (96, 96)
    lesion = _disc(shape, (50, 46), 16)
    corners = _disc(shape, (0, 0), 20) | _disc(shape, (95, 95), 20)
    hair = np.zeros(shape, dtype=bool)
    hair[20, 5:90] = True
    patch = _disc(shape, (48, 100), 14)
    labels = np.ones(shape, dtype=np.int32)
    labels[lesion | corners | hair] = 2
    labels[patch] = 3
    image = _paint(labels, {1: 0.8, 2: 0.2, 3: 0.1})
    mask, chosen = select_foreground(labels, image)
    assert chosen == "lesion"
    assert _iou(mask, lesion) > 0.97
    assert not (mask & (corners | hair | patch)).any()


def test_lesion_score_weighs_contrast_above_area_in_a_near_tie() -> None:
    """A small dark lesion against a region 7.6 times its area and less than half its contrast: with contrast to the
    power 1 the larger, paler region scores a little higher; with the default 1.1 the lesion does."""
    yy, xx = np.mgrid[:100, :100]
    lesion = (yy - 68) ** 2 + (xx - 50) ** 2 < 8**2
    pale = (yy - 30) ** 2 + (xx - 50) ** 2 < 22**2
    labels = np.where(lesion, 3, np.where(pale, 2, 1))
    grey = np.where(lesion, 0.4, np.where(pale, 0.68, 0.85))
    plain = lesion_mask(labels, grey, contrast_exponent=1.0)
    assert plain[30, 50] and not plain[68, 50]
    chosen = lesion_mask(labels, grey)
    assert chosen[68, 50] and not chosen[30, 50]
    assert chosen.sum() == pytest.approx(lesion.sum(), rel=0.1)


def test_lesion_mask_merges_a_darker_core_with_its_rim() -> None:
    shape = (64, 64)
    outer, core = _disc(shape, (32, 32), 16), _disc(shape, (32, 32), 8)
    labels = np.ones(shape, dtype=np.int32)
    labels[outer] = 3
    labels[core] = 2
    image = _paint(labels, {1: 0.9, 2: 0.1, 3: 0.4})
    np.testing.assert_array_equal(lesion_mask(labels, image.mean(axis=2)), outer)


@pytest.mark.parametrize("ring, stripes", [(False, False), (True, False), (False, True)])
def test_lungs_are_both_found_inside_the_body(ring: bool, stripes: bool) -> None:
    labels, lungs = _chest(ring=ring, stripes=stripes)
    image = _paint(labels, {1: 0.05, 2: 0.6, 3: 0.3, 4: 0.06}, tint=False)
    assert resolve_target(image) == "lungs"
    mask, chosen = select_foreground(labels, image)
    assert chosen == "lungs"
    assert _iou(mask, lungs) > 0.95
    assert _iou(lungs_mask(labels, image.mean(axis=2)), lungs) > 0.95


def test_lungs_joined_to_the_outside_by_a_narrow_bridge() -> None:
    """A 3-px bridge of the air's cluster joins the left lung to the outside (the neck on an X-ray, a
    dark fat layer on CT): at the first opening scale it counts as outside and only the right lung is
    found; the larger scales cut the bridge and find both."""
    labels, lungs = _chest()
    labels[:48, 37:40] = 1
    grey = _paint(labels, {1: 0.05, 2: 0.6}, tint=False).mean(axis=2)
    first_scale_only = lungs_mask(labels, grey, outside_scales=(1,))
    assert _iou(first_scale_only, lungs) < 0.5 and not first_scale_only[:, :64].any()
    assert _iou(lungs_mask(labels, grey), lungs) > 0.95


def test_lungs_close_to_each_other_are_not_bridged() -> None:
    """Lungs 5 px apart (a thin mediastinum; the closing disk is 4 px): each lung is closed and hole-filled
    on its own, so the gap between them is not filled in."""
    labels = _body()
    left, right = _disc(labels.shape, (48, 44), 18), _disc(labels.shape, (48, 85), 18)
    labels[left | right] = 1
    grey = _paint(labels, {1: 0.05, 2: 0.6}, tint=False).mean(axis=2)
    mask = lungs_mask(labels, grey)
    np.testing.assert_array_equal(mask, left | right)
    assert not mask[40:57, 62:67].any()


def test_a_near_tie_goes_to_the_darker_lungs() -> None:
    """A 2-px rim of a mid-grey cluster (fat, partial volume) around each lung: the lungs with the rim score
    less than 5 % above the lungs alone, so the darker candidate is kept; without the preference the
    rim joins. (The choice among clusters is tested, so without the edge snap, which moves the boundary
    into such a rim.)"""
    labels, lungs = _chest()
    labels[ndimage.binary_dilation(lungs, iterations=2) & ~lungs] = 3
    grey = _paint(labels, {1: 0.05, 2: 0.6, 3: 0.45}, tint=False).mean(axis=2)
    np.testing.assert_array_equal(lungs_mask(labels, grey, snap_iterations=0), lungs)
    assert _iou(lungs_mask(labels, grey, prefer_darker=0.0, snap_iterations=0), lungs) < 0.85


def _xray(shape=(96, 128)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chest-X-ray-like cluster map: black air (1) above the shoulders, a body (2) wide from row 30 down and a
    neck (2) above it to the top edge, two lungs (3) whose cluster also covers the neck's middle
    (a leak into the neck, as on many real X-rays). Returns (labels, lungs, grey) with grey lungs between
    the air and the body."""
    labels = np.ones(shape, dtype=np.int32)
    labels[30:, 8:-8] = 2
    labels[:30, 44:84] = 2
    lungs = _disc(shape, (64, 40), 20) | _disc(shape, (64, 88), 20)
    labels[lungs] = 3
    labels[10:52, 52:76] = 3  # the neck leak, joining both lungs from above
    grey = _paint(labels, {1: 0.02, 2: 0.8, 3: 0.35}, tint=False).mean(axis=2)
    return labels, lungs, grey


def test_on_a_radiograph_the_neck_above_the_shoulders_is_cut() -> None:
    labels, lungs, grey = _xray()
    body = labels != 1
    assert is_radiograph(lungs, body, grey)
    assert not is_radiograph(lungs, body, np.where(lungs, 0.02, grey))  # CT: lungs as dark as the air
    below = (labels == 3) & (np.arange(96) >= 30)[:, None]  # the lungs and the part of the leak below the neck
    np.testing.assert_array_equal(below_shoulders(labels == 3, body), below)
    mask = lungs_mask(labels, grey, snap_iterations=0)
    # the leak is too tall for below_neck; the lateral fill's depth is 1.6 % of 96 rows, 2 pixels
    assert not mask[:30].any() and _iou(mask, fill_lateral(below, depth=2)) > 0.97
    assert lungs_mask(labels, grey, shoulders=0.0, snap_iterations=0)[:30].any()  # the leak, without the cut


def test_snap_to_edges_moves_the_boundary_to_the_edge() -> None:
    """A dark disc (radius 20) whose rim fades to the background over its outer 5 px: a mask of the 15-px core
    grows to the disc's edge and no further."""
    yy, xx = np.mgrid[:96, :96]
    distance = np.hypot(yy - 48, xx - 48)
    grey = np.clip((distance - 15) / 5, 0, 1) * 0.3 + 0.1
    grey[distance >= 20] = 0.9
    core, disc = distance < 15, distance < 20
    snapped = snap_to_edges(core, grey, iterations=8)
    assert _iou(snapped, disc) > 0.95 and _iou(core, disc) < 0.6
    np.testing.assert_array_equal(snap_to_edges(core, grey, iterations=0), core)
    assert not snap_to_edges(np.zeros_like(core), grey).any()


def test_lungs_joined_in_front_count_as_a_pair() -> None:
    """Both lungs in one region (joined at the front, as S3-Net's clusters often give on CT) score as a pair:
    the rule keeps them, rather than pairing them with a mid-grey region low in the body on the other side."""
    labels = _body()
    lungs = _disc(labels.shape, (36, 40), 13) | _disc(labels.shape, (36, 88), 12)
    lungs[31:37, 48:82] = True
    blobs = _disc(labels.shape, (70, 40), 9) | _disc(labels.shape, (70, 88), 12)
    labels[lungs] = 1
    labels[blobs] = 3
    grey = _paint(labels, {1: 0.05, 2: 0.6, 3: 0.35}, tint=False).mean(axis=2)
    mask = lungs_mask(labels, grey)
    assert _iou(mask, lungs) > 0.98 and not (mask & blobs).any()


def test_auto_target_falls_back_to_lesion() -> None:
    shape = (64, 64)
    lesion = _disc(shape, (32, 32), 12)
    labels = np.where(lesion, 2, 1).astype(np.int32)
    grey = _paint(labels, {1: 0.8, 2: 0.2}, tint=False)
    assert resolve_target(grey) == "lungs" and resolve_target(grey[:, :, 0]) == "lungs"
    assert resolve_target(_paint(labels, {1: 0.8, 2: 0.2})) == "lesion"
    assert is_grey(grey) and is_grey(grey[:, :, :1]) and not is_grey(_paint(labels, {1: 0.8, 2: 0.2}))
    assert is_grey(grey + np.array([0, 0.5 / 255, 0])) and not is_grey(grey + np.array([0, 2 / 255, 0]))
    tinted = grey.copy()
    tinted[37, 45, 1] += 2 / 255  # one coloured pixel, off the stride the quick look takes
    assert not is_grey(tinted)
    mask, chosen = select_foreground(labels, grey)  # one dark blob, no body around it: not lungs
    assert chosen == "lesion" and _iou(mask, lesion) > 0.97
    mask, chosen = select_foreground(labels, grey, target="lungs")
    assert chosen == "lungs" and not mask.any()


def test_single_cluster_gives_empty_mask() -> None:
    labels = np.ones((16, 16), dtype=np.int32)
    mask, _ = select_foreground(labels, np.full((16, 16, 3), 0.5, dtype=np.float32))
    assert not mask.any()


def test_large_images_run_on_a_small_copy() -> None:
    shape = (400, 320)
    lesion = _disc(shape, (180, 170), 80)
    labels = np.where(lesion, 2, 1).astype(np.int32)
    image = _paint(labels, {1: 0.8, 2: 0.3})
    mask, _ = select_foreground(labels, image, work_size=64)
    assert mask.shape == shape and _iou(mask, lesion) > 0.93


def test_point_takes_the_region_under_the_pixel() -> None:
    labels, lungs = _chest()
    image = _paint(labels, {1: 0.05, 2: 0.6}, tint=False)
    mask, chosen = choose_mask(labels, image, point=(90, 48))  # x, y inside the right lung
    assert chosen == "point"
    np.testing.assert_array_equal(mask, point_mask(labels, (90, 48)))
    np.testing.assert_array_equal(mask, lungs & (np.arange(128) > 64)[None, :])


def test_choose_mask_checks_its_arguments() -> None:
    labels = np.ones((10, 20), dtype=np.int32)
    image = np.zeros((10, 20, 3), dtype=np.float32)
    truth = np.zeros((10, 20), dtype=bool)
    with pytest.raises(ValueError, match=r"^point \(20, 3\) is outside the 20x10 image \(x < 20, y < 10\)$"):
        choose_mask(labels, image, point=(20, 3))
    with pytest.raises(ValueError, match="target must be one of auto, lesion, lungs, polyp, got 'liver'"):
        choose_mask(labels, image, target="liver")
    with pytest.raises(ValueError, match="cannot be combined with foreground='oracle'"):
        choose_mask(labels, image, foreground="oracle", truth=truth, point=(1, 1))
    with pytest.raises(ValueError, match="needs truth"):
        check_rule(foreground="oracle")
    check_rule(foreground="oracle", truth=True)  # a truth to come later is enough without a shape
    mask, chosen = choose_mask(labels, image, foreground="oracle", truth=truth, oracle_crop=True)
    assert chosen == "oracle+crop" and not mask.any()


def test_oracle_picks_the_cluster_that_overlaps_the_truth_most() -> None:
    shape = (40, 40)
    lesion = _disc(shape, (20, 20), 8)
    labels = np.ones(shape, dtype=np.int32)
    labels[lesion] = 2
    labels[:5, :] = 3  # a band on the frame
    truth = np.zeros(shape, dtype=bool)
    truth[:6, :] = True  # the "target" is the band: the ground-truth-free rule cannot know that
    image = _paint(labels, {1: 0.6, 2: 0.2, 3: 0.5})
    assert _iou(select_foreground(labels, image)[0], lesion) > 0.95  # the hull of a small digital disc
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
    with pytest.raises(ValueError, match=r"truth must have shape \(\d+, \d+\), got"):
        oracle_mask(labels, truth[:5])


def test_most_agreed_outvotes_the_odd_mask() -> None:
    lesion, grown = _disc((40, 40), (20, 20), 8), _disc((40, 40), (20, 20), 9)
    skin = ~_disc((40, 40), (20, 20), 3)  # a map whose lesion cluster joined the skin
    # summed Dice with all three: skin 1 + 0.190 + 0.246, lesion 0.190 + 1 + 0.873, grown 0.246 + 0.873 + 1
    assert most_agreed([skin, lesion, grown]) == 2
    assert most_agreed([lesion, skin, lesion.copy()]) == 0  # ties: the first
    assert most_agreed([skin]) == 0
    with pytest.raises(ValueError, match="most_agreed needs at least one mask"):
        most_agreed([])


def _low_chest(lung_grey: float) -> tuple[np.ndarray, np.ndarray]:
    """(labels, grey) 100x60: air around a body (grey 0.8) holding two dark regions low down (``lung_grey``)."""
    labels = np.ones((100, 60), dtype=int)
    labels[4:96, 3:57] = 3
    labels[62:90, 8:26] = labels[62:90, 34:52] = 2
    return labels, np.choose(labels - 1, [0.0, lung_grey, 0.8])


def test_lungs_in_the_lowest_30_percent_of_a_radiograph_are_implausible() -> None:
    """The centroid row against 0.7 of the height (rows 0..99: row 69.3); on a radiograph only."""
    mask = np.zeros((100, 60), dtype=bool)
    mask[20:60, 5:25] = True  # two lungs, centroid row 39.5
    mask[20:60, 35:55] = True
    assert not lies_low(mask)
    radiograph, ct = _low_chest(0.4), _low_chest(0.02)  # lungs half way from the air to the body; as dark as the air
    gaps, on_radiograph = lungs_mask(*radiograph, return_radiograph=True)
    assert on_radiograph and not lungs_mask(*ct, return_radiograph=True)[1]
    assert lies_low(gaps) and implausible(gaps, "lungs", *radiograph)
    assert not implausible(gaps, "lungs", *ct)  # basal CT slices hold lungs this low
    assert not implausible(mask, "lungs", *radiograph)
    assert not implausible(gaps, "lesion", *radiograph) and not implausible(gaps, "polyp", *radiograph)
    band = np.zeros_like(mask)
    band[69:71] = True  # centroid row 69.5: below 0.7 * 99, above 0.71 * 99
    assert lies_low(band) and not lies_low(band, limit=0.71)
    assert not lies_low(np.zeros_like(mask))


def test_convex_hull_equals_skimage() -> None:
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(40):
        mask = np.zeros((40, 50), dtype=bool)
        top, left = rng.integers(0, 20, size=2)
        mask[top : top + rng.integers(2, 20), left : left + rng.integers(2, 30)] = True
        mask &= rng.random(mask.shape) < 0.7  # ragged, with holes
        mask[top, left] = True
        masks.append(mask)
    line = np.zeros((30, 30), dtype=bool)
    line[np.arange(30), np.arange(30) // 3] = True  # edges through pixel centres
    apart = np.zeros((30, 40), dtype=bool)
    apart[2, 3] = apart[25, 30:33] = True  # two regions, empty rows between them
    single = np.zeros((5, 5), dtype=bool)
    single[4, 4] = True
    for mask in [*masks, line, apart, single, np.ones((3, 7), dtype=bool)]:
        np.testing.assert_array_equal(convex_hull(mask), convex_hull_image(mask))


def test_contrast_band_is_the_iterated_square_dilation() -> None:
    rng = np.random.default_rng(1)
    region = np.zeros((30, 40), dtype=bool)
    region[0:8, 5:20] = True  # touches the frame
    region[15:25, 25:38] = rng.random((10, 13)) < 0.8
    grey = rng.random(region.shape)
    band = ndimage.binary_dilation(region, structure=np.ones((3, 3), bool), iterations=4) & ~region
    assert grey_contrast(region, grey, 4) == pytest.approx(float(grey[band].mean() - grey[region].mean()), abs=0)
