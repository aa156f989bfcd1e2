"""Multi-frame TIFF volumes, read with Pillow like ``io.read_image`` reads one frame."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

from selfseg.decoding import (
    GREY_MODES,
    MODES,
    ImageReadError,
    failure_reason,
    least_bytes,
    open_image,
    raw_pixels,
    rescale,
)
from selfseg.volumes.base import (
    Volume,
    allocate,
    check_size,
    finish,
)

__all__ = ["read_tiff"]


def _tiff_frames(path: Path, size: int, img: Image.Image, axis: int) -> tuple[np.ndarray, str, np.dtype]:
    """All frames of an open multi-frame image, in their own scale (layout of ``allocate``); mode; stored dtype."""
    height, width, mode = img.height, img.width, img.mode
    if mode not in MODES:
        raise ImageReadError(path, f"unsupported format: {img.format} with pixel mode {mode}")
    depth = int(getattr(img, "n_frames", 1))
    colour = mode not in GREY_MODES and not mode.startswith("I") and mode != "F"
    check_size(path, (depth, height, width), axis, 3 if colour else 1)
    if depth * least_bytes(img, size) > size:  # every frame's pixels cannot be in the file: allocate nothing
        raise ImageReadError(path, "cannot decode image: truncated file")
    data, source = allocate(path, (depth, height, width), axis, colour)
    raw_dtype = None
    for k, frame in enumerate(ImageSequence.Iterator(img)):
        if (frame.height, frame.width, frame.mode) != (height, width, mode):
            raise ImageReadError(
                path, f"frames differ: frame {k} is {frame.height}x{frame.width} {frame.mode}, "
                f"frame 0 is {height}x{width} {mode}",
            )
        raw = raw_pixels(frame)
        raw_dtype = raw.dtype
        source[k] = raw
    return data, mode, raw_dtype


def read_tiff(path: Path, axis: int, size: int) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_image(path, size) as img:
            try:
                data, mode, raw_dtype = _tiff_frames(path, size, img, axis)
            except ImageReadError:
                raise
            except Exception as err:  # a frame (or the frame count) that cannot be decoded
                raise ImageReadError(path, failure_reason(path, size, err, img.format or "TIFF")) from err
    if raw_dtype.kind in "ub":
        data /= np.float32(255 if raw_dtype.itemsize == 1 else 65535)
        intensity = f"/ {255 if raw_dtype.itemsize == 1 else 65535}"
    else:
        if not np.isfinite(data).all():
            raise ImageReadError(path, "contains NaN or infinite values")
        rescale(data, mode)
        intensity = "min-max" if mode == "F" else "/ max(max, 65535)"
    return finish(
        path, data, axis, "tiff", np.eye(4), (1.0, 1.0, 1.0),
        source_shape=tuple(np.moveaxis(data, 0, axis).shape[:3]), intensity=intensity,
    )
