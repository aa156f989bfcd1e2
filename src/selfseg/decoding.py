"""What io (2-D images) and volumes share: the read error, the size limits, what a file's bytes say
(format, header size, truncation), one-line failure reasons, and how stored pixels become floats in [0, 1].

Internal: users meet these names through :mod:`selfseg.io` (``ImageReadError``, ``sniff_format``,
``stat_input``, ``MIN_SIDE``, ``MAX_PIXELS``) and the readers' messages (``docs/formats.md``).
"""

from __future__ import annotations

import io
import os
import re
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFLATE_RATIO",
    "GREY_MODES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "MODES",
    "BoundedFile",
    "ImageReadError",
    "codestream_size",
    "decode_reason",
    "failure_reason",
    "least_bytes",
    "open_image",
    "raw_pixels",
    "rescale",
    "size_reason",
    "sniff_format",
    "stat_input",
    "to_unit",
]

MAX_PIXELS: int = 2**27
"""Largest image (width x height) that ``read_image`` decodes: 134,217,728 pixels, e.g. 16384 x 8192
(1.5 GiB as float32 RGB). Checked from the header, before any pixel is decoded. Pillow's own
decompression-bomb limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, 178,956,970 by default) is higher; if a
program lowers it, the lower of the two applies, with the same message."""

MIN_SIDE: int = 2
"""Smallest height and width ``read_image`` accepts: an image must have at least 2 x 2 pixels."""

GREY_MODES = ("1", "L", "LA", "La")
# Pillow modes read_image converts; anything else is an unsupported format.
MODES = frozenset(
    {*GREY_MODES, "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "I", "F"}
    | {"I;16", "I;16L", "I;16B", "I;16N"}
)
_TAIL = 4096  # bytes read from the end of a file to look for its end marker
DEFLATE_RATIO = 1032
"""Most bytes one byte of deflate data (PNG, TIFF, gzip) decodes to: a 258-byte match coded in two bits."""
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_PILLOW_FORMATS = {"PNG": ["PNG"], "JPEG": ["JPEG", "MPO"], "GIF": ["GIF"], "TIFF": ["TIFF"], "BMP": ["BMP"],
                   "WEBP": ["WEBP"], "JPEG 2000": ["JPEG2000"]}  # sniff_format's name -> Pillow's readers of it
# TIFF compression -> most bytes one stored byte decodes to: LZW (codes of at least 9 bits, strings of at most
# 4096 bytes), deflate, PackBits (a 2-byte run of up to 128). Others (JPEG, CCITT, ...) have no such bound.
_TIFF_RATIOS = {5: 4096 * 8 // 9, 8: DEFLATE_RATIO, 32946: DEFLATE_RATIO, 32773: 64}


class ImageReadError(ValueError):
    """An input could not be read as an image; ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


ImageReadError.__module__ = "selfseg.io"  # where users import it from (and how tracebacks name it)


def decode_reason(err: Exception) -> str:
    """Short, single-line description of an access or decoding failure."""
    if isinstance(err, UnidentifiedImageError):
        return "unknown image format"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err).strip() or type(err).__name__


# --- what the bytes say: format, size from the header, truncation -----------------------------


def sniff_format(path: str | os.PathLike) -> str | None:
    """Name of the file format from its first bytes ("PNG", "JPEG", "TIFF", "DICOM", "NIfTI", ...), or None.

    Cheap (reads at most 352 bytes) and independent of Pillow, pydicom and nibabel; a header that
    starts like a format but is implausible (a PNG signature without its IHDR chunk) gives None.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(352)
    except OSError:
        return None
    name = Path(path).name.lower()
    if head[128:132] == b"DICM":
        return "DICOM"
    if head[344:348] in (b"n+1\0", b"ni1\0") or head[4:12] == b"n+2\0\r\n\x1a\n":
        return "NIfTI"
    if head[:2] == b"\x1f\x8b" and name.endswith(".nii.gz"):
        return "NIfTI"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG" if head[12:16] == b"IHDR" else None
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"):
        return "TIFF"
    if head[:2] == b"BM" and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 64, 108, 124):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:12] == b"\0\0\0\x0cjP  \r\n\x87\n" or head[:4] == b"\xffO\xffQ":
        return "JPEG 2000"
    return None


def _tiff_facts(f, size: int) -> tuple[tuple[int, int] | None, bool, str | None]:
    """Classic TIFF: (height, width) and samples of the first image; whether any image's directory
    or data lies beyond the end of the file (every frame of a multi-frame file is checked)."""
    order = "<" if f.read(2) == b"II" else ">"
    magic, offset = struct.unpack(order + "HI", f.read(6))
    if magic != 42:  # BigTIFF: not inspected
        return None, False, None
    widths = {1: "B", 3: "H", 4: "I"}
    first: dict[int, list[int]] | None = None
    seen: set[int] = set()
    entries = 1 << 20  # directory entries read at most: overlapping directories cannot make this take long
    while offset and offset not in seen and entries > 0:
        seen.add(offset)
        if offset + 2 > size:
            return None, True, None
        f.seek(offset)
        (count,) = struct.unpack(order + "H", f.read(2))
        if offset + 2 + 12 * count + 4 > size:
            return None, True, None
        entries -= count + 1
        tags: dict[int, list[int]] = {}
        for _ in range(count):
            tag, kind, n, value = struct.unpack(order + "HHI4s", f.read(12))
            if tag not in (256, 257, 258, 273, 277, 279, 324, 325, 339) or kind not in widths or n == 0:
                continue
            item = struct.calcsize(widths[kind])
            if n * item <= 4:
                raw = value[: n * item]
            else:
                (where,) = struct.unpack(order + "I", value)
                n = min(n, 1 << 20)
                if where + n * item > size:
                    return None, True, None
                here = f.tell()
                f.seek(where)
                raw = f.read(n * item)
                f.seek(here)
            tags[tag] = list(struct.unpack(f"{order}{n}{widths[kind]}", raw))
        offsets, counts = tags.get(273, tags.get(324, [])), tags.get(279, tags.get(325, []))
        if any(o + c > size for o, c in zip(offsets, counts)):
            return None, True, None
        first = tags if first is None else first
        (offset,) = struct.unpack(order + "I", f.read(4))
    if first is None:
        return None, False, None
    dims = (first[257][0], first[256][0]) if 256 in first and 257 in first else None
    bits, samples = first.get(258, [1])[0], first.get(277, [1])[0]
    kinds = {1: "unsigned", 2: "signed", 3: "float", 5: "complex", 6: "complex float"}
    kind = kinds.get(first.get(339, [1])[0], "other")
    return dims, False, f"{bits}-bit {kind}, {samples} sample{'s' if samples != 1 else ''} per pixel"


def _jpeg_frame(f, size: int) -> tuple[int, int, int] | None:
    """(marker, height, width) of a JPEG's (or JPEG-LS's) start-of-frame, or None where it cannot be reached."""
    f.seek(2)
    while f.tell() + 4 <= size:
        marker, length = struct.unpack(">2sH", f.read(4))
        if marker[0] != 0xFF or length < 2:
            return None
        if (0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC)) or marker[1] == 0xF7:
            data = f.read(5)
            return (marker[1], *struct.unpack(">HH", data[1:5])) if len(data) == 5 else None
        f.seek(length - 2, os.SEEK_CUR)
    return None


def _head_and_frame(f, fmt: str | None, size: int) -> tuple[bytes, tuple[int, int, int] | None]:
    """The first 64 bytes of an open image file of ``size`` bytes and, for a JPEG, its start-of-frame
    (``_jpeg_frame``): what ``header_facts`` and ``least_bytes`` read of a header."""
    f.seek(0)
    head = f.read(64)
    return head, _jpeg_frame(f, size) if fmt == "JPEG" else None


def codestream_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) that a JPEG, JPEG-LS or JPEG 2000 codestream declares in its header, or None."""
    if data[:4] == b"\xff\x4f\xff\x51" and len(data) >= 24:  # JPEG 2000 SIZ: the image area less its offset
        width, height, left, top = struct.unpack(">IIII", data[8:24])
        return height - top, width - left
    if data[:2] == b"\xff\xd8":
        try:
            frame = _jpeg_frame(io.BytesIO(data), len(data))
        except struct.error:
            return None
        return None if frame is None else frame[1:]
    return None


def header_facts(path: Path, fmt: str | None, size: int) -> tuple[tuple[int, int] | None, bool, str | None]:
    """What the container says without decoding: (height, width) or None, truncated?, sample description.

    "Truncated" means the file ends before its own structure does: no PNG IEND chunk, no JPEG or
    JPEG 2000 end-of-image marker, no GIF trailer, a BMP/WEBP size field or TIFF strip beyond the end.
    """
    if fmt is None:
        return None, False, None
    try:
        with open(path, "rb") as f:
            if fmt == "TIFF":
                return _tiff_facts(f, size)
            head, frame = _head_and_frame(f, fmt, size)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except (OSError, struct.error):
        return None, False, None
    if fmt == "PNG":
        dims = struct.unpack(">II", head[16:24])[::-1] if len(head) >= 24 else None
        return dims, b"IEND" not in tail, None
    if fmt in ("JPEG", "JPEG 2000"):
        return None if frame is None else frame[1:], b"\xff\xd9" not in tail, None
    if fmt == "GIF":
        dims = struct.unpack("<HH", head[6:10])[::-1] if len(head) >= 10 else None
        return dims, not tail.rstrip(b"\0").endswith(b";"), None
    if fmt == "BMP":
        declared = struct.unpack("<I", head[2:6])[0]
        if len(head) < 26:
            return None, True, None
        if struct.unpack("<I", head[14:18])[0] == 12:
            dims = struct.unpack("<HH", head[18:22])[::-1]
        else:
            width, height = struct.unpack("<ii", head[18:26])
            dims = (abs(height), abs(width))
        return dims, declared > size, None
    if fmt == "WEBP":
        return None, struct.unpack("<I", head[4:8])[0] + 8 > size, None
    return None, False, None


def least_bytes(img: Image.Image, size: int) -> int:
    """Fewest bytes of the file of ``img`` (open, not loaded; ``size`` bytes) that can hold the pixels its header
    declares; 0 where its coding has no such bound. The header is read from the file Pillow holds open.

    Data stored as it is (uncompressed BMP, TIFF, ...: Pillow's "raw" tiles) takes at least a bit per pixel;
    one byte of deflate (PNG, TIFF) decodes to at most ``DEFLATE_RATIO`` bytes, of LZW (TIFF) to 3640, of
    PackBits (TIFF) to 64; Huffman-coded JPEG spends at least a bit on each 8x8 block of each component (a bit
    per 128 pixels whatever the sampling). A shorter file cannot hold its pixels: the readers refuse it as
    truncated before anything is allocated on the header's word. Other codings (JPEG 2000, WebP, arithmetic
    JPEG, TIFF JPEG or CCITT, BMP RLE) can pack a blank image into almost nothing: the pixel limit bounds them.
    """
    pixels = img.height * img.width
    if img.tile and all(tile[0] == "raw" for tile in img.tile):
        return img.height * ((img.width + 7) // 8)
    if img.format == "TIFF" and img.tag_v2.get(259) in _TIFF_RATIOS:
        bits = img.tag_v2.get(258, (1,))
        return pixels * sum(bits) // 8 // _TIFF_RATIOS[img.tag_v2[259]]
    if img.format not in ("PNG", "JPEG") or img.fp is None:
        return 0
    here = img.fp.tell()
    try:
        head, frame = _head_and_frame(img.fp, img.format, size)
    except (OSError, struct.error):
        return 0
    finally:
        img.fp.seek(here)
    if img.format == "PNG" and len(head) >= 26:
        depth, colour = head[24:26]
        return img.height * (1 + (img.width * depth * _PNG_CHANNELS.get(colour, 1) + 7) // 8) // DEFLATE_RATIO
    if frame is not None and frame[0] in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7):  # Huffman coding
        return pixels // 1024
    return 0


def pixel_limit() -> int:
    """The pixel limit in force: MAX_PIXELS, or Pillow's decompression-bomb limit where that is lower."""
    pil = Image.MAX_IMAGE_PIXELS
    return MAX_PIXELS if pil is None else min(MAX_PIXELS, 2 * int(pil))


def size_reason(height: int, width: int, limit: int | None = None) -> str | None:
    """Why a height x width image is refused (too small, too large), or None if it is fine.

    Sizes read height x width, like NumPy shapes and the engine's own check.
    """
    limit = pixel_limit() if limit is None else limit
    if height < MIN_SIDE or width < MIN_SIDE:
        return f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {height}x{width}"
    if height * width > limit:
        return f"image too large: {height}x{width} = {height * width} pixels, over the limit of {limit}"
    return None


def failure_reason(path: Path, size: int, err: BaseException, fmt: str | None = None) -> str:
    """One line for a file Pillow could not open (``fmt`` None) or decode (``fmt`` its format)."""
    if isinstance(err, Image.DecompressionBombError):
        sniffed = sniff_format(path)
        dims = header_facts(path, sniffed, size)[0]
        if dims is not None and size_reason(*dims) is not None:
            return size_reason(*dims)
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{found.group(1)} pixels" if found else "more pixels than Pillow allows"
        return f"image too large: {pixels}, over the limit of {pixel_limit()}"
    if isinstance(err, OSError) and err.errno is not None:  # permission denied, I/O error
        return f"cannot read file: {decode_reason(err)}"
    sniffed = sniff_format(path)
    if sniffed in ("DICOM", "NIfTI"):
        return f"unsupported format: {sniffed} is a volume format, read it with selfseg.volumes.read_volume"
    dims, truncated, samples = header_facts(path, sniffed, size)
    message = " ".join(str(err).split())
    if truncated or "truncat" in message.lower():
        return "cannot decode image: truncated file"
    if dims is not None and size_reason(*dims) is not None:
        return size_reason(*dims)
    if fmt is None:  # Pillow did not recognise the file
        if sniffed is None:
            return "cannot decode image: unknown image format"
        detail = f" ({samples})" if samples else ""
        return f"unsupported format: a {sniffed} variant Pillow cannot read{detail}"
    if "decoder" in message and "not available" in message:
        return f"unsupported format: this Pillow has no {fmt} decoder"
    return f"cannot decode image: corrupt {fmt} data ({message or type(err).__name__})"


# --- opening with Pillow ---------------------------------------------------------------------


class BoundedFile(io.BufferedReader):
    """A file opened for reading whose ``read(n)`` asks for at most the bytes left in it.

    Pillow passes lengths read from a header to ``read``, and a buffered file allocates all ``n`` bytes before
    reading: a PNG chunk declaring 2 GiB made a 2 GiB allocation. Through this file it is the bytes left.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(io.FileIO(path, "rb"))
        self.size = os.fstat(self.fileno()).st_size

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size > 0:
            size = min(size, max(self.size - self.tell(), 0))
        return super().read(size)


@contextmanager
def open_image(path: Path, size: int) -> Iterator[Image.Image]:
    """Pillow's image of ``path`` (``size`` bytes), read through a :class:`BoundedFile` and closed on exit;
    ImageReadError with the reason when Pillow cannot open it.

    A file whose first bytes name a format (``sniff_format``) is opened only by Pillow's reader of it: a broken
    TIFF is a broken TIFF, not the GIMP brush that Pillow would try next and whose weaker check it can pass."""
    formats = _PILLOW_FORMATS.get(sniff_format(path))
    with ExitStack() as stack:
        try:
            img = stack.enter_context(Image.open(stack.enter_context(BoundedFile(path)), formats=formats))
        except Exception as err:  # corrupt data raises many types
            raise ImageReadError(path, failure_reason(path, size, err)) from None
        yield img


# --- pixels ---------------------------------------------------------------------------------


def raw_pixels(img: Image.Image) -> np.ndarray:
    """Pixels of an open PIL image in their own integer or float type: (H, W) or (H, W, 3).

    bool/uint8 for 8-bit and palette data, uint16 for 16-bit, int32 ("I") or float32 ("F");
    colour is RGB. Loads the image; no float copy is made here.
    """
    mode = img.mode
    if mode in ("L", "RGB") or mode.startswith("I;16") or mode in ("I", "F"):
        return np.asarray(img)
    if mode in GREY_MODES:
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def to_unit(raw: np.ndarray, mode: str, out: np.ndarray | None = None) -> np.ndarray:
    """Raw pixels -> float32 in [0, 1]: 8 bit / 255, 16 bit / 65535, "I" and "F" as in ``rescale``.

    ``out`` (float32, raw's shape) receives the result when given. Raises ValueError on NaN or inf.
    """
    if raw.dtype in (np.uint8, np.bool_) or raw.dtype.kind == "u":
        scale = np.float32(255 if raw.dtype.itemsize == 1 else 65535)
        return np.divide(raw, scale, out=out, dtype=np.float32)
    values = np.array(raw, dtype=np.float32) if out is None else out
    if out is not None:
        values[...] = raw
    if not np.isfinite(values).all():
        raise ValueError("contains NaN or infinite values")
    return rescale(values, mode)


def rescale(values: np.ndarray, mode: str) -> np.ndarray:
    """Bring 32-bit integer ("I") or float ("F") pixel values into [0, 1], in place."""
    lo, hi = float(values.min()), float(values.max())
    if mode == "I" and lo >= 0:
        values /= max(hi, 65535.0)
    elif hi > lo:
        values -= lo
        values /= hi - lo
    else:
        np.clip(values, 0.0, 1.0, out=values)
    return values


def stat_input(path: str | os.PathLike) -> os.stat_result:
    """``os.stat`` of an input, or ImageReadError "file not found" / "cannot access file: <why>"."""
    try:
        return Path(path).stat()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (OSError, ValueError) as err:
        raise ImageReadError(path, f"cannot access file: {decode_reason(err)}") from err
