"""Fuzzing the readers: tiny valid files of each format (PNG, JPEG, BMP, TIFF 8/16-bit and multi-frame, DICOM
plain and compressed, NIfTI), mutated (bytes flipped, overwritten, inserted, deleted, the file cut short, header
fields set to extreme values), are each read or refused with an ``ImageReadError`` naming the file, within a time
bound and without allocating on a header's word.

The run is bounded and deterministic: ``CASES`` mutated files per seed, the edits of each drawn from
``random.Random(f"{seed}-{index}")`` alone, so they are the same on every machine, whatever else is imported, and
nothing is stored between runs. A failing file is named by its test id (``[png-grey-17]``: seed and index), which
runs it again alone. The inputs that once broke a reader are kept in ``tests/data/fuzz/`` and read by
``test_regression_file``.
"""

from __future__ import annotations

import faulthandler
import gzip
import io
import math
import random
import signal
import struct
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from selfseg.io import ImageReadError, read_image
from selfseg.volumes import read_volume

from helpers import CUBE, SLICE, write_dicom, write_nifti

CASES = 50
"""Mutated files per seed: 1050 in all, about 20 s."""

SECONDS = 5.0
"""Most CPU time one read of a fuzzed file (a few kB) may take; a read still running then is interrupted."""

HANG = 120.0
"""Wall-clock seconds after which a read still running (stuck in C code, where the CPU-time signal of ``SECONDS``
is never handled: Python runs signal handlers between bytecodes) ends the test process, every thread's traceback
on stderr: CI fails rather than hangs."""

MEMORY = 64 << 20
"""Most a read of a fuzzed file may allocate (Python and NumPy, traced, plus Pillow's image blocks, each counted
at Pillow's block size): far more than the pixels a few kB can hold need, far less than a header can declare
within the size limits."""

DATA = Path(__file__).resolve().parent / "data" / "fuzz"
PYDICOM_FILES = Path(pydicom.__file__).resolve().parent / "data" / "test_files"

INTEGERS = (0, 1, 2, 3, 7, 8, 15, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 46341, 100_000, 0x7FFFFFFF,
            0x80000000, 0xFFFFFFFF)
FLOATS = (0.0, -1.0, 1e-30, 1e30, math.inf, -math.inf, math.nan, 352.0, 2.0**31)


# --- seeds: tiny valid files and where their header fields are ----------------------------------------


@dataclass(frozen=True)
class Seed:
    """A valid file to mutate: its bytes and suffix, its header fields as (offset, struct format), the readers it
    is read with, and ``pack`` applied after mutation (gzip, for a .nii.gz whose header is mutated)."""

    name: str
    suffix: str
    data: bytes
    fields: tuple[tuple[int, str], ...]
    readers: tuple[Callable, ...]
    pack: Callable[[bytes], bytes] | None = None


def _pil(frames: list | np.ndarray | Image.Image, suffix: str, **options) -> bytes:
    """The file Pillow writes for an image or array, or for a list of them as frames."""
    frames = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in (frames if isinstance(frames, list) else [frames])]
    out = io.BytesIO()
    frames[0].save(out, format=Image.registered_extensions()[suffix], save_all=len(frames) > 1,
                   append_images=frames[1:], **options)
    return out.getvalue()


def _png_fields(data: bytes) -> list[tuple[int, str]]:
    """IHDR's width, height, bit depth, colour type and interlace; every chunk's length."""
    fields, at = [(16, ">I"), (20, ">I"), (24, "B"), (25, "B"), (28, "B")], 8
    while at + 8 <= len(data):
        fields.append((at, ">I"))
        at += 12 + struct.unpack_from(">I", data, at)[0]
    return fields


def _jpeg_fields(data: bytes) -> list[tuple[int, str]]:
    """Every segment's length up to the start of scan; the frame's height, width and component count."""
    fields, at = [], 2
    while at + 4 <= len(data) and data[at] == 0xFF and data[at + 1] != 0xDA:
        fields.append((at + 2, ">H"))
        if 0xC0 <= data[at + 1] <= 0xCF and data[at + 1] not in (0xC4, 0xC8, 0xCC):
            fields += [(at + 5, ">H"), (at + 7, ">H"), (at + 9, "B")]
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return fields + [(at + 2, ">H"), (at + 4, "B")]


BMP_FIELDS = ((2, "<I"), (10, "<I"), (14, "<I"), (18, "<i"), (22, "<i"), (26, "<H"), (28, "<H"), (30, "<I"),
              (34, "<I"), (46, "<I"))  # file size, data offset, header size, width, height, planes, bits, ...


def _tiff_fields(data: bytes) -> list[tuple[int, str]]:
    """Every directory's entry count, each entry's count and value, every next-directory offset."""
    order = "<" if data[:2] == b"II" else ">"
    fields, at = [(4, order + "I")], struct.unpack_from(order + "I", data, 4)[0]
    while at:
        (count,) = struct.unpack_from(order + "H", data, at)
        fields.append((at, order + "H"))
        for k in range(count):
            entry = at + 2 + 12 * k
            fields += [(entry + 4, order + "I"), (entry + 8, order + "I"), (entry + 8, order + "H")]
        fields.append((at + 2 + 12 * count, order + "I"))
        at = struct.unpack_from(order + "I", data, at + 2 + 12 * count)[0]
    return fields


DICOM_TAGS = ((0x0002, 0x0000), (0x0028, 0x0002), (0x0028, 0x0008), (0x0028, 0x0010), (0x0028, 0x0011),
              (0x0028, 0x0100), (0x0028, 0x0101), (0x0028, 0x0102), (0x0028, 0x0103), (0x7FE0, 0x0010))
LONG_VRS = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV")


def _dicom_fields(data: bytes) -> list[tuple[int, str]]:
    """Length and value of the image elements (explicit VR little endian): group length, samples, frames, rows,
    columns, bits, pixel representation, pixel data."""
    fields = []
    for group, element in DICOM_TAGS:
        at = data.find(struct.pack("<HH", group, element), 132)
        if at < 0:
            continue
        vr = data[at + 4 : at + 6]
        if vr in LONG_VRS:
            fields.append((at + 8, "<I"))
        else:
            length = struct.unpack_from("<H", data, at + 6)[0]
            fields += [(at + 6, "<H"), (at + 8, f"{length}s" if vr == b"IS" else "<H")]
    return fields


NIFTI_FIELDS = ((0, "<i"), *((40 + 2 * k, "<h") for k in range(8)), (70, "<h"), (72, "<h"), (76, "<f"), (80, "<f"),
                (108, "<f"), (112, "<f"), (116, "<f"))  # sizeof_hdr, dim, datatype, bitpix, pixdim, vox_offset, scl


def _noise(shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)


def _seeds(folder: Path) -> list[Seed]:
    grey, rgb, deep = _noise((6, 8)), _noise((6, 8, 3)), _noise((6, 8), np.uint16)
    palette = Image.fromarray(rgb).quantize(8)
    frames = [_noise((5, 7)) + k for k in range(3)]
    image, volume, both = (read_image,), (read_volume,), (read_image, read_volume)
    write_nifti(folder / "cube.nii", CUBE[:4, :5, :3])
    nifti = (folder / "cube.nii").read_bytes()
    seeds = [
        Seed("png-grey", ".png", _pil(grey, ".png"), (), image),
        Seed("png-16bit", ".png", _pil(deep, ".png"), (), image),
        Seed("png-palette", ".png", _pil(palette, ".png"), (), image),
        Seed("jpeg", ".jpg", _pil(rgb, ".jpg", quality=90), (), image),
        Seed("jpeg-progressive", ".jpg", _pil(grey, ".jpg", progressive=True), (), image),
        Seed("bmp-rgb", ".bmp", _pil(rgb, ".bmp"), BMP_FIELDS, image),
        Seed("bmp-palette", ".bmp", _pil(palette, ".bmp"), BMP_FIELDS, image),
        Seed("tiff-grey", ".tif", _pil(grey, ".tif"), (), image),
        Seed("tiff-16bit", ".tif", _pil(deep, ".tif"), (), image),
        Seed("tiff-lzw", ".tif", _pil(rgb, ".tif", compression="tiff_lzw"), (), image),
        Seed("tiff-frames", ".tif", _pil(frames, ".tif"), (), both),
        Seed("tiff-frames-16bit", ".tif", _pil([f.astype(np.uint16) * 257 for f in frames], ".tif"), (), both),
        Seed("dicom", ".dcm", write_dicom(folder / "slice.dcm").read_bytes(), (), volume),
        Seed("dicom-frames", ".dcm", write_dicom(folder / "frames.dcm", np.stack([SLICE, SLICE + 5])).read_bytes(), (),
             volume),
        Seed("dicom-rle", ".dcm", (PYDICOM_FILES / "SC_rgb_rle.dcm").read_bytes(), (), volume),
        Seed("dicom-jpeg", ".dcm", (PYDICOM_FILES / "SC_rgb_small_odd_jpeg.dcm").read_bytes(), (), volume),
        Seed("dicom-jpeg-ls", ".dcm", (PYDICOM_FILES / "MR_small_jpeg_ls_lossless.dcm").read_bytes(), (), volume),
        Seed("dicom-jpeg2000", ".dcm", (PYDICOM_FILES / "JPEG2000.dcm").read_bytes(), (), volume),
        Seed("nifti", ".nii", nifti, NIFTI_FIELDS, volume),
        Seed("nifti-gz", ".nii.gz", nifti, NIFTI_FIELDS, volume, pack=lambda data: gzip.compress(data, mtime=0)),
        Seed("nifti-gz-bytes", ".nii.gz", gzip.compress(nifti, mtime=0), (), volume),
    ]
    finders = {".png": _png_fields, ".jpg": _jpeg_fields, ".tif": _tiff_fields, ".dcm": _dicom_fields}
    return [
        Seed(seed.name, seed.suffix, seed.data, tuple(finders[seed.suffix](seed.data)), seed.readers, seed.pack)
        if seed.suffix in finders else seed
        for seed in seeds
    ]


# --- mutations ----------------------------------------------------------------------------------------


def _extreme(fmt: str, value: float) -> bytes:
    """``value`` packed as ``fmt``: an integer wraps to the field's width, an "Ns" field gets ASCII digits."""
    whole = int(value) if math.isfinite(value) else 0
    if fmt.endswith("s"):
        width = int(fmt[:-1])
        return str(whole)[-width:].rjust(width).encode()
    if fmt.endswith("f"):
        return struct.pack(fmt, value)
    bits = 8 * struct.calcsize(fmt)
    whole %= 1 << bits
    if fmt[-1].islower() and whole >= 1 << (bits - 1):  # a signed field
        whole -= 1 << bits
    return struct.pack(fmt, whole)


def mutations(seed: Seed, rng: random.Random) -> list[tuple]:
    """One to four edits of ``seed.data``, drawn from ``rng``; positions wrap around the (edited) length."""
    kinds = ("flip", "write", "insert", "delete", "cut") + (("field",) if seed.fields else ())
    edits = []
    for _ in range(rng.randint(1, 4)):
        kind, at = rng.choice(kinds), rng.randrange(len(seed.data))
        if kind == "flip":
            edits.append((kind, at, rng.randrange(8)))
        elif kind == "write":
            edits.append((kind, at, rng.randbytes(rng.randint(1, 8))))
        elif kind == "insert":
            edits.append((kind, at, rng.randbytes(rng.randint(1, 64))))
        elif kind == "delete":
            edits.append((kind, at, rng.randint(1, 64)))
        elif kind == "cut":
            edits.append((kind, at))
        else:
            edits.append((kind, rng.choice(seed.fields), rng.choice(INTEGERS + FLOATS)))
    return edits


def mutate(data: bytes, edits: list[tuple]) -> bytes:
    """``data`` with ``edits`` (drawn from :func:`mutations`) applied in order."""
    out = bytearray(data)
    for kind, where, *args in edits:
        if kind == "field":
            (at, fmt), value = where, args[0]
            packed = _extreme(fmt, value)
            out[at : at + len(packed)] = packed
            continue
        if not out:
            break
        at = where % len(out)
        if kind == "flip":
            out[at] ^= 1 << args[0]
        elif kind == "write":
            out[at : at + len(args[0])] = args[0]
        elif kind == "insert":
            out[at:at] = args[0]
        elif kind == "delete":
            del out[at : at + args[0]]
        else:
            del out[at:]
    return bytes(out)


# --- one read, checked -------------------------------------------------------------------------------


@contextmanager
def _cpu_bound(seconds: float, hang: float) -> Iterator[None]:
    """Interrupt the code running here with TimeoutError once the process has used ``seconds`` of CPU time; end the
    process (``faulthandler``, tracebacks on stderr) where it still runs after ``hang`` seconds of wall-clock time,
    e.g. stuck in C code, where no Python signal handler runs."""
    def expire(signum, frame):
        raise TimeoutError(f"over {seconds} s of CPU time")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    faulthandler.dump_traceback_later(hang, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


def outcome(path: Path, reader: Callable) -> str | None:
    """Read ``path`` with ``reader``: None when decoded (float32 in [0, 1]), else the reason it was refused.

    Any other exception, a read over ``SECONDS`` of CPU time or one allocating over ``MEMORY`` fails the test; a read
    still running after ``HANG`` seconds ends the test process.
    """
    Image.core.reset_stats()
    tracing = tracemalloc.is_tracing()  # (by ``python -X tracemalloc``, say): left running, its peak reset
    if tracing:
        tracemalloc.reset_peak()
    else:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    start = time.process_time()
    try:
        with _cpu_bound(SECONDS, HANG):
            result = reader(path)
    except ImageReadError as err:
        assert err.path == str(path) and err.reason and "\n" not in str(err), repr(err)
        result, reason = None, err.reason
    finally:
        seconds = time.process_time() - start
        allocated = (tracemalloc.get_traced_memory()[1] - before
                     + Image.core.get_stats()["allocated_blocks"] * Image.core.get_block_size())
        if not tracing:
            tracemalloc.stop()
    assert seconds < SECONDS, f"{path.name}: {seconds:.1f} s"
    assert allocated < MEMORY, f"{path.name}: {allocated} bytes allocated"
    if result is None:
        return reason
    data = result if isinstance(result, np.ndarray) else result.data
    assert data.dtype == np.float32 and np.isfinite(data).all() and 0 <= data.min() <= data.max() <= 1
    return None


def _write(folder: Path, seed: Seed, data: bytes) -> Path:
    path = folder / f"{seed.name}{seed.suffix}"
    path.write_bytes(seed.pack(data) if seed.pack else data)
    return path


# --- the tests ---------------------------------------------------------------------------------------


SEED_NAMES = ["png-grey", "png-16bit", "png-palette", "jpeg", "jpeg-progressive", "bmp-rgb", "bmp-palette",
              "tiff-grey", "tiff-16bit", "tiff-lzw", "tiff-frames", "tiff-frames-16bit", "dicom", "dicom-frames",
              "dicom-rle", "dicom-jpeg", "dicom-jpeg-ls", "dicom-jpeg2000", "nifti", "nifti-gz", "nifti-gz-bytes"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(folder) -> dict[str, Seed]:
    return {seed.name: seed for seed in _seeds(folder)}


def test_seeds_are_decoded(seeds, folder):
    assert list(seeds) == SEED_NAMES
    for seed in seeds.values():
        path = _write(folder, seed, seed.data)
        assert [outcome(path, reader) for reader in seed.readers] == [None] * len(seed.readers), seed.name


@pytest.mark.parametrize(("name", "index"), [(name, k) for name in SEED_NAMES for k in range(CASES)],
                         ids=[f"{name}-{k}" for name in SEED_NAMES for k in range(CASES)])
def test_mutated_file_is_read_or_refused(seeds, folder, name, index):
    seed = seeds[name]
    path = _write(folder, seed, mutate(seed.data, mutations(seed, random.Random(f"{name}-{index}"))))
    for reader in seed.readers:
        outcome(path, reader)


def test_a_read_stuck_in_c_code_ends_the_process_with_its_traceback():
    """``time.sleep`` stands for a decoder stuck in C code: no CPU time, no bytecode, so no TimeoutError."""
    stuck = "import time, test_fuzz\nwith test_fuzz._cpu_bound(5.0, 0.5):\n    time.sleep(60)\n"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", stuck], cwd=Path(__file__).parent, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and time.monotonic() - start < 30
    assert "Timeout (0:00:00.500000)!" in done.stderr and "most recent call first" in done.stderr, done.stderr


REGRESSIONS = {
    # found by the fuzzer (mutated seeds above); what the readers did before -> what they say now (None: decoded)
    "png-idat-length-2gib.png": None,  # an IDAT chunk of 2 GiB: Pillow's read(2 GiB) allocated 2 GiB
    "bmp-width-4194312.bmp": "cannot decode image: truncated file",  # Pillow allocated 96 MiB, then said truncated
    "jpeg-progressive-2048x65535.jpg": "cannot decode image: truncated file",  # 128 MiB allocated, then corrupt
    "tiff-16bit-width-16777224.tif": "cannot decode image: truncated file",  # 96 MiB (384 MiB as a volume)
    "tiff-read-as-gimp-brush.tif": "cannot decode image: truncated file",  # Pillow's next guess: read(1.2 GB)
    "tiff-width-without-value.tif":  # IndexError in the TIFF walk that explains Pillow's failure
        "unsupported format: a TIFF variant Pillow cannot read (8-bit unsigned, 1 sample per pixel)",
    "dicom-meta-length-off-by-one.dcm":  # an element length read as 0.8 GB: pydicom's read allocated it
        "no pixel data in DICOM file (truncated, or not an image object)",
    "dicom-jpeg2000-byte-inserted.dcm":  # 68 MB allocated on a length
        "cannot decode image: corrupt DICOM header (element (0200,0000) has no known VR (3169 bytes))",
    "dicom-columns-of-1-byte.dcm":  # pydicom's BytesLengthException escaped
        "cannot decode image: corrupt DICOM header (element (0028,0011) does not read as VR US (1 byte))",
    "dicom-rows-of-4-values.dcm": "no pixel data in DICOM file (truncated, or not an image object)",  # TypeError
    "dicom-no-columns.dcm":  # AttributeError
        "cannot decode image: DICOM pixel data without Rows and Columns (an incomplete image object)",
    "dicom-empty-pixel-data.dcm": "cannot decode image: truncated file",  # TypeError: len(None)
    "dicom-frames-minus-1.dcm": "volume must have at least one slice, got -1x3x4",  # ValueError: negative dimensions
    "dicom-jpeg-no-syntax.dcm":  # ValueError: 324 values reshaped to 1x3x3x3
        "cannot decode image: DICOM pixel data of 324 values, the header says 1x3x3x3",
    "dicom-spacing-not-a-number.dcm": None,  # PixelSpacing "0/5": ValueError; now the spacing is unknown (1 mm)
    "dicom-jpeg-bits-stored-1.dcm": None,  # BitsStored 1 under 8-bit JPEG data: values up to 135, not in [0, 1]
    "dicom-jpeg-32767x4095.dcm":  # Rows x Columns of a 3x3 JPEG: pydicom allocated 1.9 GB before decoding
        "cannot decode image: DICOM Rows x Columns are 32767x4095, its compressed data 3x3",
    "nifti-no-slices.nii": "volume must have at least one slice, got 0x4x5",  # IndexError in the percentiles
    "nifti-minus-19195-slices.nii": "volume must have at least one slice, got -19195x4x5",  # OverflowError (memmap)
    # found in review: 200 frames whose directories all point at one strip, 26 kB; only the first frame was checked
    # (so 1 MiB could declare 64 frames of 1024 x 1024 float32, 256 MiB allocated)
    "tiff-200-frames-sharing-one-strip.tif": "cannot decode image: truncated file",
}
VOLUME_REGRESSIONS = {"tiff-200-frames-sharing-one-strip.tif"}
"""Regression files read with ``read_volume`` beside the DICOM and NIfTI ones (the rest with ``read_image``)."""


def test_regression_files_are_all_listed():
    assert sorted(path.name for path in DATA.iterdir()) == sorted(REGRESSIONS)


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_file(name):
    path = DATA / name
    volume = path.suffix in (".dcm", ".nii") or name in VOLUME_REGRESSIONS
    assert outcome(path, read_volume if volume else read_image) == REGRESSIONS[name]
