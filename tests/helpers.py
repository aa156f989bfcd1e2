"""Test helpers shared by several test modules (tiny synthetic inputs)."""

from __future__ import annotations

import importlib.util
import itertools
import struct
import zlib
from pathlib import Path
from types import ModuleType

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from selfseg.engine import SegmentationResult
from selfseg.runner.manifest import PacedSave

DOCS = Path(__file__).resolve().parents[1] / "docs"


def docs_script(name: str) -> ModuleType:
    """docs/NAME.py, a script that writes a page's tables, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def disc_image(height: int = 30, width: int = 40) -> np.ndarray:
    """(height, width, 3) float32: a dark brown disc (radius a quarter of the shorter side) on light skin."""
    yy, xx = np.mgrid[:height, :width]
    disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 4) ** 2
    image = np.full((height, width, 3), 0.85, dtype=np.float32)
    image[disc] = (0.35, 0.2, 0.15)
    return image


# --- volumes written here (DICOM, NIfTI) ---------------------------------------------------

UID = "1.2.826.0.1.3680043.8.498"
SLICE = np.array([[0, 10, 20, 30], [40, 50, 60, 70], [80, 90, 100, 110]], dtype=np.int16)  # 3 x 4


def write_dicom(
    path,
    pixels: np.ndarray = SLICE,
    *,
    n: int = 1,
    position=None,
    instance=None,
    series: str = f"{UID}.1",
    slope=None,
    intercept=None,
    center=None,
    width=None,
    photometric: str = "MONOCHROME2",
    syntax=ExplicitVRLittleEndian,
    pixel_data: bytes | None = None,
):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{UID}.100.{n}"
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = len(pixels)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [0.5, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if position is not None:
        ds.ImagePositionPatient = list(position)
    for keyword, value in [("InstanceNumber", instance), ("RescaleSlope", slope), ("RescaleIntercept", intercept),
                           ("WindowCenter", center), ("WindowWidth", width)]:
        if value is not None:
            setattr(ds, keyword, value)
    ds.PixelData = pixel_data if pixel_data is not None else pixels.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder, **kwargs):
    """Three slices at z = 10, 12.5, 15 written under names and instance numbers in another order."""
    folder.mkdir()
    for name, k, instance in [("b.dcm", 1, 7), ("c.dcm", 0, 9), ("a.dcm", 2, 8)]:
        write_dicom(folder / name, SLICE + 10 * k, n=k, position=(-20.0, -30.0, 10 + 2.5 * k), instance=instance, **kwargs)
    return folder


def nifti_affine() -> np.ndarray:
    affine = np.array([[0, 0.9, 0, -10], [-0.8, 0, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]], dtype=float)
    return affine


def write_nifti(path, data: np.ndarray, *, slope=None) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, nifti_affine())
    image.set_qform(nifti_affine(), code=1)
    image.set_sform(nifti_affine(), code=2)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = b"test volume"
    if slope is not None:
        image.header.set_slope_inter(*slope)
    nib.save(image, path)
    return image


CUBE = np.arange(5 * 6 * 4, dtype=np.int16).reshape(5, 6, 4) * 3  # (i, j, k)


# --- image bytes written here ---------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bytes(height: int, width: int, idat: bytes | None = None) -> bytes:
    """A grey 8-bit PNG whose header says height x width (the data need not match)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    if idat is None:
        idat = zlib.compress(b"\0" * (height * (width + 1)))
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def tiff_bytes(array: np.ndarray, sample_format: int) -> bytes:
    """Minimal little-endian one-strip grey TIFF of ``array`` (any dtype) with the given SampleFormat tag."""
    height, width = array.shape
    data = array.astype(array.dtype.newbyteorder("<")).tobytes()
    bits = array.dtype.itemsize * 8
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8 + 2 + 10 * 12 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, len(data)),
        (339, 3, 1, sample_format),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries)
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + data


# --- a stand-in for the engine ----------------------------------------------------------------


def fake_fit_images(n_labels: int = 2):
    """A stand-in for ``engine.fit_images`` (monkeypatch ``selfseg.runner.task.fit_images``): ``n_labels``
    vertical-ish stripes per image, mask = last label."""

    def fit_images(images, settings, rule, *, batch_images=1, callback=None):
        results = []
        for image in images:
            height, width = image.pixels.shape[:2]
            labels = (np.arange(height * width) % n_labels + 1).reshape(height, width).astype(np.int32)
            results.append(SegmentationResult(labels, labels == n_labels, settings.method, image.seed, iterations=1,
                                              seconds=0.25))
        return results

    return fit_images


class TickingPacedSave(PacedSave):
    """``PacedSave`` on a clock that moves 0.1 s each time it is read, so that tests count its writes exactly."""

    def __init__(self, save, **kwargs) -> None:
        ticks = itertools.count()
        super().__init__(save, **kwargs, clock=lambda: next(ticks) / 10)
