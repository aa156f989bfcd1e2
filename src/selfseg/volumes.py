"""Medical volumes: DICOM (files and series folders), NIfTI (.nii, .nii.gz) and multi-frame TIFF.

``read_volume`` gives a :class:`Volume`: float32 slices in [0, 1] stacked along axis 0, ready for
``segment`` one slice at a time, plus what ``write_volume_like`` needs to write the label map, mask or
overlay back as NIfTI in the source's space (affine, header, slice axis). 2-D images stay in
:mod:`selfseg.io`.

pydicom and nibabel are optional (``pip install "selfseg[medical]"``) and imported on first use;
without them ``read_volume`` fails for that file with an :class:`~selfseg.io.ImageReadError` that says
what to install. Every read failure is an ``ImageReadError(path, reason)`` with a one-line reason.

Intensities (``Volume.intensity`` records what was done):

- DICOM: stored values x RescaleSlope + RescaleIntercept (modality units, e.g. HU), then the
  window of the first slice (WindowCenter/WindowWidth, the first value where several are given;
  VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID, DICOM PS3.3 C.11.2.1.2), or, without a window,
  min-max of the volume; MONOCHROME1 slices are inverted. Colour (RGB) is divided by its maximum.
- NIfTI: scaled values (scl_slope, scl_inter) clipped to their 0.5th and 99.5th percentiles over the
  volume and mapped linearly to [0, 1] (a robust min-max: a few hot voxels do not squash the
  contrast). RGB24 volumes are divided by 255.
- TIFF: as ``read_image``: 8 bit / 255, 16 bit / 65535, 32-bit integers / max(max, 65535), float
  min-max, over the whole volume.
"""

from __future__ import annotations

import gzip
import importlib
import math
import os
import stat
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, ImageSequence

from selfseg import io
from selfseg.io import ImageReadError

__all__ = [
    "MAX_VOXELS",
    "VOLUME_SUFFIXES",
    "MissingDependencyError",
    "Volume",
    "is_volume",
    "optional_import",
    "read_volume",
    "write_volume_like",
]

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".dcm")

MAX_VOXELS: int = 2**30
"""Largest volume (slices x height x width) ``read_volume`` decodes: 1,073,741,824 voxels (4 GiB as
float32), checked from the headers before any pixel is decoded. Each slice must also pass
``selfseg.io.MAX_PIXELS`` and be at least 2 x 2."""

_PERCENTILES = (0.5, 99.5)
_PERCENTILE_SAMPLE = 1 << 22  # percentiles of larger volumes use every k-th voxel (at least this many)
_RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
_RGBA = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1"), ("A", "u1")])
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# pip packages that decode each compressed transfer syntax (pydicom's plugins); gdcm for the rest.
_JPEG = "pylibjpeg pylibjpeg-libjpeg"
_J2K = "pylibjpeg pylibjpeg-openjpeg"
_DECODERS = {
    "1.2.840.10008.1.2.4.50": _JPEG, "1.2.840.10008.1.2.4.51": _JPEG, "1.2.840.10008.1.2.4.57": _JPEG,
    "1.2.840.10008.1.2.4.70": _JPEG, "1.2.840.10008.1.2.4.80": _JPEG, "1.2.840.10008.1.2.4.81": _JPEG,
    "1.2.840.10008.1.2.4.90": _J2K, "1.2.840.10008.1.2.4.91": _J2K, "1.2.840.10008.1.2.4.201": _J2K,
    "1.2.840.10008.1.2.4.202": _J2K, "1.2.840.10008.1.2.4.203": _J2K,
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}


class MissingDependencyError(ImportError):
    """An optional package is not installed; the message says what to install."""


def optional_import(name: str) -> ModuleType:
    """Import an optional dependency (``pydicom``, ``nibabel``) or raise :class:`MissingDependencyError`.

    The message names the package and the extra that installs it: ``pip install "selfseg[medical]"``.
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(
            f'{name} is not installed; medical volumes need it: pip install "selfseg[medical]"'
        ) from err


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


# --- discovery ------------------------------------------------------------------------------


def _is_dicom_file(path: Path) -> bool:
    return path.name.lower().endswith(".dcm") or io.sniff_format(path) == "DICOM"


def is_volume(path: str | os.PathLike) -> bool:
    """Whether ``path`` is read by :func:`read_volume` rather than ``io.read_image``.

    True for ``.nii``, ``.nii.gz`` and ``.dcm`` files, files with a DICOM header whatever their
    name, folders holding DICOM files (a series) and TIFF files with more than one frame. Needs
    neither pydicom nor nibabel; reads at most a header per file.
    """
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name.startswith(".") or not child.is_file():
                continue
            if child.suffix.lower() in io.IMAGE_SUFFIXES:
                continue
            if _is_dicom_file(child):
                return True
        return False
    if name.endswith(VOLUME_SUFFIXES):
        return True
    if not path.is_file():
        return False
    fmt = io.sniff_format(path)
    if fmt in ("DICOM", "NIfTI"):
        return True
    if fmt == "TIFF":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as img:
                    return getattr(img, "n_frames", 1) > 1
        except Exception:  # unreadable: read_image reports it
            return False
    return False


def _normal_axis(axis: int) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis <= 2:
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    return int(axis) % 3


def read_volume(path: str | os.PathLike, *, axis: int | None = None) -> Volume:
    """Read a DICOM file or series folder, a NIfTI file or a multi-frame TIFF as a :class:`Volume`.

    ``axis`` picks the source array's axis that becomes the slice axis: default 2 for NIfTI
    (axial for the usual RAS-like orientation), 0 for DICOM and TIFF (the stored slices). The kind
    is taken from the path: a folder is a DICOM series, ``.nii``/``.nii.gz`` NIfTI, ``.dcm`` or a
    DICOM header DICOM, ``.tif``/``.tiff`` or a TIFF header TIFF. Any failure raises
    :class:`~selfseg.io.ImageReadError` with a one-line reason (``docs/formats.md`` lists them).
    """
    path = Path(path)
    axis = None if axis is None else _normal_axis(axis)
    info = io.stat_input(path)
    name = path.name.lower()
    try:
        if stat.S_ISDIR(info.st_mode):
            return _read_dicom(path, 0 if axis is None else axis)
        if info.st_size == 0:
            raise ImageReadError(path, "empty file")
        fmt = io.sniff_format(path)
        if name.endswith((".nii", ".nii.gz")) or fmt == "NIfTI":
            return _read_nifti(path, 2 if axis is None else axis, info.st_size)
        if name.endswith(".dcm") or fmt == "DICOM":
            return _read_dicom(path, 0 if axis is None else axis)
        if name.endswith((".tif", ".tiff")) or fmt == "TIFF":
            return _read_tiff(path, 0 if axis is None else axis, info.st_size)
    except MissingDependencyError as err:
        raise ImageReadError(path, str(err)) from err
    raise ImageReadError(
        path, "unsupported format: not a volume (NIfTI .nii/.nii.gz, DICOM file or series folder, multi-frame TIFF)"
    )


# --- shared helpers -------------------------------------------------------------------------


def _check_shape(path: Path, spatial: tuple[int, int, int], axis: int, channels: int = 1) -> None:
    """Refuse slices (along ``axis``) under 2x2 or over MAX_PIXELS and volumes over MAX_VOXELS, before decoding."""
    depth, height, width = spatial[axis], *(spatial[a] for a in range(3) if a != axis)
    reason = io._size_reason(height, width)
    if reason is not None:
        raise ImageReadError(path, reason)
    voxels = depth * height * width * channels
    if voxels > MAX_VOXELS:
        raise ImageReadError(
            path, f"volume too large: {depth}x{height}x{width} = {voxels} voxels, over the limit of {MAX_VOXELS}"
        )


def _allocate(path: Path, spatial: tuple[int, int, int], axis: int, colour: bool) -> tuple[np.ndarray, np.ndarray]:
    """The float32 result in its final layout (D, H, W[, 3]), slices along ``axis`` of the source, and
    a view of it with the source array's shape: readers fill the view, so nothing is copied later."""
    shape = (spatial[axis], *(spatial[a] for a in range(3) if a != axis), *((3,) if colour else ()))
    try:
        data = np.empty(shape, dtype=np.float32)
    except MemoryError:
        raise ImageReadError(path, f"not enough memory for a {'x'.join(map(str, shape))} float32 volume") from None
    return data, np.moveaxis(data, 0, axis)


def _finish(
    path: Path, data: np.ndarray, axis: int, kind: str, affine: np.ndarray, voxel_spacing, **extra
) -> Volume:
    """Wrap the normalised slices (from ``_allocate``) as a Volume."""
    spacing = tuple(float(voxel_spacing[a]) for a in range(3) if a != axis)
    return Volume(
        data=data, spacing=spacing, path=path, kind=kind, axis=axis, affine=np.asarray(affine, dtype=np.float64),
        voxel_spacing=tuple(float(s) for s in voxel_spacing), **extra,
    )


def _min_max(values: np.ndarray) -> str:
    """Map values to [0, 1] by their minimum and maximum, in place; returns a description."""
    lo, hi = float(values.min()), float(values.max())
    if hi > lo:
        values -= lo
        values /= hi - lo
    else:
        np.clip(values, 0.0, 1.0, out=values)
    return f"min-max {lo:g}..{hi:g}"


def _percentile_normalise(values: np.ndarray) -> str:
    """Clip to the 0.5th-99.5th percentiles of the volume and map to [0, 1], in place."""
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.size // _PERCENTILE_SAMPLE)]
    lo, hi = (float(v) for v in np.percentile(sample, _PERCENTILES))
    if not hi > lo:
        return _min_max(values)
    values -= lo
    values /= hi - lo
    np.clip(values, 0.0, 1.0, out=values)
    return f"percentiles {_PERCENTILES[0]:g}-{_PERCENTILES[1]:g}: {lo:g}..{hi:g}"


# --- NIfTI ----------------------------------------------------------------------------------


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


def _read_nifti(path: Path, axis: int, size: int) -> Volume:
    nib = optional_import("nibabel")
    try:
        img = nib.load(path)
    except Exception as err:  # nibabel raises ImageFileError, HeaderDataError, OSError, ...
        raise ImageReadError(path, _nifti_failure(path, err)) from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageReadError(path, f"unsupported format: {type(img).__name__}, not NIfTI-1 or NIfTI-2")
    shape = tuple(int(n) for n in img.shape)
    dtype = img.get_data_dtype()
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
    rgb = dtype in (_RGB, _RGBA)
    _check_shape(path, spatial, axis, 3 if rgb else 1)
    proxy = img.dataobj
    offset = getattr(proxy, "offset", None)
    if offset is not None and not path.name.lower().endswith(".gz"):  # the size says if the data is all there
        if size < int(offset) + math.prod(shape) * dtype.itemsize:
            raise ImageReadError(path, "cannot decode image: truncated file")
    slope = float(getattr(proxy, "slope", 1.0))
    inter = float(getattr(proxy, "inter", 0.0))
    try:
        # The stored values in their own type (a memory map for .nii): no float64 copy of the volume.
        raw = proxy.get_unscaled() if hasattr(proxy, "get_unscaled") else np.asarray(proxy)
    except EOFError:
        raise ImageReadError(path, "cannot decode image: truncated file") from None
    except (OSError, ValueError, zlib.error) as err:
        raise ImageReadError(path, f"cannot decode image: corrupt NIfTI data ({io._decode_reason(err)})") from None
    raw = raw.reshape(spatial)
    data, source = _allocate(path, spatial, axis, rgb)
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
        intensity = _percentile_normalise(data)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    zooms = (zooms + (1.0, 1.0, 1.0))[:3]
    return _finish(
        path, data, axis, "nifti", img.affine, zooms,
        source_shape=shape[:2] if len(shape) == 2 else spatial, header=img.header.copy(), intensity=intensity,
    )


# --- DICOM ----------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A DICOM numeric value (the first of several) as float, or None when absent or empty."""
    value = _first(value)
    try:
        return None if value is None or str(value).strip() == "" else float(value)
    except (TypeError, ValueError):
        return None


def _first(value: Any) -> Any:
    """First item of a multi-valued DICOM element, or the value itself."""
    if value is None or isinstance(value, (str, bytes)):
        return value
    try:
        return value[0] if len(value) else None
    except TypeError:
        return value


def _shared(ds: Any, sequence: str, keyword: str) -> Any:
    """``keyword`` at the top level or in the shared functional groups (enhanced multi-frame files)."""
    if keyword in ds:
        return ds.get(keyword)
    try:
        return ds.SharedFunctionalGroupsSequence[0][sequence][0].get(keyword)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def _frame_positions(ds: Any, frames: int) -> list[np.ndarray] | None:
    """Per-frame ImagePositionPatient of an enhanced multi-frame file, or None."""
    try:
        groups = ds.PerFrameFunctionalGroupsSequence
        positions = [np.asarray(g.PlanePositionSequence[0].ImagePositionPatient, dtype=float) for g in groups]
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return None
    return positions if len(positions) == frames else None


def _decoder_reason(ds: Any, err: BaseException) -> str:
    """One line for compressed pixel data that could not be decoded: transfer syntax and what to install."""
    uid = ds.file_meta.TransferSyntaxUID
    packages = _DECODERS.get(str(uid), "python-gdcm")
    available = None
    try:  # pydicom >= 3 knows which decoders are usable
        from pydicom.pixels import get_decoder

        available = get_decoder(uid).is_available
    except Exception:  # pydicom 2.4 says so in its message
        message = str(err).lower()
        if ("missing" in message and "dependencies" in message) or "no pixel data handlers" in message:
            available = False
    what = f"cannot decode pixel data compressed as {uid.name} ({uid})"
    if available is False:
        return f"{what}: no decoder installed; pip install {packages}"
    return f"{what}: corrupt data or a variant the installed decoders cannot read; pip install {packages}"


def _dicom_pixels(pydicom: ModuleType, file: Path, expect: tuple[int, int, int]) -> tuple[Any, np.ndarray]:
    """Read one DICOM file's dataset and pixels (frames, rows, columns[, 3]) in the stored type."""
    try:
        ds = pydicom.dcmread(file)
    except Exception as err:
        raise ImageReadError(file, f"cannot decode image: corrupt DICOM data ({io._decode_reason(err)})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ImageReadError(file, "no pixel data in DICOM file (truncated, or not an image object)")
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if uid is None:
        raise ImageReadError(file, "cannot decode image: corrupt DICOM data (no transfer syntax in the file meta)")
    frames, rows, columns = expect
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if not uid.is_compressed and "PixelData" in ds:
        bits = int(ds.get("BitsAllocated", 16) or 16)
        needed = (frames * rows * columns * samples * bits + 7) // 8
        if len(ds.PixelData) < needed:
            raise ImageReadError(file, "cannot decode image: truncated file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = np.asarray(ds.pixel_array)
    except Exception as err:
        if uid.is_compressed:
            raise ImageReadError(file, _decoder_reason(ds, err)) from None
        raise ImageReadError(file, f"cannot decode image: corrupt DICOM data ({io._decode_reason(err)})") from None
    channels = (3,) if samples == 3 else ()
    return ds, pixels.reshape((frames, rows, columns, *channels))


def _series(pydicom: ModuleType, path: Path) -> list[tuple[Path, Any]]:
    """(file, header) of each DICOM image file of a file or a series folder, unsorted."""
    if not path.is_dir():
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            raise ImageReadError(path, "cannot decode image: not a DICOM file") from None
        except Exception as err:
            reason = f"cannot decode image: corrupt DICOM header ({io._decode_reason(err)})"
            raise ImageReadError(path, reason) from None
        if "Rows" not in header:
            raise ImageReadError(path, "no pixel data in DICOM file (truncated, or not an image object)")
        return [(path, header)]
    found = []
    for file in sorted(path.iterdir()):
        if file.name.startswith(".") or not file.is_file() or file.name.upper() == "DICOMDIR":
            continue
        if file.stat().st_size == 0:
            if file.name.lower().endswith(".dcm"):
                raise ImageReadError(file, "empty file")
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:  # notes, thumbnails, ... beside the series
            if file.name.lower().endswith(".dcm"):
                raise ImageReadError(file, "cannot decode image: not a DICOM file") from None
            continue
        except Exception as err:
            reason = f"cannot decode image: corrupt DICOM header ({io._decode_reason(err)})"
            raise ImageReadError(file, reason) from None
        if "Rows" in header:  # skip reports, presentation states and other non-image objects
            found.append((file, header))
    if not found:
        raise ImageReadError(path, "no DICOM image files in the folder")
    return found


def _sort_series(path: Path, items: list[tuple[Path, Any]]) -> tuple[list[tuple[Path, Any]], list[np.ndarray] | None]:
    """Check that the files form one series and order them; returns them and their positions if known."""
    def distinct(keyword: str) -> list:
        return sorted({str(h.get(keyword)) for _, h in items if h.get(keyword) is not None})

    series = distinct("SeriesInstanceUID")
    if len(series) > 1:
        raise ImageReadError(
            path, f"mixed DICOM series: the folder holds {len(series)} series (SeriesInstanceUID "
            f"{', '.join(series[:3])}{', ...' if len(series) > 3 else ''}); put each series in its own folder",
        )
    sizes = sorted({(int(h.Rows), int(h.Columns)) for _, h in items})
    if len(sizes) > 1:
        shown = " and ".join(f"{r}x{c}" for r, c in sizes[:2])
        raise ImageReadError(path, f"mixed DICOM series: slices of different sizes ({shown} pixels)")
    if len(distinct("SamplesPerPixel")) > 1:
        raise ImageReadError(path, "mixed DICOM series: slices with different colour types")
    for file, header in items:
        frames = int(header.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageReadError(
                path,
                f"mixed DICOM series: {file.name} has {frames} frames; a series folder must hold single-frame slices",
            )
    if len(items) == 1:
        return items, None
    orientations = [_shared(h, "PlaneOrientationSequence", "ImageOrientationPatient") for _, h in items]
    positions = [_shared(h, "PlanePositionSequence", "ImagePositionPatient") for _, h in items]
    known = all(o is not None and len(o) == 6 for o in orientations)
    if known and all(p is not None and len(p) == 3 for p in positions):
        orient = np.asarray([[float(v) for v in o] for o in orientations])
        if np.abs(orient - orient[0]).max() > 1e-3:
            reason = "mixed DICOM series: slices with different orientations (ImageOrientationPatient)"
            raise ImageReadError(path, reason)
        normal = np.cross(orient[0, :3], orient[0, 3:])
        where = np.asarray([[float(v) for v in p] for p in positions])
        keys = where @ normal
        order = np.argsort(keys, kind="stable")
        gaps = np.diff(keys[order])
        if np.any(np.abs(gaps) < 1e-3):
            k = int(np.flatnonzero(np.abs(gaps) < 1e-3)[0])
            a, b = items[order[k]][0].name, items[order[k + 1]][0].name
            raise ImageReadError(path, f"mixed DICOM series: {a} and {b} are at the same position")
        return [items[i] for i in order], [where[i] for i in order]
    numbers = [h.get("InstanceNumber") for _, h in items]
    if any(n is None or str(n).strip() == "" for n in numbers):
        raise ImageReadError(path, "cannot order the DICOM slices: ImagePositionPatient and InstanceNumber are missing")
    numbers = [int(n) for n in numbers]
    if len(set(numbers)) < len(numbers):
        raise ImageReadError(path, "mixed DICOM series: two slices share an InstanceNumber and have no position")
    order = np.argsort(numbers, kind="stable")
    return [items[i] for i in order], None


def _window(values: np.ndarray, center: float, width: float, function: str) -> None:
    """DICOM VOI window (PS3.3 C.11.2.1.2) onto [0, 1], in place."""
    if function == "SIGMOID":
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        np.reciprocal(values, out=values)
        return
    if function == "LINEAR_EXACT":
        values -= center
        values /= width
        values += 0.5
    elif width > 1:
        values -= center - 0.5
        values /= width - 1
        values += 0.5
    else:
        np.greater(values, center - 0.5, out=values)
    np.clip(values, 0.0, 1.0, out=values)


def _read_dicom(path: Path, axis: int) -> Volume:
    pydicom = optional_import("pydicom")
    optional_import("pydicom.errors")
    items = _series(pydicom, path)
    items, positions = _sort_series(path, items) if len(items) > 1 else (items, None)
    first = items[0][1]
    rows, columns = int(first.Rows), int(first.Columns)
    frames = int(first.get("NumberOfFrames", 1) or 1) if len(items) == 1 else 1
    depth = frames * len(items)
    photometric = str(first.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    samples = int(first.get("SamplesPerPixel", 1) or 1)
    colour = samples == 3 and (photometric == "RGB" or photometric.startswith("YBR"))
    if not colour and (photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1):
        reason = f"unsupported format: DICOM photometric interpretation {photometric} (SamplesPerPixel {samples})"
        raise ImageReadError(items[0][0], reason)
    _check_shape(path, (depth, rows, columns), axis, 3 if colour else 1)
    data, source = _allocate(path, (depth, rows, columns), axis, colour)
    inverted = np.zeros(depth, dtype=bool)
    top = 0.0
    for index, (file, _) in enumerate(items):
        ds, pixels = _dicom_pixels(pydicom, file, (frames, rows, columns))
        block = source[index * frames : (index + 1) * frames]
        block[...] = pixels
        if pixels.dtype.kind == "f" and not np.isfinite(block).all():
            raise ImageReadError(file, "contains NaN or infinite values")
        if colour:
            top = max(top, float(2 ** int(ds.get("BitsStored", 8) or 8) - 1))
            continue
        slope = _number(_shared(ds, "PixelValueTransformationSequence", "RescaleSlope")) or 1.0
        intercept = _number(_shared(ds, "PixelValueTransformationSequence", "RescaleIntercept")) or 0.0
        if slope != 1.0 or intercept != 0.0:
            block *= slope
            block += intercept
        inverted[index * frames : (index + 1) * frames] = (
            str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
        )
    if colour:
        data /= top
        intensity = f"RGB / {top:g}"
    else:
        center = _number(_shared(first, "FrameVOILUTSequence", "WindowCenter"))
        width = _number(_shared(first, "FrameVOILUTSequence", "WindowWidth"))
        function = str(first.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if center is not None and width is not None and width >= 1:
            _window(data, center, width, function)
            intensity = f"window center {center:g} width {width:g}"
        else:
            intensity = _min_max(data)
        if inverted.any():
            source[inverted] = 1.0 - source[inverted]
            intensity += ", MONOCHROME1 inverted"
    if positions is None and frames > 1:
        positions = _frame_positions(first, frames)
    affine, voxel_spacing = _dicom_affine(first, positions, depth)
    return _finish(
        path, data, axis, "dicom", affine, voxel_spacing,
        source_shape=(depth, rows, columns), intensity=intensity, files=tuple(file for file, _ in items),
    )


def _dicom_affine(
    ds: Any, positions: list[np.ndarray] | None, depth: int
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Affine of (slice, row, column) indices -> RAS+ mm, and the voxel size along those axes."""
    spacing = _shared(ds, "PixelMeasuresSequence", "PixelSpacing") or ds.get("ImagerPixelSpacing")
    row_mm, col_mm = (float(spacing[0]), float(spacing[1])) if spacing is not None and len(spacing) == 2 else (1.0, 1.0)
    orientation = _shared(ds, "PlaneOrientationSequence", "ImageOrientationPatient")
    if orientation is not None and len(orientation) == 6:
        along_row = np.asarray([float(v) for v in orientation[:3]])  # direction of increasing column
        along_col = np.asarray([float(v) for v in orientation[3:]])  # direction of increasing row
    else:
        along_row, along_col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    normal = np.cross(along_row, along_col)
    origin = _shared(ds, "PlanePositionSequence", "ImagePositionPatient")
    origin = np.asarray([float(v) for v in origin]) if origin is not None and len(origin) == 3 else np.zeros(3)
    if positions is not None and len(positions) == depth and depth > 1:
        origin = positions[0]
        step = (positions[-1] - positions[0]) / (depth - 1)
    else:
        thickness = _number(ds.get("SpacingBetweenSlices")) or _number(
            _shared(ds, "PixelMeasuresSequence", "SliceThickness")
        )
        step = normal * (thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = step
    lps[:3, 1] = along_col * row_mm
    lps[:3, 2] = along_row * col_mm
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps, (float(np.linalg.norm(step)), row_mm, col_mm)


# --- multi-frame TIFF -----------------------------------------------------------------------


def _tiff_frames(path: Path, img: Image.Image, axis: int) -> tuple[np.ndarray, str, np.dtype]:
    """All frames of an open multi-frame image, in their own scale (layout of ``_allocate``); mode; stored dtype."""
    height, width, mode = img.height, img.width, img.mode
    if mode not in io._MODES:
        raise ImageReadError(path, f"unsupported format: {img.format} with pixel mode {mode}")
    depth = int(getattr(img, "n_frames", 1))
    colour = mode not in io._GREY_MODES and not mode.startswith("I") and mode != "F"
    _check_shape(path, (depth, height, width), axis, 3 if colour else 1)
    data, source = _allocate(path, (depth, height, width), axis, colour)
    raw_dtype = None
    for k, frame in enumerate(ImageSequence.Iterator(img)):
        if (frame.height, frame.width, frame.mode) != (height, width, mode):
            raise ImageReadError(
                path, f"frames differ: frame {k} is {frame.height}x{frame.width} {frame.mode}, "
                f"frame 0 is {height}x{width} {mode}",
            )
        raw = io._raw_pixels(frame)
        raw_dtype = raw.dtype
        source[k] = raw
    return data, mode, raw_dtype


def _read_tiff(path: Path, axis: int, size: int) -> Volume:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = Image.open(path)
        except Exception as err:
            raise ImageReadError(path, io._failure_reason(path, size, err)) from None
        with img:
            try:
                data, mode, raw_dtype = _tiff_frames(path, img, axis)
            except ImageReadError:
                raise
            except Exception as err:  # a frame (or the frame count) that cannot be decoded
                raise ImageReadError(path, io._failure_reason(path, size, err, img.format or "TIFF")) from err
    if raw_dtype.kind in "ub":
        data /= np.float32(255 if raw_dtype.itemsize == 1 else 65535)
        intensity = f"/ {255 if raw_dtype.itemsize == 1 else 65535}"
    else:
        if not np.isfinite(data).all():
            raise ImageReadError(path, "contains NaN or infinite values")
        io._scale(data, mode)
        intensity = "min-max" if mode == "F" else "/ max(max, 65535)"
    return _finish(
        path, data, axis, "tiff", np.eye(4), (1.0, 1.0, 1.0),
        source_shape=tuple(np.moveaxis(data, 0, axis).shape[:3]), intensity=intensity,
    )


# --- writing --------------------------------------------------------------------------------


def write_volume_like(path: str | os.PathLike, array: np.ndarray, source: Volume) -> None:
    """Atomically write a label map, mask or overlay of ``source``'s slices as NIfTI (``.nii``/``.nii.gz``).

    ``array`` is in the volume's slice order: (D, H, W) bool (written as 0/1), uint8 or uint16 (a
    label map or mask), or (D, H, W, 3) uint8 (an overlay, written as NIfTI RGB24). The slices go
    back to the source's axis and the file gets the source's affine; a NIfTI source's header is
    kept (data type, scaling, cal_min/cal_max and intent are set for the new data), a DICOM or TIFF
    source gets a fresh header with the affine as qform and sform (DICOM: scanner coordinates).
    """
    nib = optional_import("nibabel")
    path = Path(path)
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        raise ValueError(f"write_volume_like writes NIfTI: the name must end in .nii or .nii.gz, got {path.name}")
    array = np.asarray(array)
    expected = tuple(source.data.shape[:3])
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if array.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_volume_like expects a bool, uint8 or uint16 array, got dtype {array.dtype}")
    rgb = array.shape == (*expected, 3) and array.dtype == np.uint8
    if array.shape != expected and not rgb:
        shapes = f"{expected} or, for uint8 RGB, {(*expected, 3)}"
        raise ValueError(f"write_volume_like expects an array of shape {shapes}, got shape {array.shape}")
    data = np.moveaxis(array, 0, source.axis)
    if len(source.source_shape) == 2:
        data = data[:, :, 0]
    if rgb:
        packed = np.empty(data.shape[:-1], dtype=_RGB)
        for c, channel in enumerate("RGB"):
            packed[channel] = data[..., c]
        data = packed
    if source.header is not None:
        header = source.header.copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        image = image_class(data, source.affine, header=header)
    else:
        image = nib.Nifti1Image(data, source.affine)
        code = 1 if source.kind == "dicom" else 2  # scanner coordinates / aligned to nothing in particular
        image.set_qform(source.affine, code=code)
        image.set_sform(source.affine, code=code)
        image.header.set_xyzt_units("mm")
    header = image.header
    header.set_data_dtype(_RGB if rgb else array.dtype)
    header["cal_min"], header["cal_max"] = 0, 255 if rgb else int(array.max(initial=0))
    header.set_intent("none" if rgb else "label")
    with io.atomic_path(path) as tmp:
        nib.save(image, tmp)
