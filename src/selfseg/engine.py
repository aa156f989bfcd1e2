"""Segmentation of image arrays: clusters without labels, then the mask (NumPy in, NumPy out).

``segment`` is the public entry point for one image; ``fit_images`` is the one path of every segmentation
(``segment``, ``batched.segment_many`` and the runner's tasks): each image's cluster maps, from a network fitted
to it (``fitting.fit_networks``, read out by ``readout.cluster_maps``) or from a baseline's clustering, then its
mask (``choice.choose``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from selfseg.choice import MaskChoice, choose
from selfseg.fitting import Callback, Network, autocast, fit_networks
from selfseg.foreground import most_agreed
from selfseg.methods import ALL_METHODS, BASELINES, DEFAULT_SIZE, METHODS, PRECISIONS, check_method, min_labels_of
from selfseg.pixels import as_float_image
from selfseg.readout import cluster_maps, relabel_by_area
from selfseg.settings import FitSettings, MaskRule

__all__ = [
    "ALL_METHODS",
    "BASELINES",
    "DEFAULT_SIZE",
    "METHODS",
    "PRECISIONS",
    "Prepared",
    "SegmentationResult",
    "as_float_image",
    "check_method",
    "fit_images",
    "min_labels_of",
    "prepare_image",
    "segment",
]


@dataclass
class SegmentationResult:
    """What ``segment`` returns.

    Attributes:
        labels: (H, W) int32 cluster map at the input's resolution; clusters are numbered 1..n_labels
            by decreasing area.
        mask: (H, W) bool foreground; chosen without ground truth unless ``foreground`` says oracle.
        method, seed: what produced it.
        iterations: optimiser steps run.
        seconds: wall time of the fit, including the final prediction and its readout (not the mask's choice).
        history: per iteration, the weighted loss terms, their ``total`` and ``n_labels``.
        confidence: ground-truth-free confidence of ``mask`` in [0, 1) (``confidence.mask_confidence``): sort by
            it to review the doubtful masks first.
        foreground: what chose ``mask``: without ground truth the target prior ("lesion", "lungs", "polyp") or
            "point"; "oracle" or "oracle+crop" for the papers' protocol (with the ground truth: for reproducing
            their figures only).
    """

    labels: np.ndarray
    mask: np.ndarray
    method: str
    seed: int
    iterations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    confidence: float = 0.0
    foreground: str = "lesion"

    @property
    def n_labels(self) -> int:
        """Number of clusters in ``labels``."""
        return int(self.labels.max())


@dataclass(frozen=True)
class Prepared:
    """An image ready to segment: its (H, W, C) float pixels (``as_float_image``), its seed, its ground truth."""

    pixels: np.ndarray
    seed: int
    truth: np.ndarray | None = None


def prepare_image(image: np.ndarray, rule: MaskRule, *, seed: int, truth: np.ndarray | None = None) -> Prepared:
    """``image`` checked and converted once (``as_float_image``), with the ``rule`` checked against it."""
    pixels = as_float_image(image)
    rule.check_image(pixels.shape, truth)
    return Prepared(pixels, seed, None if truth is None else np.asarray(truth))


def _result(choice: MaskChoice, settings: FitSettings, seed: int, seconds: float, history: list) -> SegmentationResult:
    return SegmentationResult(
        labels=choice.labels, mask=choice.mask, method=settings.method, seed=seed, iterations=len(history),
        seconds=seconds, history=history, confidence=choice.confidence, foreground=choice.chosen,
    )


def _baseline(image: Prepared, settings: FitSettings, rule: MaskRule) -> SegmentationResult:
    """A baseline's clusters at native resolution, one map per count of ``settings.counts`` (like the networks'
    kmeans readout, so that both are compared like for like), and the mask."""
    start = time.perf_counter()

    def recluster(k: int) -> np.ndarray:
        return _baseline_maps(settings.method, image.pixels, (k,))[0]

    maps = _baseline_maps(settings.method, image.pixels, settings.counts(image.pixels))
    seconds = time.perf_counter() - start
    retry = recluster if settings.reclusters else None
    return _result(choose(maps, image.pixels, rule, truth=image.truth, recluster=retry), settings, image.seed, seconds, [])


def _baseline_maps(method: str, pixels: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """The (H, W) cluster maps of baseline ``method`` on (H, W, C) ``pixels``, one per cluster count, numbered by
    decreasing area."""
    return [relabel_by_area(labels) for labels in BASELINES[method](pixels, counts)]


def _read_out(network: Network, image: Prepared, settings: FitSettings, rule: MaskRule) -> SegmentationResult:
    """A fitted network's clusters at the native size (``readout.cluster_maps``) and the mask (``choice.choose``, with
    colour k-means as the referee of its vote); ``seconds`` counts from the network's start to the end of its readout."""
    x, precision = network.x, settings.precision
    with torch.no_grad(), autocast(x.device, precision):
        scores = network.model.predict(x).float()

    def read_out(counts: Sequence[int]) -> list[np.ndarray]:
        with torch.no_grad(), autocast(x.device, precision):
            shape = image.pixels.shape[:2]
            return cluster_maps(scores, x, shape, readout=settings.readout, counts=counts)

    counts = settings.counts(image.pixels)
    maps = read_out(counts)
    seconds = time.perf_counter() - network.start
    recluster = (lambda k: read_out((k,))[0]) if settings.reclusters else None

    def referee() -> list[np.ndarray]:  # colour k-means' maps, made only when choose's vote needs a referee
        return _baseline_maps("kmeans", image.pixels, counts)

    choice = choose(maps, image.pixels, rule, truth=image.truth, recluster=recluster, referee=referee)
    return _result(choice, settings, network.seed, seconds, network.history)


def fit_images(
    images: Sequence[Prepared],
    settings: FitSettings,
    rule: MaskRule,
    *,
    batch_images: int | None = 1,
    callback: Callback | None = None,
) -> list[SegmentationResult]:
    """The ``SegmentationResult`` of each prepared image, in order: the one path of every segmentation.

    Networks are fitted ``batch_images`` at once (``fitting.fit_networks``; None: its default per working
    shape); baselines one image at a time. With ``settings.fits`` > 1, each image gets that many fits (seeds s,
    s + 1, ...) and keeps the one whose mask the others agree with most, ``seconds`` summed over them.
    ``callback(image index, iteration, record)`` is called after every optimiser step.
    """
    if settings.fits > 1:
        return _consensus(images, settings, rule, batch_images=batch_images, callback=callback)
    if not settings.network:
        return [_baseline(image, settings, rule) for image in images]
    items = [(index, image.pixels, image.seed) for index, image in enumerate(images)]
    results = {
        network.index: _read_out(network, images[network.index], settings, rule)
        for network in fit_networks(items, settings, batch_images=batch_images, callback=callback)
    }
    return [results[index] for index in range(len(images))]


def _consensus(
    images: Sequence[Prepared], settings: FitSettings, rule: MaskRule, *, batch_images: int | None,
    callback: Callback | None,
) -> list[SegmentationResult]:
    """``fit_images`` with ``settings.fits`` fits per image: every fit in one call, then per image the result
    that the others agree with most."""
    fits = settings.fits
    repeated = [dataclasses.replace(image, seed=image.seed + k) for image in images for k in range(fits)]
    each = None if callback is None else (lambda index, iteration, record: callback(index // fits, iteration, record))
    one = dataclasses.replace(settings, fits=1)
    results = fit_images(repeated, one, rule, batch_images=batch_images, callback=each)
    kept = []
    for start in range(0, len(results), fits):
        group = results[start : start + fits]
        best = group[most_agreed([result.mask for result in group])]
        kept.append(dataclasses.replace(best, seconds=sum(result.seconds for result in group)))
    return kept


def segment(
    image: np.ndarray,
    method: str = "s3net",
    *,
    seed: int = 0,
    size: int | None = DEFAULT_SIZE,
    max_iter: int | None = None,
    min_labels: int | None = None,
    min_iter: int | None = None,
    tol: float = 0.1,
    patience: int = 2,
    lr: float | None = None,
    device: str | torch.device = "auto",
    precision: str = "float32",
    readout: str = "kmeans",
    readout_clusters: int | Sequence[int] | None = None,
    foreground: str = "auto",
    target: str = "auto",
    point: tuple[int, int] | None = None,
    truth: np.ndarray | None = None,
    oracle_crop: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    **options,
) -> SegmentationResult:
    """Fit a fresh network (or a baseline's clustering) to ``image``; return its clusters and foreground mask.

    ``image``: (H, W) or (H, W, C) (``as_float_image``). ``method``, ``size`` ... ``readout_clusters`` and
    ``**options`` (the model's and objective's, e.g. ``n_channels``, ``ce_weight``) make the ``FitSettings``;
    ``foreground``, ``target``, ``point`` and ``oracle_crop`` the ``MaskRule``; ``truth`` is the ground truth of
    ``foreground="oracle"`` (the papers' protocol, results labelled so). docs/api.md describes each argument.
    ``callback(iteration, record)`` is called after every optimiser step. On the CPU, equal seeds and torch
    thread counts give equal results.

    Raises:
        ValueError: a bad image or argument (the message names it and, for a choice, the valid ones).
        TypeError: an option that neither the model nor the objective takes, or an unsupported dtype.

    A dark disc on a bright background, fitted for three steps:

    >>> yy, xx = np.mgrid[:48, :64]
    >>> image = np.where((yy - 24) ** 2 + (xx - 32) ** 2 < 15**2, 0.2, 0.9)
    >>> result = segment(image, size=32, max_iter=3, n_channels=8, device="cpu")
    >>> result.labels.shape, result.mask.dtype, result.iterations
    ((48, 64), dtype('bool'), 3)
    >>> bool(result.mask[24, 32]), bool(result.mask[0, 0])
    (True, False)
    """
    settings = FitSettings(
        method, size=size, max_iter=max_iter, min_labels=min_labels, min_iter=min_iter, tol=tol, patience=patience,
        lr=lr, device=str(device), precision=precision, readout=readout, readout_clusters=readout_clusters,
        options=options,
    )
    rule = MaskRule(foreground=foreground, target=target, point=point, oracle_crop=oracle_crop)
    prepared = prepare_image(image, rule, seed=seed, truth=truth)
    each = None if callback is None else (lambda index, iteration, record: callback(iteration, record))
    return fit_images([prepared], settings, rule, callback=each)[0]
