from __future__ import annotations

import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from selfseg.io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    atomic_path,
    find_images,
    read_image,
    read_mask,
    write_csv,
    write_image,
)

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


def _assert_read_error(path, reason: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path)
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
    small = np.array([[0, 65535]], dtype=np.int32)
    big = np.array([[0, 100_000], [50_000, 25_000]], dtype=np.int32)
    np.testing.assert_array_equal(read_image(_save(tmp_path / "s.tif", small))[..., 0], [[0, 1]])
    out = read_image(_save(tmp_path / "b.tif", big))[..., 0]
    np.testing.assert_allclose(out, big / 100_000, rtol=1e-6)


def test_read_float_tiff_min_max(tmp_path):
    values = np.array([[-2.0, 0.0], [2.0, 6.0]], dtype=np.float32)
    out = read_image(_save(tmp_path / "f.tif", values))
    assert out.shape == (2, 2, 1)
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.25], [0.5, 1.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_read_float_tiff_non_finite(tmp_path, bad):
    values = np.array([[0.0, bad]], dtype=np.float32)
    _assert_read_error(_save(tmp_path / "f.tif", values), "contains NaN or infinite values")


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


# --- read_image: errors --------------------------------------------------------


def test_missing_file(tmp_path):
    _assert_read_error(tmp_path / "nope.png", "file not found")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    _assert_read_error(path, "empty file")


def test_directory(tmp_path):
    (tmp_path / "dir.png").mkdir()
    _assert_read_error(tmp_path / "dir.png", "directory")


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all")
    _assert_read_error(path, "cannot decode image")


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated(tmp_path, suffix):
    whole = _save(tmp_path / f"whole{suffix}", _noise((32, 32, 3)))
    data = whole.read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    _assert_read_error(path, "cannot decode image")


def test_zero_width(tmp_path):
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 0, 4, 8, 0, 0, 0, 0)
    path = tmp_path / "zero.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    _assert_read_error(path, "cannot decode image")


def test_decompression_bomb(tmp_path, monkeypatch):
    path = _save(tmp_path / "big.png", np.zeros((20, 20), np.uint8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    _assert_read_error(path, "too large")


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
