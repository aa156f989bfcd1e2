"""NIfTI-1 and NIfTI-2 (.nii, .nii.gz) volumes, read with nibabel."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from selfseg.decoding import (
    DEFLATE_RATIO,
    ImageReadError,
    decode_reason,
)
from selfseg.optional import optional_import
from selfseg.volumes.base import (
    RGB_DTYPE,
    RGBA_DTYPE,
    Volume,
    allocate,
    check_size,
    finish,
    percentile_normalise,
)

__all__ = ["read_nifti"]


def _nifti_failure(path: Path, err: BaseException) -> str:
    """Reason for a NIfTI file nibabel could not open: truncated, not NIfTI, or a corrupt header."""
    try:
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            head = f.read(544)
    except EOFError:
        return "cannot decode image: truncated file"
    except (OSError, zlib.error):  # not gzip data
        return "cannot decode image: not a NIfTI file"
    if head[344:348] in (b"n+1\0", b"ni1\0") or head[4:12] == b"n+2\0\r\n\x1a\n":
        if len(head) < (540 if head[4:7] == b"n+2" else 348):
            return "cannot decode image: truncated file"
        return f"cannot decode image: corrupt NIfTI header ({' '.join(str(err).split()) or type(err).__name__})"
    if len(head) < 348 and head[:4] in (b"\x5c\x01\0\0", b"\0\0\x01\x5c", b"\x1c\x02\0\0", b"\0\0\x02\x1c"):
        return "cannot decode image: truncated file"  # sizeof_hdr says NIfTI, the magic is cut off
    return "cannot decode image: not a NIfTI file"


def _spatial_shape(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, int, int]:
    """The (X, Y, Z) shape a NIfTI of ``shape`` and ``dtype`` is read as; ImageReadError for what is not read."""
    if len(shape) == 2:
        spatial = (*shape, 1)
    elif len(shape) == 3 or (len(shape) >= 4 and all(n == 1 for n in shape[3:])):
        spatial = shape[:3]
    else:
        raise ImageReadError(
            path, f"unsupported format: {len(shape)}-D NIfTI of shape {shape}; only 2-D and 3-D volumes are read"
        )
    if dtype.names is None and dtype.kind not in "biuf":
        raise ImageReadError(path, f"unsupported format: NIfTI data type {dtype}")
    return spatial


def read_nifti(path: Path, axis: int, size: int) -> Volume:
    nib = optional_import("nibabel")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, ...
        raise ImageReadError(path, _nifti_failure(path, err)) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageReadError(path, f"unsupported format: {type(img).__name__}, not NIfTI-1 or NIfTI-2")
    shape = tuple(int(n) for n in img.shape)
    dtype = img.get_data_dtype()
    spatial = _spatial_shape(path, shape, dtype)
    rgb = dtype in (RGB_DTYPE, RGBA_DTYPE)
    check_size(path, spatial, axis, 3 if rgb else 1)
    proxy = img.dataobj
    offset = getattr(proxy, "offset", None)
    if offset is not None:  # the size says if the data can all be there (.nii.gz: at deflate's largest ratio)
        ratio = DEFLATE_RATIO if path.name.lower().endswith(".gz") else 1
        if size * ratio < int(offset) + math.prod(shape) * dtype.itemsize:
            raise ImageReadError(path, "cannot decode image: truncated file")
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    try:
        # The stored values in their own type (a memory map for .nii): no float64 copy of the volume.
        raw = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
    except EOFError:
        raise ImageReadError(path, "cannot decode image: truncated file") from None
    except (OSError, ValueError, zlib.error) as err:
        raise ImageReadError(path, f"cannot decode image: corrupt NIfTI data ({decode_reason(err)})") from None
    raw = raw.reshape(spatial)
    data, source = allocate(path, spatial, axis, rgb)
    floating = dtype.names is None and dtype.kind == "f"
    for k in range(spatial[2]):  # one slab along the file's slowest axis at a time
        slab = raw[:, :, k]
        if rgb:
            for c, channel in enumerate("RGB"):
                source[:, :, k, c] = slab[channel]
            continue
        target = source[:, :, k]
        target[...] = slab
        if floating and not np.isfinite(target).all():
            raise ImageReadError(path, "contains NaN or infinite values")
        if slope != 1.0 or inter != 0.0:
            target *= slope
            target += inter
    del raw
    if rgb:
        data /= 255.0
        intensity = "RGB / 255"
    else:
        intensity = percentile_normalise(data)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = (zooms + (1.0, 1.0, 1.0))[:3]
    return finish(
        path, data, axis, "nifti", img.affine, zooms,
        source_shape=shape[:2] if len(shape) == 2 else spatial, header=img.header.copy(), intensity=intensity,
    )
