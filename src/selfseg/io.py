"""Image and table I/O: robust image reading, atomic writing, input discovery.

``read_image`` turns every kind of bad input into one :class:`ImageReadError` whose
reason is a single line (the classes and their exact texts: ``docs/formats.md``).
Medical volumes (DICOM, NIfTI, multi-frame TIFF) are read by :mod:`selfseg.volumes`.
"""

from __future__ import annotations

import csv
import os
import secrets
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from selfseg.decoding import (
    MAX_PIXELS,
    MIN_SIDE,
    MODES,
    ImageReadError,
    decode_reason,
    failure_reason,
    least_bytes,
    open_image,
    raw_pixels,
    size_reason,
    sniff_format,
    stat_input,
    to_unit,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "PNG_COMPRESSION",
    "ImageReadError",
    "atomic_path",
    "find_images",
    "read_image",
    "read_labels",
    "read_mask",
    "sniff_format",
    "stat_input",
    "write_csv",
    "write_image",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")



def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 (H, W, C) in [0, 1]; C is 1 (grey) or 3 (colour).

    Alpha is dropped, palettes and other colour spaces become RGB, 16-bit data is
    divided by 65535, float data is min-max scaled. Multi-frame files give the
    first frame. Size is checked from the header before decoding: at least
    ``MIN_SIDE`` x ``MIN_SIDE`` and at most ``MAX_PIXELS`` pixels. Only the decoded
    pixels and the float32 result are held in memory. Any unreadable input raises
    :class:`ImageReadError` with a one-line reason (listed in ``docs/formats.md``).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "grey.png")
    >>> Image.fromarray(np.array([[0, 255], [51, 102]], dtype=np.uint8)).save(path)
    >>> image = read_image(path)
    >>> image.shape, image.dtype, float(image[0, 1, 0])
    ((2, 2, 1), dtype('float32'), 1.0)
    >>> read_image(os.path.join(os.path.dirname(path), "missing.png"))
    Traceback (most recent call last):
    ...
    selfseg.io.ImageReadError: .../missing.png: file not found
    """
    path = Path(path)
    info = stat_input(path)
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(path, "is a directory, not an image file")
    if info.st_size == 0:
        raise ImageReadError(path, "empty file")
    # Pillow's warnings (corrupt EXIF, decompression bomb) would only repeat what the reason says.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_image(path, info.st_size) as img:
            reason = size_reason(img.height, img.width)
            if reason is None and img.mode not in MODES:
                reason = f"unsupported format: {img.format} with pixel mode {img.mode}"
            if reason is None and least_bytes(img, path, info.st_size) > info.st_size:
                reason = "cannot decode image: truncated file"
            if reason is not None:
                raise ImageReadError(path, reason)
            mode = img.mode
            try:
                raw = raw_pixels(img)
            except Exception as err:
                raise ImageReadError(path, failure_reason(path, info.st_size, err, img.format or "image")) from err
    try:
        array = to_unit(raw, mode)
    except ValueError as err:
        raise ImageReadError(path, str(err)) from None
    del raw
    if array.ndim == 2:
        array = array[:, :, None]
    return np.ascontiguousarray(array, dtype=np.float32)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a binary mask as bool (H, W): channel maximum > 0.5."""
    return read_image(path).max(axis=2) > 0.5


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read a label map written by ``write_image`` (8- or 16-bit grey PNG) as int32 (H, W), values exact."""
    try:
        with Image.open(path) as img:
            labels = np.asarray(img, dtype=np.int32)
    except (OSError, ValueError) as err:
        raise ImageReadError(path, f"cannot read label map: {decode_reason(err)}") from err
    if labels.ndim != 2:
        raise ImageReadError(path, f"a label map must be a single-channel image, got shape {labels.shape}")
    return labels


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` on success.

    The temporary name is ``.<name>.<random>.tmp<suffix>`` so writers that pick the
    format from the suffix still work; a compressed suffix keeps the one before it
    (``.nii.gz``). On an exception the temporary file is removed and ``path`` is left
    untouched. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() in (".gz", ".bz2") else path.suffix
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


PNG_COMPRESSION = 1
"""zlib level of the PNG files written: the overlay of a photograph encodes several times faster than at PIL's
default (6) for a slightly larger file; masks and cluster maps compress about as well either way."""


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Atomically write an image (format from the suffix, PNG expected).

    Accepts uint8 (H, W), (H, W, 3) or (H, W, 4); uint16 (H, W) (16-bit PNG);
    bool (H, W) (written as 0/255 uint8).
    """
    array = np.asarray(array)
    if array.dtype == np.uint8:
        valid = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))
        expected = "(H, W), (H, W, 3) or (H, W, 4)"
    elif array.dtype in (np.uint16, np.bool_):
        valid = array.ndim == 2
        expected = "(H, W)"
    else:
        raise TypeError(f"write_image expects a uint8, uint16 or bool array, got dtype {array.dtype}")
    if not valid or 0 in array.shape:
        raise ValueError(
            f"write_image expects a non-empty {array.dtype} array of shape {expected}, "
            f"got shape {array.shape}"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(np.ascontiguousarray(array))
    with atomic_path(path) as tmp:
        image.save(tmp, **({"compress_level": PNG_COMPRESSION} if tmp.suffix.lower() == ".png" else {}))


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """Atomically write a CSV file with one header row."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def find_images(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of image paths.

    A file is kept as given (so the reader can report it if it is not an image);
    a folder contributes its direct, non-hidden children with a suffix in
    :data:`IMAGE_SUFFIXES` (case-insensitive), sorted by name. Order follows
    ``inputs``; duplicates are dropped. A missing input raises FileNotFoundError.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            candidates = sorted(
                (
                    child
                    for child in item.iterdir()
                    if child.is_file()
                    and not child.name.startswith(".")
                    and child.suffix.lower() in IMAGE_SUFFIXES
                ),
                key=lambda child: child.name,
            )
        elif item.exists():
            candidates = [item]
        else:
            raise FileNotFoundError(f"input not found: {item}")
        for candidate in candidates:
            key = os.path.abspath(candidate)
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found
