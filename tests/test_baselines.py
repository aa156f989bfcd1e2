"""Classical baselines: Otsu threshold and k-means on colour."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from selfseg.baselines import kmeans_labels, otsu_labels
from selfseg.engine import segment


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


def test_kmeans_finds_the_colours_and_is_seeded() -> None:
    image = _two_tone()
    image[0:2, 0:4] = (0.1, 0.9, 0.1)
    labels = kmeans_labels(image, n_clusters=3, seed=0)
    assert labels.dtype == np.int32 and set(np.unique(labels)) == {1, 2, 3}
    for region in (labels[3:9, 4:12], labels[0:2, 0:4], labels[10:, 12:]):
        assert len(np.unique(region)) == 1
    np.testing.assert_array_equal(labels, kmeans_labels(image, n_clusters=3, seed=0))


def test_kmeans_of_fewer_colours_than_clusters_returns_fewer_clusters_quietly() -> None:
    image = _two_tone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = [kmeans_labels(image, n_clusters=3, seed=seed) for seed in range(4)]
        flat = kmeans_labels(np.zeros((6, 5, 3)), n_clusters=3, seed=0)
    for found in labels:
        assert len(np.unique(found)) == 2
        assert len(np.unique(found[3:9, 4:12])) == 1 and found[3, 4] != found[0, 0]
    np.testing.assert_array_equal(flat, np.ones((6, 5), dtype=np.int32))


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
