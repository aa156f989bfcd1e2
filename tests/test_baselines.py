"""Classical baselines: Otsu threshold and k-means on colour."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage
from scipy.cluster.vq import kmeans2

from selfseg import choice
from selfseg.baselines import KMEANS_SAMPLE, KMEANS_STARTS, kmeans_labels, kmeans_maps, kmeans_refine, otsu_labels
from selfseg.engine import segment
from selfseg.foreground import choose_mask, most_agreed
from selfseg.readout import relabel_by_area


def _two_tone() -> np.ndarray:
    image = np.full((12, 16, 3), 0.8, dtype=np.float32)
    image[3:9, 4:12] = (0.2, 0.1, 0.1)
    return image


def test_otsu_splits_dark_from_bright() -> None:
    labels = otsu_labels(_two_tone())
    expected = np.ones((12, 16), dtype=np.int32)
    expected[:] = 2
    expected[3:9, 4:12] = 1
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(otsu_labels(np.full((4, 5, 1), 0.3, dtype=np.float32)), np.ones((4, 5)))


def test_kmeans_finds_the_colours_and_takes_no_seed() -> None:
    image = _two_tone()
    image[0:2, 0:4] = (0.1, 0.9, 0.1)
    labels = kmeans_labels(image, n_clusters=3)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {1, 2, 3}
    for region in (labels[3:9, 4:12], labels[0:2, 0:4], labels[10:, 12:]):
        assert len(np.unique(region)) == 1
    with pytest.warns(FutureWarning, match="seed is ignored"):
        np.testing.assert_array_equal(labels, kmeans_labels(image, n_clusters=3, seed=7))


def _inertia(features: np.ndarray, labels: np.ndarray) -> float:
    points, flat = features.reshape(-1, features.shape[2]), labels.ravel()
    return sum(float(((points[flat == k] - points[flat == k].mean(axis=0)) ** 2).sum()) for k in np.unique(flat))


def test_kmeans_keeps_the_start_of_lowest_inertia() -> None:
    """Five tight blobs: the first k-means++ start alone ends with two centroids in one blob."""
    rng = np.random.default_rng(6)
    centres = np.array([[0, 0], [0, 4], [4, 0], [4, 4], [2, 2]], dtype=float)
    features = (centres[rng.integers(0, 5, 1200)] + rng.normal(scale=0.3, size=(1200, 2))).reshape(30, 40, 2)
    one, best = (_inertia(features, kmeans_labels(features, n_clusters=5, starts=n)) for n in (1, 4))
    assert best < 0.25 * one
    assert best == pytest.approx(1200 * 2 * 0.3**2, rel=0.15)  # each blob one cluster: the noise's variance


def test_kmeans_of_a_large_image_compares_its_starts_on_a_sample() -> None:
    image = np.zeros((150, 120, 3))  # 18000 pixels: more than KMEANS_SAMPLE
    image[40:110, 30:90] = (0.8, 0.3, 0.2)
    image[:10] = (0.1, 0.1, 0.9)
    labels = kmeans_labels(image, n_clusters=3)
    assert image.shape[0] * image.shape[1] > KMEANS_SAMPLE
    for region in (labels[40:110, 30:90], labels[:10], labels[120:]):
        assert len(np.unique(region)) == 1
    assert len(np.unique(labels)) == 3


def _scipy_kmeans(image: np.ndarray, n_clusters: int) -> np.ndarray:
    """kmeans_labels as its Notes describe it, with scipy's Lloyd iterations on every pixel at the end."""
    pixels = image.reshape(-1, image.shape[2]).astype(np.float64)
    sample = pixels[:: -(-len(pixels) // KMEANS_SAMPLE)]
    fits = [kmeans2(sample, n_clusters, minit="++", seed=np.random.default_rng(s)) for s in range(KMEANS_STARTS)]
    centroids, _ = min(fits, key=lambda fit: float(((sample - fit[0][fit[1]]) ** 2).sum()))
    _, assignment = kmeans2(pixels, centroids, minit="matrix")
    return assignment.reshape(image.shape[:2]) + 1


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kmeans_maps_of_an_8_bit_image_are_scipys_clusters_bit_for_bit(channels: int, dtype: type) -> None:
    """The refinement on the distinct colours of an 8-bit image gives the clusters of scipy's on every pixel."""
    rng = np.random.default_rng(3)  # smooth colours, on which Lloyd's iterations still move at the tenth
    smooth = np.stack([ndimage.gaussian_filter(rng.random((160, 128)), 12) for _ in range(channels)], axis=2)
    levels = np.rint((smooth - smooth.min()) / np.ptp(smooth) * 255)
    image = (levels.astype(dtype) / dtype(255)).astype(dtype)  # 160 x 128: more pixels than KMEANS_SAMPLE
    assert image.shape[0] * image.shape[1] > KMEANS_SAMPLE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [_scipy_kmeans(image, k) for k in (3, 4, 5)]
    for found, wanted in zip(kmeans_maps(image, (3, 4, 5)), expected, strict=True):
        np.testing.assert_array_equal(found, wanted)
    np.testing.assert_array_equal(kmeans_labels(image, n_clusters=4), expected[1])


def test_kmeans_maps_of_other_features_refine_on_every_pixel() -> None:
    """Values that are not 8-bit levels in [0, 1] (0-255 themselves, or below 0), or more than three channels, take
    scipy's refinement on every pixel."""
    rng = np.random.default_rng(5)
    levels = np.round(rng.random((150, 120, 4)) * 255)
    for features in (rng.random((150, 120, 2)), levels / 255, levels[..., :3], levels[..., :3] / 255 - 0.5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = _scipy_kmeans(features, 3)
        np.testing.assert_array_equal(kmeans_maps(features, (3,))[0], expected)


def test_kmeans_of_fewer_colours_than_clusters_returns_fewer_clusters_quietly() -> None:
    image = _two_tone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = [kmeans_labels(image, n_clusters=3, starts=starts) for starts in (1, 4)]
        flat = kmeans_labels(np.zeros((6, 5, 3)), n_clusters=3)
    for found in labels:
        assert len(np.unique(found)) == 2
        assert len(np.unique(found[3:9, 4:12])) == 1 and found[3, 4] != found[0, 0]
    np.testing.assert_array_equal(flat, np.ones((6, 5), dtype=np.int32))


def test_kmeans_of_features_with_nan_or_inf_is_one_clear_error() -> None:
    for bad in (np.nan, np.inf):
        features = _two_tone().astype(np.float64)
        features[0, 0, 1] = bad
        with pytest.raises(ValueError, match="^kmeans_labels: the features contain NaN or infinite values$"):
            kmeans_labels(features, n_clusters=2)


@pytest.mark.parametrize("method", ["otsu", "kmeans"])
def test_engine_runs_baselines_through_the_foreground_step(method: str) -> None:
    result = segment(_two_tone(), method=method, seed=0, min_labels=2)
    assert result.n_labels == 2
    expected = np.zeros((12, 16), dtype=bool)
    expected[3:9, 4:12] = True
    np.testing.assert_array_equal(result.mask, expected)
    assert result.iterations == 0 and result.history == [] and result.method == method
    with pytest.raises(TypeError, match="takes none"):
        segment(_two_tone(), method=method, n_channels=4)


def _noisy_lesion(channels: int) -> np.ndarray:
    """A dark disc with a paler rim on noisy skin, (40, 48, channels) in [0, 1]."""
    yy, xx = np.mgrid[:40, :48]
    radius = np.hypot(yy - 20, xx - 24)
    grey = np.where(radius < 8, 0.2, np.where(radius < 12, 0.45, 0.8))
    noisy = grey + np.random.default_rng(0).normal(0, 0.04, grey.shape)
    tint = np.array([1.0, 0.8, 0.7])[:channels]
    return np.clip(noisy[..., None] * tint, 0, 1).astype(np.float32)


def _most_agreed_map(image: np.ndarray, counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The k-means map (one per count) whose mask the others' masks agree with most, and that mask."""
    maps = [relabel_by_area(kmeans_labels(image, n_clusters=k)) for k in counts]
    masks = [choose_mask(labels, image)[0] for labels in maps]
    best = most_agreed(masks)
    return maps[best], masks[best]


def test_kmeans_clusters_with_the_networks_readout_counts(monkeypatch) -> None:
    """Colour: one k-means per count of the networks' default readout (``min_labels`` to ``min_labels`` + 2), the
    map whose mask the others agree with most kept; grey: ``min_labels`` clusters; ``readout_clusters``
    overrides both; Otsu ignores it."""
    colour, grey = _noisy_lesion(3), _noisy_lesion(1)
    for min_labels, counts in ((None, (3, 4, 5)), (2, (2, 3, 4))):
        result = segment(colour, method="kmeans", seed=7, min_labels=min_labels)
        labels, mask = _most_agreed_map(colour, counts)
        np.testing.assert_array_equal(result.labels, labels)
        np.testing.assert_array_equal(result.mask, mask)
    masks_seen: list[int] = []
    monkeypatch.setattr(choice, "most_agreed", lambda masks: masks_seen.append(len(masks)) or len(masks) - 1)
    assert segment(colour, method="kmeans", seed=7).n_labels == 5 and masks_seen == [3]  # the vote decides
    assert segment(grey, method="kmeans", seed=7).n_labels == 3 and masks_seen == [3, 1]
    assert segment(colour, method="kmeans", seed=7, readout_clusters=2).n_labels == 2
    assert segment(colour, method="otsu", readout_clusters=(4, 5)).n_labels == 2


def test_kmeans_refine_is_lloyds_iterations_from_the_start_until_nothing_moves() -> None:
    """The clusters scipy's Lloyd iterations reach from the start's centroids, run long enough to converge."""
    rng = np.random.default_rng(11)
    features = np.concatenate([rng.normal(0, 1, (40, 30, 5)), rng.normal(0, 0.2, (40, 30, 2))], axis=2)
    start = kmeans_labels(features[..., 5:], n_clusters=4)
    points = features.reshape(-1, 7)
    centroids = np.stack([points[start.ravel() == k].mean(axis=0) for k in range(1, 5)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, expected = kmeans2(points, centroids, iter=200, minit="matrix")
    refined = kmeans_refine(features, start)
    np.testing.assert_array_equal(refined, expected.reshape(40, 30) + 1)
    assert not np.array_equal(refined, start)  # the features moved it
    assert refined.dtype == np.int32
    with warnings.catch_warnings():  # fewer iterations stop short of that
        warnings.simplefilter("ignore")
        _, early = kmeans2(points, centroids, iter=1, minit="matrix")
    np.testing.assert_array_equal(kmeans_refine(features, start, max_iter=1), early.reshape(40, 30) + 1)


def test_kmeans_refine_keeps_the_starts_clusters_where_they_are_already_stable() -> None:
    features = _two_tone().astype(np.float64)
    start = kmeans_labels(features, n_clusters=2)
    np.testing.assert_array_equal(kmeans_refine(features, start * 5), start)  # any ids >= 1, numbered 1..n
    single = kmeans_refine(features, np.ones(features.shape[:2], dtype=int))
    np.testing.assert_array_equal(single, np.ones(features.shape[:2], dtype=np.int32))


def test_kmeans_refine_checks_its_input() -> None:
    features = _two_tone().astype(np.float64)
    with pytest.raises(ValueError, match=r"^kmeans_refine: start must be \(12, 16\) clusters >= 1, got \(12, 15\)$"):
        kmeans_refine(features, np.ones((12, 15), dtype=int))
    with pytest.raises(ValueError, match=r"^kmeans_refine: start must be \(12, 16\) clusters >= 1, got \(12, 16\)$"):
        kmeans_refine(features, np.zeros((12, 16), dtype=int))
    features[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="^kmeans_refine: the features contain NaN or infinite values$"):
        kmeans_refine(features, np.ones((12, 16), dtype=int))
