"""DICOM files and series folders, read with pydicom: rescaled, windowed, in slice order."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from selfseg.decoding import (
    BoundedFile,
    ImageReadError,
    codestream_size,
    decode_reason,
)
from selfseg.optional import optional_import
from selfseg.volumes.base import (
    Volume,
    allocate,
    check_size,
    finish,
    min_max,
)

__all__ = ["PIXEL_KEYWORDS", "read_dicom"]


_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
"""The elements that hold a DICOM image's pixels: a dataset without any is no image."""
_INSTALL = 'pip install "selfseg[medical]"'  # pydicom with the decoders of every compressed syntax it supports


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


def _photometric(ds: Any) -> str:
    """PhotometricInterpretation of ``ds`` in capitals, MONOCHROME2 when absent."""
    return str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()


def _shared(ds: Any, sequence: str, keyword: str) -> Any:
    """``keyword`` at the top level or in the shared functional groups (enhanced multi-frame files)."""
    if keyword in ds:
        return ds.get(keyword)
    try:
        return ds.SharedFunctionalGroupsSequence[0][sequence][0].get(keyword)
    except Exception:  # absent, or an item pydicom cannot convert: as absent
        return None


def _vector(value: Any, count: int) -> np.ndarray | None:
    """A multi-valued decimal element as ``count`` floats, or None when absent, of another length or not numbers."""
    try:
        values = np.asarray([float(v) for v in value])
    except (TypeError, ValueError):  # None, a single value, text that is no number
        return None
    return values if len(values) == count else None


def _frame_positions(ds: Any, frames: int) -> list[np.ndarray] | None:
    """Per-frame ImagePositionPatient of an enhanced multi-frame file, or None."""
    try:
        groups = ds.PerFrameFunctionalGroupsSequence
        positions = [np.asarray(g.PlanePositionSequence[0].ImagePositionPatient, dtype=float) for g in groups]
    except Exception:  # absent, not numbers, or an item pydicom cannot convert
        return None
    return positions if len(positions) == frames else None


def _integer(file: Path, ds: Any, keyword: str, default: int | None) -> int | None:
    """An integer (US or IS) element of ``ds``; ``default`` when absent or empty. Another value is a corrupt header."""
    value = ds.get(keyword)
    if value is None or str(value).strip() == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        shown = str(value) if len(str(value)) <= 40 else f"{str(value)[:37]}..."
        reason = f"cannot decode image: corrupt DICOM header ({keyword} is {shown!r}, not an integer)"
        raise ImageReadError(file, reason) from None


def _dcmread(pydicom: ModuleType, file: Path, **options: Any) -> Any:
    """``pydicom.dcmread`` through a :class:`~selfseg.decoding.BoundedFile`, so that an element length read from the
    file never allocates more than the file holds; the public top-level elements are converted here (pydicom
    converts on first access): one of a wrong length or an unknown VR fails now, not where a value is used."""
    with BoundedFile(file) as fp:
        ds = pydicom.dcmread(fp, **options)
    for tag in [tag for tag in ds.keys() if not tag.is_private]:
        try:
            ds[tag]
        except Exception:  # pydicom's BytesLengthException, NotImplementedError for an unknown VR, ...
            raw = ds.get_item(tag)
            size = len(raw.value or b"")
            what = f"does not read as VR {raw.VR}" if raw.VR else "has no known VR"
            raise ValueError(f"element {tag} {what} ({size} byte{'s' if size != 1 else ''})") from None
    return ds


def _read(pydicom: ModuleType, file: Path, **options: Any) -> Any:
    """``pydicom.dcmread(file)``; a file without the 128-byte preamble and "DICM" prefix is read when its first
    element is a public DICOM tag of group 0008 or above (a bare dataset); otherwise InvalidDicomError."""
    try:
        ds = _dcmread(pydicom, file, **options)
    except pydicom.errors.InvalidDicomError:
        try:
            ds = _dcmread(pydicom, file, force=True, **options)
            first = next(iter(ds.keys()), None)
        except Exception:  # junk parsed as DICOM fails in many ways
            first = None
        if first is None or first.group < 0x0008 or not pydicom.datadict.dictionary_has_tag(first):
            raise pydicom.errors.InvalidDicomError(f"{file} is not a DICOM file") from None
    return ds


def _transfer_syntax(pydicom: ModuleType, file: Path, ds: Any) -> Any:
    """The transfer syntax UID of ``ds``: its file meta's or, without one, the uncompressed syntax pydicom found
    the dataset in (set in the file meta, where pydicom's decoders look)."""
    uid = ds.file_meta.get("TransferSyntaxUID")
    if uid is None:
        implicit, little = ds.original_encoding
        uid = pydicom.uid.ImplicitVRLittleEndian if implicit else (
            pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )
        ds.file_meta.TransferSyntaxUID = uid
    if not uid.is_transfer_syntax:
        raise ImageReadError(file, f"unsupported format: unknown DICOM transfer syntax {uid}")
    return uid


def _decoder_reason(pydicom: ModuleType, uid: Any) -> str:
    """One line for compressed pixel data that did not decode: the transfer syntax and what to do."""
    what = f"{uid.name} ({uid})" if uid.name != str(uid) else str(uid)
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError:
        return f"unsupported format: pydicom has no decoder for DICOM pixel data compressed as {what}"
    if not decoder.is_available:
        return f"cannot decode pixel data compressed as {what}: no decoder installed; {_INSTALL}"
    plugins = ", ".join(decoder.available_plugins)
    return (
        f"cannot decode pixel data compressed as {what}: the installed decoders ({plugins}) reject it as corrupt "
        "or of a variant they do not read; export the image uncompressed"
    )


def _codestream_reason(pydicom: ModuleType, ds: Any, expect: tuple[int, int, int]) -> str | None:
    """Why compressed pixel data cannot fill the header's rows x columns: its first frame's own header (JPEG, JPEG-LS,
    JPEG 2000) declares fewer pixels. Checked before pydicom allocates the header's frames x rows x columns."""
    try:
        first = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=expect[0]))
    except Exception:  # no frame found: pixel_array says what is wrong
        return None
    size = codestream_size(first)
    if size is None or size[0] * size[1] >= expect[1] * expect[2]:
        return None
    return f"cannot decode image: DICOM Rows x Columns are {expect[1]}x{expect[2]}, its compressed data {size[0]}x{size[1]}"


def _dicom_pixels(pydicom: ModuleType, file: Path, expect: tuple[int, int, int]) -> tuple[Any, np.ndarray]:
    """Read one DICOM file's dataset and pixels (frames, rows, columns[, 3]) in the stored type; PALETTE COLOR
    becomes RGB through the file's lookup table (uint8 or uint16, as the table's entries)."""
    try:
        ds = _read(pydicom, file)
    except Exception as err:
        raise ImageReadError(file, f"cannot decode image: corrupt DICOM data ({decode_reason(err)})") from None
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        raise ImageReadError(file, "no pixel data in DICOM file (truncated, or not an image object)")
    uid = _transfer_syntax(pydicom, file, ds)
    if not uid.is_compressed and "PixelData" in ds:
        try:
            needed = pydicom.pixels.utils.get_expected_length(ds, "bytes")
        except Exception:  # an element missing or unreadable: pixel_array names it below
            needed = 0
        if len(ds.PixelData or b"") < needed:
            raise ImageReadError(file, "cannot decode image: truncated file")
    if uid.is_compressed and "PixelData" in ds and (reason := _codestream_reason(pydicom, ds, expect)):
        raise ImageReadError(file, reason)
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as err:
        if uid.is_compressed:
            raise ImageReadError(file, _decoder_reason(pydicom, uid)) from None
        raise ImageReadError(file, f"cannot decode image: corrupt DICOM data ({decode_reason(err)})") from None
    palette = _photometric(ds) == "PALETTE COLOR"
    if palette:
        try:
            pixels = pydicom.pixels.apply_color_lut(pixels, ds)
        except Exception as err:
            reason = f"cannot decode image: DICOM PALETTE COLOR without a usable lookup table ({decode_reason(err)})"
            raise ImageReadError(file, reason) from None
    shape = (*expect, *((3,) if palette or _integer(file, ds, "SamplesPerPixel", 1) == 3 else ()))
    if pixels.size != np.prod(shape):  # compressed data of another size than the header's
        reason = f"cannot decode image: DICOM pixel data of {pixels.size} values, the header says {'x'.join(map(str, shape))}"
        raise ImageReadError(file, reason)
    return ds, pixels.reshape(shape)


def _no_image_reason(pydicom: ModuleType, file: Path) -> str:
    """Why a DICOM file without Rows or Columns is no image: pixel data without its description, or no pixel data."""
    try:
        ds = _read(pydicom, file)
    except Exception:  # the header parsed; a failure past it is a truncated or corrupt file
        ds = {}
    if any(keyword in ds for keyword in PIXEL_KEYWORDS):
        return "cannot decode image: DICOM pixel data without Rows and Columns (an incomplete image object)"
    return "no pixel data in DICOM file (truncated, or not an image object)"


def _series(pydicom: ModuleType, path: Path) -> list[tuple[Path, Any]]:
    """(file, header) of each DICOM image file of a file or a series folder, unsorted."""
    if not path.is_dir():
        try:
            header = _read(pydicom, path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            raise ImageReadError(path, "cannot decode image: not a DICOM file") from None
        except Exception as err:
            reason = f"cannot decode image: corrupt DICOM header ({decode_reason(err)})"
            raise ImageReadError(path, reason) from None
        if "Rows" not in header or "Columns" not in header:
            raise ImageReadError(path, _no_image_reason(pydicom, path))
        return [(path, header)]
    found = []
    for file in sorted(path.iterdir()):
        if file.name.startswith(".") or not file.is_file() or file.name.upper() == "DICOMDIR":
            continue
        if file.stat().st_size == 0:
            if file.name.lower().endswith(".dcm"):
                raise ImageReadError(file, "empty file")
            continue
        dcm = file.name.lower().endswith(".dcm")
        try:  # a file without the DICOM preamble is tried only under a .dcm name
            header = _read(pydicom, file, stop_before_pixels=True) if dcm else _dcmread(pydicom, file, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:  # notes, thumbnails, ... beside the series
            if dcm:
                raise ImageReadError(file, "cannot decode image: not a DICOM file") from None
            continue
        except Exception as err:
            reason = f"cannot decode image: corrupt DICOM header ({decode_reason(err)})"
            raise ImageReadError(file, reason) from None
        if "Rows" in header and "Columns" in header:  # skip reports, presentation states and other non-image objects
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
    sizes = sorted({(_integer(f, h, "Rows", 0), _integer(f, h, "Columns", 0)) for f, h in items})
    if len(sizes) > 1:
        shown = " and ".join(f"{r}x{c}" for r, c in sizes[:2])
        raise ImageReadError(path, f"mixed DICOM series: slices of different sizes ({shown} pixels)")
    colours = {(str(h.get("SamplesPerPixel")), _photometric(h) == "PALETTE COLOR") for _, h in items}
    if len(colours) > 1:
        raise ImageReadError(path, "mixed DICOM series: slices with different colour types")
    for file, header in items:
        frames = _integer(file, header, "NumberOfFrames", 1) or 1
        if frames > 1:
            raise ImageReadError(
                path,
                f"mixed DICOM series: {file.name} has {frames} frames; a series folder must hold single-frame slices",
            )
    if len(items) == 1:
        return items, None
    orientations = [_vector(_shared(h, "PlaneOrientationSequence", "ImageOrientationPatient"), 6) for _, h in items]
    positions = [_vector(_shared(h, "PlanePositionSequence", "ImagePositionPatient"), 3) for _, h in items]
    if all(o is not None for o in orientations) and all(p is not None for p in positions):
        orient = np.asarray(orientations)
        if np.abs(orient - orient[0]).max() > 1e-3:
            reason = "mixed DICOM series: slices with different orientations (ImageOrientationPatient)"
            raise ImageReadError(path, reason)
        normal = np.cross(orient[0, :3], orient[0, 3:])
        where = np.asarray(positions)
        keys = where @ normal
        order = np.argsort(keys, kind="stable")
        gaps = np.diff(keys[order])
        if np.any(np.abs(gaps) < 1e-3):
            k = int(np.flatnonzero(np.abs(gaps) < 1e-3)[0])
            a, b = items[order[k]][0].name, items[order[k + 1]][0].name
            raise ImageReadError(path, f"mixed DICOM series: {a} and {b} are at the same position")
        return [items[i] for i in order], [where[i] for i in order]
    numbers = [_integer(file, h, "InstanceNumber", None) for file, h in items]
    if any(n is None for n in numbers):
        raise ImageReadError(path, "cannot order the DICOM slices: ImagePositionPatient and InstanceNumber are missing")
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


def read_dicom(path: Path, axis: int) -> Volume:
    """A DICOM file or series folder as a :class:`Volume` (``read_volume`` describes it)."""
    with warnings.catch_warnings():  # pydicom warns of odd values; the reason of a failure says what matters
        warnings.simplefilter("ignore")
        return _read_dicom(path, axis)


def _read_dicom(path: Path, axis: int) -> Volume:
    """``read_dicom`` within its warnings filter: the files' headers, then their pixels onto [0, 1]."""
    pydicom = _import_pydicom()
    items = _series(pydicom, path)
    items, positions = _sort_series(path, items) if len(items) > 1 else (items, None)
    file, first = items[0]
    rows, columns = (_integer(file, first, keyword, 0) for keyword in ("Rows", "Columns"))
    frames = (_integer(file, first, "NumberOfFrames", 1) or 1) if len(items) == 1 else 1
    depth = frames * len(items)
    colour, palette = _colour_type(file, first)
    check_size(path, (depth, rows, columns), axis, 3 if colour else 1)
    decoded = _dicom_pixels(pydicom, file, (frames, rows, columns))  # the header's size is real: allocate
    data, source = allocate(path, (depth, rows, columns), axis, colour)
    top, inverted = _fill(pydicom, items, decoded, source, (frames, rows, columns), colour=colour, palette=palette)
    if colour:
        data /= top
        intensity = f"{'PALETTE COLOR lookup table, ' if palette else ''}RGB / {top:g}"
    else:
        intensity = _grey_to_unit(data, source, first, inverted)
    if positions is None and frames > 1:
        positions = _frame_positions(first, frames)
    affine, voxel_spacing = _dicom_affine(first, positions, depth)
    return finish(
        path, data, axis, "dicom", affine, voxel_spacing,
        source_shape=(depth, rows, columns), intensity=intensity, files=tuple(file for file, _ in items),
    )


def _import_pydicom() -> ModuleType:
    """pydicom with the modules read here (``optional_import``: one line where it is missing or too old)."""
    pydicom = optional_import("pydicom")
    for module in ("errors", "datadict", "encaps", "pixels", "pixels.utils", "uid"):
        optional_import(f"pydicom.{module}")
    return pydicom


def _colour_type(file: Path, ds: Any) -> tuple[bool, bool]:
    """(colour, palette) of the series whose first header is ``ds``: RGB, YBR or PALETTE COLOR, else grey
    (MONOCHROME1 or 2); another photometric interpretation is refused."""
    photometric = _photometric(ds)
    samples = _integer(file, ds, "SamplesPerPixel", 1) or 1
    palette = photometric == "PALETTE COLOR" and samples == 1
    colour = palette or (samples == 3 and (photometric == "RGB" or photometric.startswith("YBR")))
    if not colour and (photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1):
        reason = f"unsupported format: DICOM photometric interpretation {photometric} (SamplesPerPixel {samples})"
        raise ImageReadError(file, reason)
    return colour, palette


def _fill(pydicom: ModuleType, items: list[tuple[Path, Any]], decoded: tuple[Any, np.ndarray], source: np.ndarray,
          shape: tuple[int, int, int], *, colour: bool, palette: bool) -> tuple[float, np.ndarray]:
    """Read the frames (``shape``: frames, rows, columns) of each file into ``source``, in slice order, grey values
    rescaled (``_rescale``); the first file's dataset and pixels are ``decoded`` already. Returns the top of the
    colour scale (``_colour_top``; 0 for grey) and which slices are MONOCHROME1."""
    frames = shape[0]
    top, inverted = 0.0, np.zeros(len(source), dtype=bool)
    for index, (file, _) in enumerate(items):
        ds, pixels = decoded if index == 0 else _dicom_pixels(pydicom, file, shape)
        block = source[index * frames : (index + 1) * frames]
        block[...] = pixels
        if pixels.dtype.kind == "f" and not np.isfinite(block).all():
            raise ImageReadError(file, "contains NaN or infinite values")
        if colour:
            top = max(top, _colour_top(file, ds, pixels, palette))
        else:
            _rescale(block, ds)
            inverted[index * frames : (index + 1) * frames] = _photometric(ds) == "MONOCHROME1"
    return top, inverted


def _colour_top(file: Path, ds: Any, pixels: np.ndarray, palette: bool) -> float:
    """The top of one file's RGB scale: a palette's RGB spans its entries' type; stored RGB its BitsStored (at most
    its type's bits), or its largest value where that is higher (BitsStored below the data's)."""
    bits = 8 * pixels.dtype.itemsize
    bits = bits if palette else min(_integer(file, ds, "BitsStored", bits) or bits, bits)
    return max(float(2**bits - 1), float(pixels.max()))


def _rescale(block: np.ndarray, ds: Any) -> None:
    """Stored grey values to what they mean (RescaleSlope and RescaleIntercept: Hounsfield units in CT), in place."""
    slope = _number(_shared(ds, "PixelValueTransformationSequence", "RescaleSlope")) or 1.0
    intercept = _number(_shared(ds, "PixelValueTransformationSequence", "RescaleIntercept")) or 0.0
    if slope != 1.0 or intercept != 0.0:
        block *= slope
        block += intercept


def _grey_to_unit(data: np.ndarray, source: np.ndarray, ds: Any, inverted: np.ndarray) -> str:
    """Grey ``data`` onto [0, 1] in place: the VOI window of the first header ``ds`` where it has one, else
    min-max; the ``inverted`` slices of ``source`` (its view in slice order) turned over. What was done, in words."""
    center = _number(_shared(ds, "FrameVOILUTSequence", "WindowCenter"))
    width = _number(_shared(ds, "FrameVOILUTSequence", "WindowWidth"))
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if center is not None and width is not None and width >= 1:
        _window(data, center, width, function)
        intensity = f"window center {center:g} width {width:g}"
    else:
        intensity = min_max(data)
    if inverted.any():
        source[inverted] = 1.0 - source[inverted]
        intensity += ", MONOCHROME1 inverted"
    return intensity


def _dicom_affine(
    ds: Any, positions: list[np.ndarray] | None, depth: int
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Affine of (slice, row, column) indices -> RAS+ mm, and the voxel size along those axes."""
    spacing = _vector(_shared(ds, "PixelMeasuresSequence", "PixelSpacing") or ds.get("ImagerPixelSpacing"), 2)
    row_mm, col_mm = (float(spacing[0]), float(spacing[1])) if spacing is not None else (1.0, 1.0)
    orientation = _vector(_shared(ds, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    if orientation is not None:
        along_row, along_col = orientation[:3], orientation[3:]  # directions of increasing column, row
    else:
        along_row, along_col = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    normal = np.cross(along_row, along_col)
    origin = _vector(_shared(ds, "PlanePositionSequence", "ImagePositionPatient"), 3)
    origin = np.zeros(3) if origin is None else origin
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
