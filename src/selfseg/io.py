"""Image and table I/O: robust image reading, atomic writing, input discovery.

``read_image`` turns every kind of bad input into one :class:`ImageReadError` whose
reason is a single line (the classes and their exact texts: ``docs/formats.md``).
Medical volumes (DICOM, NIfTI, multi-frame TIFF) are read by :mod:`selfseg.volumes`.
"""

from __future__ import annotations

import csv
import errno
import os
import re
import secrets
import stat
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

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
    "NAME_MAX",
    "PNG_COMPRESSION",
    "DISK_ERRNOS",
    "ImageReadError",
    "NOTE_KEY",
    "WriteError",
    "atomic_path",
    "check_folder",
    "check_name",
    "find_images",
    "missing_input",
    "is_temporary",
    "read_csv",
    "read_image",
    "read_labels",
    "read_mask",
    "read_note",
    "sniff_format",
    "stat_input",
    "write_csv",
    "write_image",
]

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO})
"""Causes of a failed write that hold for every file of the folder (full disk or quota, read-only file system, no
permission, a failing device), unlike a bad name (``ENAMETOOLONG``) or a folder in the file's place."""


class WriteError(OSError):
    """A file could not be written: ``filename``, ``errno`` and ``reason``, the cause in words ("no space left on
    device"); ``str(err)`` is ``"cannot write <file>: <reason>"``. ``disk`` says whether the cause holds for every
    file of the folder (``DISK_ERRNOS``). ``code`` None (an ``OSError`` without one) is ``EIO``."""

    def __init__(self, code: int | None, path: str | os.PathLike) -> None:
        code = errno.EIO if code is None else code
        super().__init__(code, os.strerror(code), str(path))

    @property
    def reason(self) -> str:
        return self.strerror[:1].lower() + self.strerror[1:]

    @property
    def disk(self) -> bool:
        return self.errno in DISK_ERRNOS

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.reason}"

    def __reduce__(self):
        return type(self), (self.errno, self.filename)


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
            if reason is None and least_bytes(img, info.st_size) > info.st_size:
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


NAME_MAX = 255
"""Longest file name in bytes on common file systems (ext4, XFS, APFS, NTFS in UTF-16 units)."""


_SUFFIX = r"(?:\.[0-9A-Za-z]+){0,2}"
"""The suffix a temporary name keeps: one or two of letters and digits (``.png``, ``.nii.gz``)."""
_TEMPORARY = re.compile(rf"\..+\.[0-9a-f]{{8}}\.tmp{_SUFFIX}")
"""The names ``_temporary`` gives, whole (``is_temporary``)."""


def _temporary(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<8 random hex digits>.tmp<suffix>``. ``<suffix>`` is that
    of ``path``, so that writers that pick the format from the suffix still work (a compressed suffix keeps the one
    before it, ``.nii.gz``; none if not ``_SUFFIX``); ``<name>`` is shortened to keep it within ``NAME_MAX`` bytes,
    so that any name that fits has a temporary name that fits."""
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() in (".gz", ".bz2") else path.suffix
    if not re.fullmatch(_SUFFIX, suffix):
        suffix = ""
    tail, name = f".{secrets.token_hex(4)}.tmp{suffix}", path.name
    while len(os.fsencode(f".{name}{tail}")) > NAME_MAX:
        name = name[:-1]
    return path.with_name(f".{name}{tail}")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary name of ``atomic_path`` (a file a killed run left), and not one that only
    starts like it (an output of an input named ``.x.0123abcd.tmp.png``)."""
    return _TEMPORARY.fullmatch(name) is not None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (``_temporary``: ``.<name>.<random>.tmp<suffix>``, ``is_temporary``);
    move it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is left untouched; an OSError (full disk, read-only
    folder, ...) becomes a :class:`WriteError` naming ``path``. Missing parent folders are created.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):  # none was made (a name too long, a read-only folder), or it cannot go either
            tmp.unlink()
        if isinstance(err, OSError) and err.errno is not None and not isinstance(err, WriteError):
            raise WriteError(err.errno, path) from err
        raise


def check_name(path: str | os.PathLike) -> None:
    """A :class:`WriteError` (``file name too long``) if the name of ``path`` exceeds ``NAME_MAX`` bytes."""
    if len(os.fsencode(Path(path).name)) > NAME_MAX:
        raise WriteError(errno.ENAMETOOLONG, path)


def check_folder(folder: str | os.PathLike) -> Path:
    """``folder``, created if missing, once a file could be created in it (and removed); a :class:`WriteError`
    naming it and the cause if not, e.g. ``cannot write out: read-only file system``."""
    folder = Path(folder)
    probe = _temporary(folder / ".selfseg")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as err:
        raise WriteError(err.errno, folder) from err
    return folder


PNG_COMPRESSION = 1
"""zlib level of the PNG files written: the overlay of a photograph encodes several times faster than at PIL's
default (6) for a slightly larger file; masks and cluster maps compress about as well either way."""


NOTE_KEY = "selfseg"
"""Key of the text a written file carries (``write_image``'s ``note``: a PNG text chunk; a NIfTI file's comment
extension starts with it)."""


def write_image(path: str | os.PathLike, array: np.ndarray, *, note: str | None = None) -> None:
    """Atomically write an image (format from the suffix, PNG expected).

    Accepts uint8 (H, W), (H, W, 3) or (H, W, 4); uint16 (H, W) (16-bit PNG);
    bool (H, W) (written as 0/255 uint8). ``note``: a text the PNG file carries (``read_note``).
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
    options: dict = {}
    if Path(path).suffix.lower() == ".png":
        options["compress_level"] = PNG_COMPRESSION
        if note is not None:
            options["pnginfo"] = PngInfo()
            options["pnginfo"].add_itxt(NOTE_KEY, note)
    elif note is not None:
        raise ValueError(f"write_image stores a note in PNG files only, not in {Path(path).name}")
    with atomic_path(path) as tmp:
        image.save(tmp, **options)


def read_note(path: str | os.PathLike) -> str | None:
    """The note of a PNG file written by ``write_image``; None if it has none or cannot be read."""
    try:
        with Image.open(path) as img:
            note = img.info.get(NOTE_KEY)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, str) else None


def read_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a CSV file with one header row, as dicts; [] when the file does not exist."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        return []


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[object]]
) -> None:
    """Atomically write a CSV file with one header row."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)


def missing_input(item: str | os.PathLike) -> FileNotFoundError:
    """The error for an input that does not exist, saying which way: a symlink loop, a broken symlink, or no
    such path."""
    try:
        os.stat(item)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return FileNotFoundError(f"input is a symlink loop: {item}")
    if Path(item).is_symlink():
        return FileNotFoundError(f"input is a broken symlink: {item}")
    return FileNotFoundError(f"input not found: {item}")


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
            raise missing_input(item)
        for candidate in candidates:
            key = os.path.abspath(candidate)
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found
