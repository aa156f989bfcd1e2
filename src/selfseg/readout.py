"""Readout: how a fitted network's scores become cluster maps at the input's resolution.

``cluster_maps`` is the engine's entry point: the "kmeans" readout (``kmeans_readout``: k-means of the
score vectors and the pixel colours, one map per cluster count) or the papers' per-pixel "argmax",
upsampled to the native size (``upsampled_argmax``) and numbered by decreasing area (``relabel_by_area``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfseg.baselines import kmeans_labels, kmeans_refine
from selfseg.checks import check_shape
from selfseg.foreground import is_grey

__all__ = [
    "COLOUR_WEIGHT",
    "READOUTS",
    "cluster_maps",
    "default_readout_clusters",
    "kmeans_readout",
    "readout_counts",
    "relabel_by_area",
    "upsampled_argmax",
]

READOUTS = ("kmeans", "argmax")
"""How a fitted network's scores become clusters: ``kmeans_readout`` (the default), or the papers' per-pixel argmax."""

COLOUR_WEIGHT = 3.0
"""Weight of the standardised pixel colour against the unit-length score vector in ``kmeans_readout``."""


def first_argmax(scores: Tensor) -> Tensor:
    """``scores.argmax(dim=0)`` of (C, h, w) scores, (h, w) int64 (ties: the first class), in C passes: torch's
    reduction over the outer dimension is several times slower on CPU."""
    best = scores[0].clone()
    index = torch.zeros(scores.shape[1:], dtype=torch.long, device=scores.device)
    for channel in range(1, scores.shape[0]):
        index[scores[channel] > best] = channel
        torch.maximum(best, scores[channel], out=best)
    return index


def upsampled_argmax(scores: Tensor, height: int, width: int, rows_per_strip: int = 256) -> Tensor:
    """Argmax over classes of (1, C, h, w) scores upsampled bilinearly to (height, width). (height, width) int64.

    Equal to ``F.interpolate(scores, (height, width), mode="bilinear").argmax(1)``, computed in strips
    of rows so that large images never hold the full-resolution score volume.
    """
    if scores.shape[-2:] == (height, width):
        return first_argmax(scores[0])
    xs = (torch.arange(width, device=scores.device, dtype=scores.dtype) * 2 + 1) / width - 1
    out = torch.empty(height, width, dtype=torch.long, device=scores.device)
    for top in range(0, height, rows_per_strip):
        rows = torch.arange(top, min(top + rows_per_strip, height), device=scores.device, dtype=scores.dtype)
        ys = (rows * 2 + 1) / height - 1
        grid = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)[None]
        strip = F.grid_sample(scores, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[top : top + len(rows)] = first_argmax(strip[0])
    return out


def kmeans_readout(scores: Tensor, image: Tensor, *, n_clusters: int) -> Tensor:
    """Clusters of a fitted network by k-means instead of argmax. (1, K, h, w) scores, (1, C, h, w) image
    -> (1, n_clusters, h, w) one-hot cluster scores (for ``upsampled_argmax``).

    Each pixel is described by its L2-normalised score vector joined with its colour, standardised to
    unit variance and weighted by ``COLOUR_WEIGHT``. The argmax of a network that has merged regions of
    different brightness into one dominant cluster (lungs and body on chest X-rays) cannot separate them
    again; its score vectors, with the colour, still do.

    Notes:
        On a colour image the k-means starts from the colour's own clusters: ``baselines.kmeans_labels`` of the
        working image's colours (no draw, independent of the fit), then ``baselines.kmeans_refine`` moves them in
        the joint space of scores and colour. Started from k-means++ draws instead, even the best of several landed
        in another local optimum when a seed or another CPU's rounding moved the scores a little, and the chosen
        mask followed it. On a grey image (``foreground.is_grey``; one readout, no vote) the grey levels alone
        are a poor start, which lost a chest X-ray's lungs, so the best of ``baselines.kmeans_labels``' k-means++
        starts on the joint features is kept there (docs/experiments/colour-started-readout.md).
    """
    check_shape("scores", scores, (1, "K", "h", "w"))
    check_shape("image", image, (1, "C", scores.shape[2], scores.shape[3]))
    normed = F.normalize(scores.float(), dim=1)[0]
    pixels = image.float()[0]
    colour = COLOUR_WEIGHT * (pixels - pixels.mean(dim=(1, 2), keepdim=True)) / pixels.std().clamp_min(1e-6)
    features = torch.cat([normed, colour]).permute(1, 2, 0).cpu().numpy()
    colours = pixels.permute(1, 2, 0).cpu().numpy()
    if is_grey(colours):
        clusters = kmeans_labels(features, n_clusters=n_clusters)
    else:
        clusters = kmeans_refine(features, kmeans_labels(colours, n_clusters=n_clusters))
    labels = torch.from_numpy(clusters).long() - 1
    return F.one_hot(labels, n_clusters).permute(2, 0, 1)[None].float().to(scores.device)


def default_readout_clusters(image: np.ndarray, min_labels: int) -> tuple[int, ...]:
    """Cluster counts of ``kmeans_readout`` when none are given: ``(min_labels,)`` on grey images
    (``foreground.is_grey``: CT and X-rays, whose outside, body and lungs are three tones), ``min_labels``
    to ``min_labels + 2`` on colour ones (dermoscopy: skin, a lesion's rim and core, shading or hair;
    ``choice.choose`` keeps one readout's mask). Measured in docs/results.md."""
    return (min_labels,) if is_grey(image) else (min_labels, min_labels + 1, min_labels + 2)


def readout_counts(readout_clusters: int | Sequence[int]) -> tuple[int, ...]:
    """``readout_clusters`` as a tuple of cluster counts; ValueError unless it holds at least one, each >= 1."""
    counts = (readout_clusters,) if isinstance(readout_clusters, (int, np.integer)) else tuple(readout_clusters)
    if not counts or any(int(k) != k or k < 1 for k in counts):
        raise ValueError(f"readout_clusters must be a count >= 1 or a non-empty sequence of them, got {readout_clusters!r}")
    return tuple(int(k) for k in counts)


def relabel_by_area(labels: np.ndarray) -> np.ndarray:
    """Renumber non-negative integer cluster ids to 1..n by decreasing area (ties: lower id first). int32.

    >>> relabel_by_area(np.array([[7, 7, 2], [7, 9, 2]]))
    array([[1, 1, 2],
           [1, 3, 2]], dtype=int32)
    """
    counts = np.bincount(labels.ravel())  # ids are small: a count per id instead of np.unique's sort
    ids = np.flatnonzero(counts)
    rank = np.zeros(len(counts), dtype=np.int32)
    rank[ids[np.argsort(-counts[ids], kind="stable")]] = np.arange(1, len(ids) + 1)
    return rank[labels]


def cluster_maps(
    scores: Tensor, image: Tensor, shape: tuple[int, int], *, readout: str, counts: Sequence[int]
) -> list[np.ndarray]:
    """Cluster maps of (1, K, h, w) ``scores`` of the (1, C, h, w) working ``image``: one per count of
    ``counts`` ("kmeans") or one ("argmax"), each (H, W) int32 at the native ``shape``, numbered 1..n."""
    readouts = [kmeans_readout(scores, image, n_clusters=k) for k in counts] if readout == "kmeans" else [scores]
    return [relabel_by_area(upsampled_argmax(r.contiguous(), *shape).cpu().numpy()) for r in readouts]
