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
  min-max of the volume; MONOCHROME1 slices are inverted. Colour (RGB, YBR as RGB, PALETTE COLOR through
  its lookup table) is divided by its maximum.
- NIfTI: scaled values (scl_slope, scl_inter) clipped to their 0.5th and 99.5th percentiles over the
  volume and mapped linearly to [0, 1] (a robust min-max: a few hot voxels do not squash the
  contrast). RGB24 volumes are divided by 255.
- TIFF: as ``read_image``: 8 bit / 255, 16 bit / 65535, 32-bit integers / max(max, 65535), float
  min-max, over the whole volume.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np

from selfseg.decoding import ImageReadError, open_image, sniff_format, stat_input
from selfseg.io import IMAGE_SUFFIXES
from selfseg.optional import MissingDependencyError
from selfseg.volumes.base import MAX_VOXELS, Volume
from selfseg.volumes.dicom import read_dicom
from selfseg.volumes.nifti import read_nifti
from selfseg.volumes.tiff import read_tiff
from selfseg.volumes.writer import read_note, write_volume_like

__all__ = ["MAX_VOXELS", "VOLUME_SUFFIXES", "Volume", "is_volume", "read_note", "read_volume", "write_volume_like"]

VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".dcm")


def _is_dicom_file(path: Path) -> bool:
    return path.name.lower().endswith(".dcm") or sniff_format(path) == "DICOM"


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
            if child.suffix.lower() in IMAGE_SUFFIXES:
                continue
            if _is_dicom_file(child):
                return True
        return False
    if name.endswith(VOLUME_SUFFIXES):
        return True
    if not path.is_file():
        return False
    fmt = sniff_format(path)
    if fmt in ("DICOM", "NIfTI"):
        return True
    if fmt == "TIFF":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with open_image(path, path.stat().st_size) as img:
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

    >>> import os, tempfile
    >>> import nibabel as nib
    >>> path = os.path.join(tempfile.mkdtemp(), "cube.nii.gz")
    >>> nib.save(nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), np.eye(4)), path)
    >>> volume = read_volume(path)  # axial slices: NIfTI's third axis
    >>> volume.data.shape, volume.kind, volume.axis, volume.data.dtype
    ((5, 3, 4), 'nifti', 2, dtype('float32'))
    """
    path = Path(path)
    axis = None if axis is None else _normal_axis(axis)
    info = stat_input(path)
    name = path.name.lower()
    try:
        if stat.S_ISDIR(info.st_mode):
            return read_dicom(path, 0 if axis is None else axis)
        if info.st_size == 0:
            raise ImageReadError(path, "empty file")
        fmt = sniff_format(path)
        if name.endswith((".nii", ".nii.gz")) or fmt == "NIfTI":
            return read_nifti(path, 2 if axis is None else axis, info.st_size)
        if name.endswith(".dcm") or fmt == "DICOM":
            return read_dicom(path, 0 if axis is None else axis)
        if name.endswith((".tif", ".tiff")) or fmt == "TIFF":
            return read_tiff(path, 0 if axis is None else axis, info.st_size)
    except MissingDependencyError as err:
        raise ImageReadError(path, str(err)) from err
    raise ImageReadError(
        path, "unsupported format: not a volume (NIfTI .nii/.nii.gz, DICOM file or series folder, multi-frame TIFF)"
    )
