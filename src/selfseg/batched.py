"""Many images per pass: ``segment_many`` fits the independent networks of N images together.

Each image gets what ``engine.segment`` gives it with the same seed, up to floating-point rounding when several
networks share a pass (``fitting.fit_networks`` describes how; docs/methods.md measures it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from selfseg.engine import SegmentationResult, fit_images, prepare_image
from selfseg.fitting import CPU_BATCH_IMAGES, CUDA_MEMORY_PER_IMAGE_MIB, default_batch_images
from selfseg.settings import check_fits, settings_from_arguments

__all__ = ["CPU_BATCH_IMAGES", "CUDA_MEMORY_PER_IMAGE_MIB", "check_fits", "default_batch_images", "segment_many"]


def _seeds(seed: int | Sequence[int], count: int) -> list[int]:
    """One seed per image: ``seed + i`` for an int, else the sequence itself, which must hold ``count``."""
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"seed must be an int or one per image ({count}), got {len(seeds)}")
    return seeds


def _truths(truth: Sequence[np.ndarray | None] | None, count: int) -> list[np.ndarray | None]:
    """One ground-truth mask (or None) per image; ValueError unless ``truth`` is None or holds ``count``."""
    truths = [None] * count if truth is None else list(truth)
    if len(truths) != count:
        raise ValueError(f"truth must be None or one mask (or None) per image ({count}), got {len(truths)}")
    return truths


def segment_many(
    images: Sequence[np.ndarray],
    method: str = "s3net",
    *,
    seed: int | Sequence[int] = 0,
    batch_images: int | None = None,
    truth: Sequence[np.ndarray | None] | None = None,
    callback: Callable[[int, int, dict[str, float]], None] | None = None,
    fits: int = 1,
    **arguments,
) -> list[SegmentationResult]:
    """``engine.segment`` of each image, up to ``batch_images`` networks fitted in one pass.

    Args:
        images: (H, W) or (H, W, C) arrays of any sizes: images of one channel count and working shape are
            fitted together.
        method: as ``segment``; the baselines run one image at a time.
        seed: an int (image i gets ``seed + i``) or one seed per image.
        batch_images: networks fitted at once; None: ``default_batch_images`` (1 on the CPU).
        truth: None, or one ground-truth mask (or None) per image, for ``foreground="oracle"``.
        callback: called after every iteration with (image index, iteration, record of its ``history``).
        fits: networks fitted to each image (seeds s, s + 1, ...); the result whose mask agrees most with the
            others' is kept, its ``seconds`` the sum over the fits.
        **arguments: any other argument of ``segment``, the same for every image.

    Returns:
        One ``SegmentationResult`` per image, in order.

    Raises:
        ValueError, TypeError: as ``segment``; a bad image's message starts with ``image <index>:``.

    Two discs fitted together give what ``segment`` gives each (here, exactly):

    >>> from selfseg.engine import segment
    >>> yy, xx = np.mgrid[:32, :32]
    >>> discs = [np.where((yy - 16) ** 2 + (xx - c) ** 2 < 8**2, 0.2, 0.9) for c in (12, 20)]
    >>> fast = dict(size=24, max_iter=3, n_channels=8, device="cpu")
    >>> together = segment_many(discs, seed=5, batch_images=2, **fast)
    >>> alone = [segment(disc, seed=5 + i, **fast) for i, disc in enumerate(discs)]
    >>> [bool((a.labels == b.labels).all()) for a, b in zip(together, alone)]
    [True, True]
    """
    settings, rule = settings_from_arguments(method, {**arguments, "fits": fits})
    if batch_images is not None and batch_images < 1:
        raise ValueError(f"batch_images must be at least 1, got {batch_images}")
    prepared = []
    for index, (image, seed_i, mask) in enumerate(zip(images, _seeds(seed, len(images)), _truths(truth, len(images)))):
        try:
            prepared.append(prepare_image(image, rule, seed=seed_i, truth=mask))
        except (ValueError, TypeError) as err:
            raise type(err)(f"image {index}: {err}") from None
    return fit_images(prepared, settings, rule, batch_images=batch_images, callback=callback)
