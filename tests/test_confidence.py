"""Ground-truth-free mask confidence: a mask on a real boundary scores above one that is not."""

from __future__ import annotations

import numpy as np
import pytest

from selfseg.confidence import mask_confidence


def _scene(height: int = 80, width: int = 100) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (height / 4) ** 2
    noise = np.random.default_rng(0).normal(0, 0.04, disc.shape)
    return disc, np.clip(np.where(disc, 0.35, 0.75) + noise, 0, 1)


def test_the_true_region_scores_highest() -> None:
    disc, image = _scene()
    true = mask_confidence(disc, image)
    shifted = mask_confidence(np.roll(disc, 25, axis=1), image)
    grown = mask_confidence(np.ones_like(disc) & (np.mgrid[:80, :100][1] < 70), image)
    assert 0.8 < true < 1 and shifted < true - 0.3 and grown < true - 0.3
    colour = np.repeat(image[..., None], 3, axis=2)
    assert mask_confidence(disc, colour) == pytest.approx(true)


def test_empty_and_full_masks_and_shapes() -> None:
    disc, image = _scene()
    assert mask_confidence(np.zeros_like(disc), image) == 0.0
    assert mask_confidence(np.ones_like(disc), image) == 0.0
    with pytest.raises(ValueError, match=r"image must have shape \(80, 100\) or \(80, 100, C\), got \(80, 99\)"):
        mask_confidence(disc, image[:, :99])


def test_large_images_are_measured_at_the_work_size() -> None:
    disc, image = _scene(800, 1000)  # measured on a 205 x 256 copy
    assert mask_confidence(disc, image) > 0.8 > mask_confidence(np.roll(disc, 250, axis=1), image)
