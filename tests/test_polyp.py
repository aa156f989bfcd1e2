"""The polyp prior (selfseg.foreground.polyp), on a synthetic endoscope frame and the shared images."""

from __future__ import annotations

import numpy as np
import pytest

from selfseg.foreground import resolve_target, select_foreground
from selfseg.foreground.polyp import endoscope_field, looks_endoscopic, polyp_mask
from selfseg.io import read_image
from selfseg.metrics import dice

MUCOSA = (0.75, 0.40, 0.30)  # red-orange, CIELAB a* and b* well above 12
POLYP = (0.90, 0.65, 0.50)  # brighter and yellower than the mucosa


def _endoscope_frame(height: int = 120, width: int = 140) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image (H, W, 3), cluster map (H, W): 1 frame, 2 mucosa, 3 polyp, 4 a dark fold, polyp truth (H, W))."""
    yy, xx = np.mgrid[:height, :width]
    cut = 0.25 * (height + width) / 2  # an octagon: the corners cut off diagonally
    field = (np.minimum(yy, height - 1 - yy) + np.minimum(xx, width - 1 - xx) >= cut) & (xx > 8)
    polyp = (yy - 55) ** 2 + (xx - 75) ** 2 < 18**2
    fold = field & (np.abs(yy - 100) < 3)  # a thin dark line: cut by the opening
    labels = np.where(field, 2, 1)
    labels[polyp] = 3
    labels[fold] = 4
    image = np.zeros((height, width, 3))
    image[field] = MUCOSA
    image[polyp] = POLYP
    image[fold] = 0.3
    image[5:12, 2:6] = 1.0  # white text on the frame
    return image, labels, polyp


def test_endoscope_field_leaves_out_the_frame_and_its_text() -> None:
    image, labels, _ = _endoscope_frame()
    field = endoscope_field(image)
    assert not field[:12, :8].any()
    assert field[60, 70] and (field & (labels == 1)).sum() == 0


def test_looks_endoscopic_needs_black_corners_and_red_mucosa() -> None:
    image, _, _ = _endoscope_frame()
    assert looks_endoscopic(image)
    assert not looks_endoscopic(image.mean(axis=2))  # grey: CT or X-ray
    pale = np.where(image.any(axis=2, keepdims=True), 0.8, 0.0)  # black corners, unsaturated field
    assert not looks_endoscopic(pale)
    full = np.broadcast_to(np.array(MUCOSA), image.shape)  # red field to the corners: no frame
    assert not looks_endoscopic(full)


def test_polyp_mask_finds_the_bright_central_blob() -> None:
    image, labels, polyp = _endoscope_frame()
    mask = polyp_mask(labels, image)
    assert dice(mask, polyp) > 0.95


def test_auto_target_takes_the_polyp_prior_on_an_endoscope_frame() -> None:
    image, labels, polyp = _endoscope_frame()
    assert resolve_target(image) == "polyp"
    mask, chosen = select_foreground(labels, image)
    assert chosen == "polyp" and dice(mask, polyp) > 0.95


def test_polyp_mask_is_empty_without_a_candidate() -> None:
    image, _, _ = _endoscope_frame()
    assert not polyp_mask(np.ones(image.shape[:2], dtype=int), image).any()


@pytest.mark.parametrize(("folder", "endoscopic"), [("kvasir-seg", True), ("isic2018", False), ("ham10000", False)])
def test_shared_frames_are_told_apart(shared_data, folder: str, endoscopic: bool) -> None:
    paths = sorted((shared_data / folder / "images").iterdir())
    found = [looks_endoscopic(read_image(path)) for path in paths[:30]]
    assert found == [endoscopic] * len(found)
