"""Readout: k-means and argmax cluster maps at the native size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfseg.baselines import kmeans_labels, kmeans_refine
from selfseg.readout import (
    COLOUR_WEIGHT,
    cluster_maps,
    default_readout_clusters,
    first_argmax,
    kmeans_readout,
    relabel_by_area,
    upsampled_argmax,
)

from helpers import disc_image as _disc_image


def testupsampled_argmax_matches_interpolate_in_strips() -> None:
    scores = torch.randn(1, 5, 7, 9, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(scores, size=(23, 31), mode="bilinear", align_corners=False).argmax(1)[0]
    assert torch.equal(upsampled_argmax(scores, 23, 31, rows_per_strip=4), expected)
    assert torch.equal(upsampled_argmax(scores, 7, 9), scores[0].argmax(0))


def testrelabel_by_area_orders_by_decreasing_area() -> None:
    labels = np.array([[7, 7, 7], [2, 2, 9], [7, 2, 7]])
    np.testing.assert_array_equal(relabel_by_area(labels), [[1, 1, 1], [2, 2, 3], [1, 2, 1]])


def test_kmeans_readout_separates_what_the_argmax_merged() -> None:
    # one dominant cluster under the argmax, but the score vectors lean two ways and the image has two halves
    scores = torch.zeros(1, 4, 6, 8)
    scores[:, 0] = 5.0
    scores[:, 1, :, :4] = 1.0
    image = torch.full((1, 1, 6, 8), 0.2)
    image[..., 4:] = 0.8
    assert scores.argmax(1).unique().tolist() == [0]
    one_hot = kmeans_readout(scores, image, n_clusters=2)
    assert one_hot.shape == (1, 2, 6, 8) and one_hot.sum(1).eq(1).all()
    clusters = one_hot.argmax(1)[0]
    assert clusters[:, :4].unique().numel() == 1 and clusters[:, 4:].unique().numel() == 1
    assert clusters[0, 0] != clusters[0, 7]
    torch.testing.assert_close(kmeans_readout(scores, image, n_clusters=2), one_hot)


def test_kmeans_readout_starts_from_the_colour_clusters_and_ignores_tiny_changes_of_the_scores() -> None:
    """Scores that differ by a rounding's worth (another seed's fit of the same regions, another CPU) give the same
    clusters: the k-means starts from the colour's clusters, not from a draw."""
    image = torch.from_numpy(_disc_image()).permute(2, 0, 1)[None].float()
    generator = torch.Generator().manual_seed(4)
    scores = torch.randn(1, 8, *image.shape[2:], generator=generator)
    nudged = scores + 1e-4 * torch.randn(scores.shape, generator=generator)
    for k in (3, 4, 5):
        clusters = kmeans_readout(scores, image, n_clusters=k).argmax(1)[0].numpy() + 1
        np.testing.assert_array_equal(clusters, kmeans_readout(nudged, image, n_clusters=k).argmax(1)[0].numpy() + 1)
        start = kmeans_labels(image[0].permute(1, 2, 0).numpy(), n_clusters=k)
        features = np.concatenate(
            [F.normalize(scores, dim=1)[0].permute(1, 2, 0).numpy(),
             COLOUR_WEIGHT * ((image[0] - image[0].mean(dim=(1, 2), keepdim=True)) / image[0].std()).permute(1, 2, 0).numpy()],
            axis=2,
        )
        np.testing.assert_array_equal(clusters, kmeans_refine(features, start))


def test_kmeans_readout_of_a_grey_image_keeps_the_best_k_means_plus_plus_start() -> None:
    image = torch.from_numpy(_disc_image()).permute(2, 0, 1)[None].float()[:, :1].repeat(1, 3, 1, 1)  # grey as RGB
    scores = torch.randn(1, 8, *image.shape[2:], generator=torch.Generator().manual_seed(6))
    features = np.concatenate(
        [F.normalize(scores, dim=1)[0].permute(1, 2, 0).numpy(),
         (COLOUR_WEIGHT * (image[0] - image[0].mean(dim=(1, 2), keepdim=True)) / image[0].std()).permute(1, 2, 0).numpy()],
        axis=2,
    )
    clusters = kmeans_readout(scores, image, n_clusters=3).argmax(1)[0].numpy() + 1
    np.testing.assert_array_equal(clusters, kmeans_labels(features, n_clusters=3))


def test_default_readout_clusters() -> None:
    assert default_readout_clusters(_disc_image(), 3) == (3, 4, 5)
    assert default_readout_clusters(_disc_image().mean(axis=2), 3) == (3,)
    assert default_readout_clusters(np.repeat(_disc_image()[..., :1], 3, axis=2), 2) == (2,)  # grey stored as RGB


def test_kmeans_readout_checks_shapes() -> None:
    with pytest.raises(ValueError, match=r"scores must have shape \(1, K, h, w\), got \(2, 4, 6, 8\)"):
        kmeans_readout(torch.zeros(2, 4, 6, 8), torch.zeros(1, 1, 6, 8), n_clusters=2)
    with pytest.raises(ValueError, match=r"image must have shape \(1, C, 6, 8\), got \(1, 3, 6, 7\)"):
        kmeans_readout(torch.zeros(1, 4, 6, 8), torch.zeros(1, 3, 6, 7), n_clusters=2)


def test_cluster_maps_one_per_count_at_the_native_size() -> None:
    scores = torch.randn(1, 6, 8, 10, generator=torch.Generator().manual_seed(1))
    image = torch.rand(1, 3, 8, 10, generator=torch.Generator().manual_seed(2))
    maps = cluster_maps(scores, image, (16, 20), readout="kmeans", counts=(2, 3))
    assert [m.shape for m in maps] == [(16, 20), (16, 20)] and [int(m.max()) for m in maps] == [2, 3]
    (argmax,) = cluster_maps(scores, image, (16, 20), readout="argmax", counts=(2, 3))
    np.testing.assert_array_equal(argmax, relabel_by_area(upsampled_argmax(scores, 16, 20).numpy()))


def test_first_argmax_equals_torch_argmax_with_ties() -> None:
    scores = torch.randint(0, 3, (5, 7, 9), generator=torch.Generator().manual_seed(3)).float()  # many ties
    torch.testing.assert_close(first_argmax(scores), scores.argmax(dim=0), rtol=0, atol=0)
