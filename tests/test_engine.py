"""Per-image engine: input checks, determinism, stopping rules, native-resolution output."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from selfseg.engine import as_float_image, segment
from selfseg.foreground import most_agreed
from selfseg.metrics import dice

from helpers import disc_image as _disc_image

FAST = {"size": 24, "max_iter": 2, "n_channels": 8}


def test_as_float_image_conversions() -> None:
    grey8 = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    np.testing.assert_allclose(as_float_image(grey8)[:, :, 0], grey8 / 255.0)
    assert as_float_image(grey8).shape == (2, 2, 1)
    grey16 = np.array([[0, 65535], [257, 0]], dtype=np.uint16)
    assert as_float_image(grey16)[1, 0, 0] == pytest.approx(257 / 65535)
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert as_float_image(rgba).shape == (3, 4, 3)
    assert as_float_image(np.eye(3, dtype=bool))[0, 0, 0] == 1.0
    scaled = as_float_image(np.array([[-2.0, 0.0], [2.0, 2.0]]))
    np.testing.assert_allclose(scaled[:, :, 0], [[0.0, 0.5], [1.0, 1.0]])
    assert as_float_image(np.full((2, 2), 0.25, dtype=np.float64)).dtype == np.float32


@pytest.mark.parametrize(
    ("array", "error", "message"),
    [
        (np.zeros((1, 5)), ValueError, "at least 2x2"),
        (np.zeros((4, 4, 2)), ValueError, "must have shape"),
        (np.zeros((4,)), ValueError, "must have shape"),
        (np.full((3, 3), np.nan), ValueError, "NaN"),
        (np.zeros((3, 3), dtype=np.int32), TypeError, "dtype int32"),
    ],
)
def test_as_float_image_rejects(array: np.ndarray, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        as_float_image(array)


def test_segment_kmeans_readout_clusters() -> None:
    grey = _disc_image().mean(axis=2)
    result = segment(grey, seed=1, min_labels=2, **FAST)  # the default readout: min_labels on grey images
    assert result.n_labels == 2
    # the disc and the background, whatever the barely trained network says
    assert result.labels[15, 20] != result.labels[0, 0]
    again = segment(grey, seed=1, readout="kmeans", readout_clusters=2, min_labels=2, **FAST)
    np.testing.assert_array_equal(result.labels, again.labels)
    argmax = segment(grey, seed=1, readout="argmax", min_labels=2, **FAST)
    assert argmax.history == result.history  # the readout changes the clusters, not the fit
    more = segment(grey, seed=1, min_labels=2, readout_clusters=3, **FAST)
    assert more.n_labels == 3 and more.history == result.history
    # on colour images one readout each with min_labels to min_labels + 2 clusters; under a prior the mask closest to
    # colour k-means' (its own vote over the same counts) is kept, with a point the most agreed one
    colour = segment(_disc_image(), seed=1, min_labels=2, **FAST)
    singles = {k: segment(_disc_image(), seed=1, min_labels=2, readout_clusters=k, **FAST) for k in (2, 3, 4)}
    assert [single.n_labels for single in singles.values()] == [2, 3, 4]
    referee = segment(_disc_image(), method="kmeans", min_labels=2).mask
    best = (2, 3, 4)[int(np.argmax([dice(single.mask, referee) for single in singles.values()]))]
    np.testing.assert_array_equal(colour.labels, singles[best].labels)
    np.testing.assert_array_equal(colour.mask, singles[best].mask)
    pointed = segment(_disc_image(), seed=1, min_labels=2, point=(20, 15), **FAST)
    singles = [segment(_disc_image(), seed=1, min_labels=2, readout_clusters=k, point=(20, 15), **FAST) for k in (2, 3, 4)]
    np.testing.assert_array_equal(pointed.mask, singles[most_agreed([single.mask for single in singles])].mask)


def test_segment_is_deterministic_and_native_size() -> None:
    image = _disc_image(30, 41)
    first = segment(image, seed=3, **FAST)
    second = segment(image, seed=3, **FAST)
    assert first.labels.shape == first.mask.shape == (30, 41)
    assert first.labels.dtype == np.int32 and first.mask.dtype == bool
    np.testing.assert_array_equal(first.labels, second.labels)
    assert first.history == second.history
    assert sorted(np.unique(first.labels)) == list(range(1, first.n_labels + 1))
    areas = np.bincount(first.labels.ravel())[1:]
    assert list(areas) == sorted(areas, reverse=True)
    other = segment(image, seed=4, **FAST)
    assert other.history != first.history


def test_segment_records_history_and_calls_back() -> None:
    seen = []
    result = segment(_disc_image(), seed=0, callback=lambda i, rec: seen.append(i), **FAST)
    assert seen == [0, 1] and result.iterations == 2
    assert set(result.history[0]) == {"ce", "transform", "spatial", "total", "n_labels", "changed"}
    assert result.history[0]["changed"] == 1.0
    record = result.history[1]
    assert record["total"] == pytest.approx(record["ce"] + record["transform"] + record["spatial"], rel=1e-5)
    assert result.method == "s3net" and result.seed == 0 and result.seconds > 0


def test_label_count_stop_respects_min_iter() -> None:
    image = _disc_image()
    assert segment(image, size=24, n_channels=8, max_iter=10, min_labels=64, min_iter=0).iterations == 1
    assert segment(image, size=24, n_channels=8, max_iter=10, min_labels=64, min_iter=2).iterations == 3


def test_segment_rejects_bad_arguments() -> None:
    image = _disc_image()
    with pytest.raises(ValueError, match="method must be one of s3net, msformer, dfc, otsu, kmeans, got 'nope'"):
        segment(image, method="nope")
    with pytest.raises(TypeError, match="unknown option"):
        segment(image, bogus=1)
    with pytest.raises(ValueError, match="max_iter must be at least 1"):
        segment(image, max_iter=0)
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16, got 'float16'"):
        segment(image, precision="float16")
    with pytest.raises(ValueError, match="readout must be one of kmeans, argmax, got 'mean'"):
        segment(image, readout="mean")
    with pytest.raises(ValueError, match="readout_clusters must be a count >= 1 or a non-empty sequence of them, got 0"):
        segment(image, readout_clusters=0)
    with pytest.raises(ValueError, match=r"readout_clusters must be a count >= 1 or a non-empty sequence of them, got \(3, 0\)"):
        segment(image, readout_clusters=(3, 0))
    with pytest.raises(ValueError, match=r"readout_clusters must be a count >= 1 or a non-empty sequence of them, got \(\)"):
        segment(image, readout_clusters=())
    with pytest.raises(ValueError, match="min_labels must be at least 1, got 0"):
        segment(image, min_labels=0)
    with pytest.raises(ValueError, match="min_labels must be at least 1, got 0"):
        segment(image, method="kmeans", min_labels=0)


def test_segment_runs_in_bfloat16() -> None:
    small = {"n_channels": 6, "embed_dim": 8, "n_layers": 1, "patch_size": 4}
    result = segment(_disc_image(), method="msformer", precision="bfloat16", size=24, max_iter=2, **small)
    assert result.labels.shape == (30, 40) and result.iterations == 2
    assert all(np.isfinite(record["total"]) for record in result.history)


def test_segment_accepts_grey_and_native_size() -> None:
    grey = _disc_image(20, 26).mean(axis=2)
    result = segment(grey, size=None, max_iter=1, n_channels=8, device="cpu")
    assert result.labels.shape == (20, 26)


def test_oracle_foreground_is_labelled_and_validated() -> None:
    image = _disc_image()
    truth = np.zeros(image.shape[:2], dtype=bool)
    truth[10:20, 15:25] = True
    result = segment(image, foreground="oracle", truth=truth, oracle_crop=True, **FAST)
    assert result.foreground == "oracle+crop"
    near_truth = ndimage.binary_dilation(truth, structure=np.ones((5, 5), dtype=bool), iterations=2)
    assert not (result.mask & ~near_truth).any()
    assert segment(image, **FAST).foreground == "lesion"
    with pytest.raises(ValueError, match="needs truth"):
        segment(image, foreground="oracle", **FAST)
    with pytest.raises(ValueError, match="only used by foreground='oracle'"):
        segment(image, truth=truth, **FAST)
    with pytest.raises(ValueError, match="oracle_crop needs"):
        segment(image, oracle_crop=True, **FAST)
    with pytest.raises(ValueError, match=r"truth must have shape \(30, 40\), got \(4, 40\)"):
        segment(image, foreground="oracle", truth=truth[:4], **FAST)
