"""What every volume reader shares: the ``Volume`` it returns, the size limits, the float32 layout the
readers fill, and the intensity mappings to [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from selfseg.decoding import (
    ImageReadError,
    size_reason,
)

__all__ = [
    "MAX_VOXELS", "RGBA_DTYPE", "RGB_DTYPE", "Volume", "allocate", "check_size", "finish", "min_max", "percentile_normalise",
]

MAX_VOXELS: int = 2**30
"""Largest volume (slices x height x width) ``read_volume`` decodes: 1,073,741,824 voxels (4 GiB as
float32), checked from the headers before any pixel is decoded. Each slice must also pass
``selfseg.io.MAX_PIXELS`` and be at least 2 x 2."""

_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLE = 1 << 22  # percentiles of larger volumes use every k-th voxel (at least this many)
RGB_DTYPE = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
RGBA_DTYPE = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])

@dataclass(eq=False)
class Volume:
    """A volume as slices: ``data[k]`` is slice k, float32 (H, W) or (H, W, C) in [0, 1].

    ``data`` is (D, H, W) or (D, H, W, C) (C = 3, RGB): the source array with ``axis`` moved to the
    front. The source array is NIfTI's voxel array (i, j, k), or (slice, row, column) for DICOM
    and TIFF; ``affine`` maps its indices to RAS+ millimetres (NIfTI's own; built from
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing for DICOM; diagonal for TIFF).
    ``spacing`` is a slice's pixel size in mm (rows, columns), for metrics; (1.0, 1.0) where the
    file does not say (TIFF). ``voxel_spacing`` is the size along the source array's three axes.
    """

    data: np.ndarray
    spacing: tuple[float, float]
    path: Path
    kind: str  # "dicom", "nifti" or "tiff"
    axis: int
    affine: np.ndarray
    source_shape: tuple[int, ...]  # spatial shape of the source array, as written back
    voxel_spacing: tuple[float, float, float]
    intensity: str = ""  # how values were brought to [0, 1]
    header: Any = None  # NIfTI: a copy of the source header (nibabel)
    files: tuple[Path, ...] = field(default=())  # DICOM: files in slice order

    @property
    def n_slices(self) -> int:
        """Number of slices D."""
        return int(self.data.shape[0])


def check_size(path: Path, spatial: tuple[int, int, int], axis: int, channels: int = 1) -> None:
    """Refuse slices (along ``axis``) under 2x2 or over MAX_PIXELS, volumes without a slice and volumes over
    MAX_VOXELS, before decoding."""
    depth, height, width = spatial[axis], *(spatial[a] for a in range(3) if a != axis)
    reason = size_reason(height, width)
    if reason is not None:
        raise ImageReadError(path, reason)
    if depth < 1:
        raise ImageReadError(path, f"volume must have at least one slice, got {depth}x{height}x{width}")
    voxels = depth * height * width * channels
    if voxels > MAX_VOXELS:
        raise ImageReadError(
            path, f"volume too large: {depth}x{height}x{width} = {voxels} voxels, over the limit of {MAX_VOXELS}"
        )


def allocate(path: Path, spatial: tuple[int, int, int], axis: int, colour: bool) -> tuple[np.ndarray, np.ndarray]:
    """The float32 result in its final layout (D, H, W[, 3]), slices along ``axis`` of the source, and
    a view of it with the source array's shape: readers fill the view, so nothing is copied later."""
    shape = (spatial[axis], *(spatial[a] for a in range(3) if a != axis), *((3,) if colour else ()))
    try:
        data = np.empty(shape, dtype=np.float32)
    except MemoryError:
        raise ImageReadError(path, f"not enough memory for a {'x'.join(map(str, shape))} float32 volume") from None
    return data, np.moveaxis(data, 0, axis)


def finish(
    path: Path, data: np.ndarray, axis: int, kind: str, affine: np.ndarray, voxel_spacing, **extra
) -> Volume:
    """Wrap the normalised slices (from ``allocate``) as a Volume."""
    spacing = tuple(float(voxel_spacing[a]) for a in range(3) if a != axis)
    return Volume(
        data=data, spacing=spacing, path=path, kind=kind, axis=axis, affine=np.asarray(affine, dtype=np.float64),
        voxel_spacing=tuple(float(s) for s in voxel_spacing), **extra,
    )


def min_max(values: np.ndarray) -> str:
    """Map values to [0, 1] by their minimum and maximum, in place; returns a description."""
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:
        values -= lo
        values /= hi - lo
    else:
        np.clip(values, 0.0, 1.0, out=values)
    return f"min-max {lo:g}..{hi:g}"


def percentile_normalise(values: np.ndarray) -> str:
    """Clip to the 0.5th-99.5th percentiles of the volume and map to [0, 1], in place."""
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]
    lo, hi = (float(v) for v in np.percentile(sample, _PERCENTILES))
    if not hi > lo:
        return min_max(values)
    values -= lo
    values /= hi - lo
    np.clip(values, 0.0, 1.0, out=values)
    return f"percentiles {_PERCENTILES[0]:g}-{_PERCENTILES[1]:g}: {lo:g}..{hi:g}"
