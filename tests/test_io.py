from __future__ import annotations

import errno
import pickle
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, features

import selfseg.decoding
import selfseg.io
from selfseg.io import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    MIN_SIDE,
    ImageReadError,
    WriteError,
    atomic_path,
    check_folder,
    find_images,
    is_temporary,
    read_image,
    read_mask,
    read_note,
    sniff_format,
    write_csv,
    write_image,
)

from helpers import png_bytes, tiff_bytes

GREY = np.array([[0, 1, 128], [200, 254, 255]], dtype=np.uint8)
RGB = np.array(
    [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8
)
U16 = np.array([[0, 257], [1000, 65535]], dtype=np.uint16)


def _noise(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)


def _save(path, array: np.ndarray, mode: str | None = None, **kwargs):
    image = Image.fromarray(array)
    if mode is not None:
        image = image.convert(mode)
    image.save(path, **kwargs)
    return path


def _raw(path) -> tuple[str, int, np.ndarray]:
    """Mode, frame count and pixels of a file as Pillow sees it."""
    with Image.open(path) as image:
        return image.mode, getattr(image, "n_frames", 1), np.asarray(image)


def _assert_read_error(path, reason: str, exact: bool = True) -> None:
    """read_image(path) fails naming ``path``, with exactly ``reason`` (or containing it), on one line."""
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path)
    if exact:
        assert info.value.reason == reason
    else:
        assert reason in info.value.reason
    assert str(info.value) == f"{path}: {info.value.reason}"
    assert "\n" not in str(info.value)


# --- read_image: formats and modes -------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_grey_8bit_exact(tmp_path, suffix):
    out = read_image(_save(tmp_path / f"g{suffix}", GREY))
    assert out.dtype == np.float32
    assert out.shape == (2, 3, 1)
    np.testing.assert_array_equal(out[..., 0], GREY.astype(np.float32) / 255)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_read_16bit(tmp_path, suffix):
    out = read_image(_save(tmp_path / f"a{suffix}", U16))
    assert out.shape == (2, 2, 1)
    assert out[1, 1, 0] == 1.0
    assert out[0, 0, 0] == 0.0
    assert out[0, 1, 0] == pytest.approx(257 / 65535)
    assert out[1, 0, 0] == pytest.approx(1000 / 65535)


def test_read_16bit_big_endian(tmp_path):
    path = tmp_path / "be.tif"
    Image.frombytes("I;16B", (2, 2), U16.astype(">u2").tobytes()).save(path)
    np.testing.assert_allclose(read_image(path)[..., 0], U16 / 65535, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_rgb_exact(tmp_path, suffix):
    out = read_image(_save(tmp_path / f"c{suffix}", RGB))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, RGB / np.float32(255))


def test_read_rgb_jpeg(tmp_path):
    colour = np.zeros((16, 16, 3), dtype=np.uint8)
    colour[...] = (200, 40, 90)
    out = read_image(_save(tmp_path / "c.jpg", colour, quality=95))
    assert out.shape == (16, 16, 3)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[8, 8], np.array([200, 40, 90]) / 255, atol=0.03)


def test_read_grey_jpeg_is_one_channel(tmp_path):
    out = read_image(_save(tmp_path / "g.jpeg", np.full((8, 8), 100, np.uint8)))
    assert out.shape == (8, 8, 1)
    np.testing.assert_allclose(out, 100 / 255, atol=0.01)


def test_read_rgba_drops_alpha(tmp_path):
    rgba = np.concatenate([RGB, np.array([[[0], [50]], [[100], [255]]], np.uint8)], axis=2)
    out = read_image(_save(tmp_path / "a.png", rgba))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out, RGB / np.float32(255))


def test_read_la_drops_alpha(tmp_path):
    path = tmp_path / "la.png"
    Image.merge("LA", [Image.fromarray(GREY), Image.fromarray(np.zeros_like(GREY))]).save(path)
    assert _raw(path)[0] == "LA"
    out = read_image(path)
    assert out.shape == (2, 3, 1)
    np.testing.assert_array_equal(out[..., 0], GREY / np.float32(255))


def test_read_palette_gives_palette_colours(tmp_path):
    image = Image.frombytes("P", (2, 2), bytes([0, 1, 2, 1]))
    image.putpalette([255, 0, 0, 0, 128, 0, 7, 8, 9] + [0] * (253 * 3))
    image.save(tmp_path / "p.png")
    assert _raw(tmp_path / "p.png")[0] == "P"
    out = read_image(tmp_path / "p.png")
    expected = np.array([[[255, 0, 0], [0, 128, 0]], [[7, 8, 9], [0, 128, 0]]]) / 255
    assert out.shape == (2, 2, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_read_bilevel(tmp_path):
    bits = np.array([[True, False], [False, True]])
    path = tmp_path / "b.png"
    Image.fromarray(bits).save(path)
    assert _raw(path)[0] == "1"
    out = read_image(path)
    assert out.shape == (2, 2, 1)
    np.testing.assert_array_equal(out[..., 0], bits.astype(np.float32))


def test_read_cmyk_jpeg_gives_rgb(tmp_path):
    out = read_image(_save(tmp_path / "k.jpg", np.full((8, 8, 3), 128, np.uint8), mode="CMYK"))
    assert out.shape == (8, 8, 3)
    assert np.all((out >= 0) & (out <= 1))


def test_read_int32_tiff(tmp_path):
    small = np.array([[0, 65535], [0, 0]], dtype=np.int32)
    big = np.array([[0, 100_000], [50_000, 25_000]], dtype=np.int32)
    np.testing.assert_array_equal(read_image(_save(tmp_path / "s.tif", small))[..., 0], [[0, 1], [0, 0]])
    out = read_image(_save(tmp_path / "b.tif", big))[..., 0]
    np.testing.assert_allclose(out, big / 100_000, rtol=1e-6)


def test_read_float_tiff_min_max(tmp_path):
    values = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    out = read_image(_save(tmp_path / "f.tif", values))
    assert out.shape == (2, 2, 1)
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.25], [0.5, 1.0]])


def test_read_keeps_memory_near_the_result(tmp_path):
    """Peak Python-side memory: the decoded uint8 pixels and the float32 result, no float temporaries."""
    path = _save(tmp_path / "big.png", _noise((512, 512, 3)))
    tracemalloc.start()
    try:
        out = read_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (512, 512, 3)
    assert peak < 1.5 * out.nbytes


def test_read_multiframe_first_frame(tmp_path):
    path = tmp_path / "m.tif"
    first, second = Image.fromarray(GREY), Image.fromarray(255 - GREY)
    first.save(path, save_all=True, append_images=[second])
    assert _raw(path)[1] == 2
    np.testing.assert_array_equal(read_image(path)[..., 0], GREY / np.float32(255))


def test_read_mask(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0, 2] = 255
    rgb[1, 1] = (128, 0, 0)
    rgb[0, 1] = (127, 127, 127)
    mask = read_mask(_save(tmp_path / "m.png", rgb))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [[True, False], [False, True]])


# --- read_image: errors, one test per bad-input class, with the exact reason -------


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "nope.png", "file not found")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    _assert_read_error(path, "empty file")


def test_directory(tmp_path):
    (tmp_path / "dir.png").mkdir()
    _assert_read_error(tmp_path / "dir.png", "is a directory, not an image file")


@pytest.mark.parametrize(
    "data",
    [b"this is not an image at all", b"\x89PNG\r\n\x1a\n this is not a png", b"BM" + bytes(100), bytes(64)],
    ids=["text", "png-signature-then-junk", "bm-then-zeros", "zeros"],
)
def test_not_an_image(tmp_path, data):
    path = tmp_path / "garbage.png"
    path.write_bytes(data)
    _assert_read_error(path, "cannot decode image: unknown image format")


@pytest.mark.parametrize(
    "suffix, options",
    [(".png", {}), (".jpg", {}), (".bmp", {}), (".gif", {}), (".tif", {}),
     (".tif", {"compression": "tiff_deflate"}), (".tif", {"compression": "tiff_lzw"}), (".webp", {}), (".jp2", {})],
    ids=["png", "jpeg", "bmp", "gif", "tiff", "tiff-deflate", "tiff-lzw", "webp", "jpeg2000"],
)
@pytest.mark.parametrize("fraction", [0.3, 0.95])
def test_truncated(tmp_path, suffix, options, fraction):
    feature = {".webp": "webp", ".jp2": "jpg_2000"}.get(suffix)
    if feature and not features.check(feature):
        pytest.skip(f"this Pillow cannot write {suffix}")
    whole = _save(tmp_path / f"whole{suffix}", _noise((32, 32, 3)), **options)
    data = whole.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    _assert_read_error(path, "cannot decode image: truncated file")


@pytest.mark.parametrize("height, width", [(0, 0), (0, 4), (4, 0), (1, 1), (1, 5), (5, 1)])
def test_too_small(tmp_path, height, width):
    path = tmp_path / "small.png"
    if height and width:  # Pillow writes these; it refuses to write empty images
        _save(path, np.zeros((height, width), np.uint8))
    else:
        path.write_bytes(png_bytes(height, width))
    _assert_read_error(path, f"image must be at least 2x2 pixels, got {height}x{width}")


def test_smallest_image_is_read(tmp_path):
    assert read_image(_save(tmp_path / "two.png", GREY[:, :2])).shape == (2, 2, 1)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_float_tiff_non_finite(tmp_path, bad):
    values = np.array([[0.0, bad], [1.0, 2.0]], dtype=np.float32)
    _assert_read_error(_save(tmp_path / "f.tif", values), "contains NaN or infinite values")


@pytest.mark.parametrize(
    "head, name",
    [(bytes(128) + b"DICM" + bytes(64), "DICOM"), (bytes(344) + b"n+1\0" + bytes(8), "NIfTI")],
)
def test_volume_format_is_unsupported_here(tmp_path, head, name):
    path = tmp_path / "scan.png"
    path.write_bytes(head)
    _assert_read_error(path, f"unsupported format: {name} is a volume format, read it with selfseg.volumes.read_volume")


def test_unsupported_tiff_variant(tmp_path):
    path = tmp_path / "double.tif"
    path.write_bytes(tiff_bytes(np.arange(4, dtype=np.float64).reshape(2, 2), sample_format=3))
    _assert_read_error(path, "unsupported format: a TIFF variant Pillow cannot read (64-bit float, 1 sample per pixel)")


def test_missing_decoder_is_unsupported(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.jpg", _noise((8, 8, 3)))

    def no_decoder(self):
        raise OSError("decoder jpeg not available")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoder)
    _assert_read_error(path, "unsupported format: this Pillow has no JPEG decoder")


def test_corrupt_data(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(png_bytes(4, 4, idat=b"not zlib data"))
    _assert_read_error(path, "cannot decode image: corrupt PNG data (", exact=False)


def test_too_large_checked_before_decoding(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", np.zeros((20, 30), np.uint8))
    decoded = []
    load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(1) or load(self))
    monkeypatch.setattr(selfseg.decoding, "MAX_PIXELS", 599)
    _assert_read_error(path, "image too large: 20x30 = 600 pixels, over the limit of 599")
    assert decoded == []
    monkeypatch.setattr(selfseg.decoding, "MAX_PIXELS", 600)
    assert read_image(path).shape == (20, 30, 1)
    assert decoded


def test_too_large_header_only(tmp_path):
    """A 100000 x 100000 header with no real data: refused from the header, Pillow's bomb error not shown."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(100_000, 100_000, idat=zlib.compress(b"")))
    _assert_read_error(path, f"image too large: 100000x100000 = 10000000000 pixels, over the limit of {MAX_PIXELS}")


def test_pillow_bomb_limit_gives_the_same_message(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow refuses over 20 pixels
    _assert_read_error(path, "image too large: 20x20 = 400 pixels, over the limit of 20")


def test_pillow_bomb_warning_does_not_leak(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # Pillow warns over 300 pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).shape == (20, 20, 1)


def test_max_pixels_documented():
    assert MAX_PIXELS == 2**27 and MIN_SIDE == 2
    assert MAX_PIXELS < 2 * Image.MAX_IMAGE_PIXELS  # so Pillow's default limit never speaks first


@pytest.mark.parametrize(
    "data, name",
    [(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR", "PNG"), (b"\xff\xd8\xff\xe0", "JPEG"), (b"GIF89a", "GIF"),
     (b"II*\0", "TIFF"), (b"MM\0*", "TIFF"), (b"RIFF\0\0\0\0WEBP", "WEBP"), (b"plain text", None),
     (bytes(128) + b"DICM", "DICOM"), (bytes(344) + b"n+1\0", "NIfTI")],
)
def test_sniff_format(tmp_path, data, name):
    path = tmp_path / "file"
    path.write_bytes(data)
    assert sniff_format(path) == name


def test_image_read_error_attributes_and_pickle(tmp_path):
    err = ImageReadError(tmp_path / "x.png", "bad\ndata")
    assert isinstance(err, ValueError)
    assert err.path == str(tmp_path / "x.png")
    assert err.reason == "bad data"
    assert str(err) == f"{tmp_path / 'x.png'}: bad data"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, str(copy)) == (err.path, err.reason, str(err))


# --- atomic_path -----------------------------------------------------------------


def test_atomic_path_success(tmp_path):
    dest = tmp_path / "sub" / "deeper" / "out.png"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent
        assert tmp.name.startswith(".out.png.")
        assert tmp.suffix == ".png"
        assert tmp != dest
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["out.png"]


def test_atomic_path_keeps_compressed_double_suffix(tmp_path):
    with atomic_path(tmp_path / "scan.nii.gz") as tmp:
        assert tmp.name.endswith(".tmp.nii.gz") and tmp.name.startswith(".scan.nii.gz.")
        tmp.write_bytes(b"x")
    with atomic_path(tmp_path / "a.b.png") as tmp:
        assert tmp.name.endswith(".tmp.png")
        tmp.write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.b.png", "scan.nii.gz"]


def test_temporary_names_are_recognised_whole(tmp_path):
    for name in ("out.png", "scan.nii.gz", "results.csv", "model", "odd.my-suffix", "y" * 250 + ".png"):
        with atomic_path(tmp_path / name) as tmp:
            assert is_temporary(tmp.name) and not is_temporary(name)
            tmp.write_bytes(b"x")
    assert not is_temporary(".x.0123abcd.tmp_labels.png") and not is_temporary(".x.0123abcd.tmp.png_mask.png")


def test_atomic_path_exception_keeps_destination(tmp_path):
    dest = tmp_path / "out.csv"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert dest.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_path_exception_before_write(tmp_path):
    with pytest.raises(KeyError):
        with atomic_path(tmp_path / "out.png"):
            raise KeyError("x")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_is_one_write_error_naming_the_file_and_its_cause(tmp_path):
    dest = tmp_path / "out.csv"
    dest.write_text("old")
    with pytest.raises(WriteError) as raised:
        with atomic_path(dest) as tmp:
            tmp.write_text("partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    err = raised.value
    assert str(err) == f"cannot write {dest}: no space left on device" and err.filename == str(dest)
    assert err.errno == errno.ENOSPC and err.reason == "no space left on device" and err.disk
    assert dest.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    copy = pickle.loads(pickle.dumps(err))  # it travels back from worker processes
    assert type(copy) is WriteError and str(copy) == str(err) and copy.disk


def test_a_write_error_without_an_errno_is_an_io_error(tmp_path):
    err = WriteError(None, tmp_path / "out.png")
    assert str(err) == f"cannot write {tmp_path / 'out.png'}: input/output error" and err.disk


def test_a_name_too_long_is_a_write_error_of_that_file_only(tmp_path):
    dest = tmp_path / ("x" * 250 + "_overlay.png")
    with pytest.raises(WriteError, match="file name too long$") as raised:
        write_image(dest, GREY)
    assert not raised.value.disk and list(tmp_path.iterdir()) == []


def test_check_folder_creates_it_or_names_why_it_cannot(tmp_path, monkeypatch):
    assert check_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and list((tmp_path / "a" / "b").iterdir()) == []
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match=f"^cannot write {tmp_path / 'file' / 'out'}: not a directory$"):
        check_folder(tmp_path / "file" / "out")

    def refuse(self, *args, **kwargs):  # root writes anywhere: a read-only file system is simulated
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(type(tmp_path), "touch", refuse)
    with pytest.raises(WriteError, match=f"^cannot write {tmp_path}: read-only file system$"):
        check_folder(tmp_path)


def test_a_png_carries_its_note(tmp_path):
    note = '{"image": "<b>x</b>", "é": "1\n2"}'
    write_image(tmp_path / "a.png", GREY, note=note)
    assert read_note(tmp_path / "a.png") == note and np.array_equal(read_image(tmp_path / "a.png")[..., 0] * 255, GREY)
    write_image(tmp_path / "a.png", GREY)
    assert read_note(tmp_path / "a.png") is None and read_note(tmp_path / "missing.png") is None
    with pytest.raises(ValueError, match="PNG files only"):
        write_image(tmp_path / "a.bmp", GREY, note=note)


# --- write_image / write_csv -----------------------------------------------------


@pytest.mark.parametrize(
    "array",
    [GREY, RGB, np.concatenate([RGB, np.full((2, 2, 1), 77, np.uint8)], axis=2)],
    ids=["L", "RGB", "RGBA"],
)
def test_write_image_uint8_round_trip(tmp_path, array):
    path = tmp_path / "out" / "img.png"
    write_image(path, array)
    np.testing.assert_array_equal(_raw(path)[2], array)
    assert [p.name for p in path.parent.iterdir()] == ["img.png"]


def test_write_image_uint16_round_trip(tmp_path):
    path = tmp_path / "img16.png"
    write_image(path, U16)
    mode, _, raw = _raw(path)
    assert mode.startswith("I;16")
    np.testing.assert_array_equal(raw, U16)
    np.testing.assert_allclose(read_image(path)[..., 0], U16 / 65535, rtol=1e-6)


def test_write_image_bool_round_trip(tmp_path):
    mask = np.array([[True, False, True], [False, False, True]])
    path = tmp_path / "mask.png"
    write_image(path, mask)
    raw = _raw(path)[2]
    assert raw.dtype == np.uint8
    np.testing.assert_array_equal(raw, mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(read_mask(path), mask)


def test_write_image_rejects_float(tmp_path):
    with pytest.raises(TypeError, match=r"uint8, uint16 or bool.*got dtype float64"):
        write_image(tmp_path / "x.png", np.zeros((2, 2)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "array",
    [np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 3), np.uint16), np.zeros((2, 2, 1), bool),
     np.zeros(4, np.uint8), np.zeros((0, 3), np.uint8)],
)
def test_write_image_rejects_shapes(tmp_path, array):
    with pytest.raises(ValueError, match=r"of shape \(H, W\).*got shape"):
        write_image(tmp_path / "x.png", array)
    assert list(tmp_path.iterdir()) == []


def test_write_csv(tmp_path):
    path = tmp_path / "res" / "metrics.csv"
    write_csv(path, ["name", "dice"], iter([("a.png", 0.5), ("b, c.png", 1)]))
    assert path.read_bytes() == b'name,dice\r\na.png,0.5\r\n"b, c.png",1\r\n'
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]


# --- find_images -----------------------------------------------------------------


def test_image_suffixes():
    assert IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def test_find_images_folder(tmp_path):
    for name in ["b.PNG", "a.jpg", "c.tiff", "notes.txt", ".hidden.png", "d.Jpeg", "e"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    (tmp_path / "sub.png" / "inner.png").write_bytes(b"x")
    found = find_images([tmp_path])
    assert [p.name for p in found] == ["a.jpg", "b.PNG", "c.tiff", "d.Jpeg"]
    assert all(p.parent == tmp_path for p in found)


def test_find_images_files_order_and_duplicates(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ["y.png", "x.png"]:
        (folder / name).write_bytes(b"x")
    odd = tmp_path / "scan.dat"
    odd.write_bytes(b"x")
    found = find_images([str(odd), folder, folder / "x.png", odd])
    assert found == [odd, folder / "x.png", folder / "y.png"]


def test_find_images_missing(tmp_path):
    missing = tmp_path / "missing_dir"
    with pytest.raises(FileNotFoundError, match="missing_dir"):
        find_images([tmp_path, missing])


def test_find_images_empty():
    assert find_images([]) == []


def test_read_labels_round_trips_8_and_16_bit(tmp_path):
    from selfseg.io import read_labels

    small = np.array([[1, 2], [3, 255]], dtype=np.uint8)
    large = np.array([[1, 300], [65535, 7]], dtype=np.uint16)
    write_image(tmp_path / "a.png", small)
    write_image(tmp_path / "b.png", large)
    np.testing.assert_array_equal(read_labels(tmp_path / "a.png"), small)
    np.testing.assert_array_equal(read_labels(tmp_path / "b.png"), large)
    assert read_labels(tmp_path / "b.png").dtype == np.int32
    Image.fromarray(np.zeros((2, 2, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="single-channel"):
        read_labels(tmp_path / "rgb.png")
    with pytest.raises(ImageReadError, match="missing.png"):
        read_labels(tmp_path / "missing.png")
