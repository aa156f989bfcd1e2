"""Writing a label map, mask or overlay back as NIfTI in the space of the volume it came from."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from selfseg import io
from selfseg.optional import optional_import
from selfseg.volumes.base import RGB_DTYPE, Volume

__all__ = ["read_note", "write_volume_like"]


def write_volume_like(path: str | os.PathLike, array: np.ndarray, source: Volume, *, note: str | None = None) -> None:
    """Atomically write a label map, mask or overlay of ``source``'s slices as NIfTI (``.nii``/``.nii.gz``).

    ``array`` is in the volume's slice order: (D, H, W) bool (written as 0/1), uint8 or uint16 (a
    label map or mask), or (D, H, W, 3) uint8 (an overlay, written as NIfTI RGB24). The slices go
    back to the source's axis and the file gets the source's affine; a NIfTI source's header is
    kept (data type, scaling, cal_min/cal_max and intent are set for the new data), a DICOM or TIFF
    source gets a fresh header with the affine as qform and sform (DICOM: scanner coordinates). ``note``: a text
    the file carries (a comment extension, ``read_note``).
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
        packed = np.empty(data.shape[:-1], dtype=RGB_DTYPE)
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
    header.set_data_dtype(RGB_DTYPE if rgb else array.dtype)
    header["cal_min"], header["cal_max"] = 0, 255 if rgb else int(array.max(initial=0))
    header.set_intent("none" if rgb else "label")
    if note is not None:
        header.extensions.append(nib.nifti1.Nifti1Extension("comment", f"{io.NOTE_KEY}:{note}".encode()))
    with io.atomic_path(path) as tmp:
        nib.save(image, tmp)


def read_note(path: str | os.PathLike) -> str | None:
    """The note of a NIfTI file written by ``write_volume_like``; None if it has none or cannot be read."""
    nib = optional_import("nibabel")
    prefix = f"{io.NOTE_KEY}:".encode()
    try:
        extensions = nib.load(path).header.extensions
    except Exception:  # nibabel raises many types for a broken file
        return None
    notes = [ext.get_content() for ext in extensions if ext.get_code() == 6]
    notes = [content for content in notes if isinstance(content, bytes) and content.startswith(prefix)]
    return notes[-1][len(prefix):].rstrip(b"\0").decode("utf-8", "replace") if notes else None
