from __future__ import annotations

import re
import sys
import tracemalloc
import types

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import MPEG2MPML, JPEG2000Lossless, JPEGLSLossless

import selfseg
import selfseg.decoding
import selfseg.volumes
import selfseg.volumes.base
from selfseg.io import ImageReadError
from selfseg.optional import MissingDependencyError, optional_import
from selfseg.volumes import (
    MAX_VOXELS,
    VOLUME_SUFFIXES,
    Volume,
    is_volume,
    read_volume,
    write_volume_like,
)

from helpers import CUBE, SLICE, UID, docs_script, nifti_affine, write_dicom, write_nifti, write_series


def _assert_error(path, reason: str, *, where=None, **kwargs) -> None:
    with pytest.raises(ImageReadError) as info:
        read_volume(path, **kwargs)
    assert info.value.path == str(where if where is not None else path)
    assert info.value.reason == reason
    assert "\n" not in str(info.value)


# --- DICOM files built here ------------------------------------------------------------------


def _linear_window(values, center, width):
    """DICOM PS3.3 C.11.2.1.2.1, written out independently of the implementation."""
    values = np.asarray(values, dtype=np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


def test_dicom_series_sorted_by_position_rescaled_and_windowed(tmp_path):
    folder = write_series(tmp_path / "series", slope=2, intercept=-100, center=0, width=101)
    volume = read_volume(folder)
    assert isinstance(volume, Volume)
    assert (volume.kind, volume.axis, volume.n_slices, volume.path) == ("dicom", 0, 3, folder)
    assert volume.data.dtype == np.float32 and volume.data.shape == (3, 3, 4)
    assert [f.name for f in volume.files] == ["c.dcm", "b.dcm", "a.dcm"]
    expected = np.stack([_linear_window(2.0 * (SLICE + 10 * k) - 100, 0, 101) for k in range(3)])
    np.testing.assert_allclose(volume.data, expected, atol=1e-6)
    assert volume.spacing == (0.5, 0.7)
    assert volume.voxel_spacing == (2.5, 0.5, 0.7)
    assert volume.intensity == "window center 0 width 101"
    # (slice, row, column) -> RAS mm: LPS (x, y, z) becomes (-x, -y, z)
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1], [20.0, 30.0, 10.0, 1])
    np.testing.assert_allclose(volume.affine @ [2, 2, 3, 1], [20.0 - 3 * 0.7, 30.0 - 2 * 0.5, 15.0, 1])


def test_dicom_series_sorted_by_instance_number_without_positions(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    for name, k in [("x.dcm", 2), ("y.dcm", 0), ("z.dcm", 1)]:
        write_dicom(folder / name, SLICE + 10 * k, n=k, instance=k + 1)
    volume = read_volume(folder)
    assert [f.name for f in volume.files] == ["y.dcm", "z.dcm", "x.dcm"]
    np.testing.assert_allclose(volume.data, np.stack([SLICE + 10 * k for k in range(3)]) / 130, atol=1e-6)
    assert volume.intensity == "min-max 0..130"


def test_dicom_without_window_is_min_max_of_the_volume(tmp_path):
    volume = read_volume(write_series(tmp_path / "s", slope=1, intercept=-1024))
    np.testing.assert_allclose(volume.data, np.stack([SLICE + 10 * k for k in range(3)]) / 130, atol=1e-6)
    assert volume.intensity == "min-max -1024..-894"


def test_dicom_multivalued_window_uses_the_first(tmp_path):
    volume = read_volume(write_dicom(tmp_path / "one.dcm", center=[50, 400], width=[41, 2000]))
    assert volume.data.shape == (1, 3, 4)
    np.testing.assert_allclose(volume.data[0], _linear_window(SLICE, 50, 41), atol=1e-6)
    assert volume.voxel_spacing == (1.0, 0.5, 0.7)


def test_dicom_monochrome1_is_inverted(tmp_path):
    volume = read_volume(write_dicom(tmp_path / "m1.dcm", photometric="MONOCHROME1", center=50, width=41))
    np.testing.assert_allclose(volume.data[0], 1 - _linear_window(SLICE, 50, 41), atol=1e-6)
    assert volume.intensity == "window center 50 width 41, MONOCHROME1 inverted"


def test_dicom_rgb_and_palette(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[1, 2] = (255, 51, 0)
    path = write_dicom(tmp_path / "rgb.dcm", SLICE, photometric="RGB")
    ds = pydicom.dcmread(path)
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    ds.save_as(path)
    volume = read_volume(path)
    assert volume.data.shape == (1, 3, 4, 3) and volume.intensity == "RGB / 255"
    np.testing.assert_allclose(volume.data[0], rgb / 255, atol=1e-6)
    bare = write_dicom(tmp_path / "bare.dcm", photometric="PALETTE COLOR")
    _assert_error(
        bare, "cannot decode image: DICOM PALETTE COLOR without a usable lookup table "
        "(No suitable Palette Color Lookup Table Module found)",
    )


def test_dicom_palette_colour_through_its_lookup_table(tmp_path):
    index = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 2]], np.uint8)
    lut = np.array([[0, 65535, 0, 13107], [0, 0, 65535, 13107], [0, 0, 0, 65535]], np.uint16)  # R, G, B of 4 entries
    path = write_dicom(tmp_path / "palette.dcm", photometric="PALETTE COLOR")
    ds = pydicom.dcmread(path)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = index.tobytes()
    for colour, entries in zip(("Red", "Green", "Blue"), lut):
        ds.add_new(f"{colour}PaletteColorLookupTableDescriptor", "US", [4, 0, 16])
        ds.add_new(f"{colour}PaletteColorLookupTableData", "OW", entries.astype("<u2").tobytes())
    ds.save_as(path)
    volume = read_volume(path)
    assert volume.data.shape == (1, 3, 4, 3) and volume.intensity == "PALETTE COLOR lookup table, RGB / 65535"
    np.testing.assert_allclose(volume.data[0], lut.T[index] / 65535, atol=1e-6)


def test_dicom_file_without_suffix_and_axis(tmp_path):
    folder = write_series(tmp_path / "s")
    plain = tmp_path / "IM0001"
    plain.write_bytes((folder / "a.dcm").read_bytes())
    assert is_volume(plain) and read_volume(plain).kind == "dicom"
    volume = read_volume(folder, axis=2)  # reslice: slices along the columns
    assert volume.data.shape == (4, 3, 3) and volume.spacing == (2.5, 0.5)
    np.testing.assert_array_equal(volume.data[1], read_volume(folder).data[:, :, 1])


def test_dicom_mixed_series(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_dicom(folder / "a.dcm", n=1, position=(0, 0, 0), series=f"{UID}.1")
    write_dicom(folder / "b.dcm", n=2, position=(0, 0, 1), series=f"{UID}.2")
    _assert_error(
        folder, f"mixed DICOM series: the folder holds 2 series (SeriesInstanceUID {UID}.1, {UID}.2); "
        "put each series in its own folder",
    )


def test_dicom_mixed_sizes_and_duplicate_positions(tmp_path):
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    write_dicom(sizes / "a.dcm", n=1, position=(0, 0, 0))
    write_dicom(sizes / "b.dcm", SLICE[:2], n=2, position=(0, 0, 1))
    _assert_error(sizes, "mixed DICOM series: slices of different sizes (2x4 and 3x4 pixels)")
    same = tmp_path / "same"
    same.mkdir()
    write_dicom(same / "a.dcm", n=1, position=(0, 0, 5))
    write_dicom(same / "b.dcm", n=2, position=(0, 0, 5))
    _assert_error(same, "mixed DICOM series: a.dcm and b.dcm are at the same position")
    colours = tmp_path / "colours"
    colours.mkdir()
    write_dicom(colours / "a.dcm", n=1, position=(0, 0, 0))
    write_dicom(colours / "b.dcm", n=2, position=(0, 0, 1), photometric="PALETTE COLOR")
    _assert_error(colours, "mixed DICOM series: slices with different colour types")


def test_dicom_slices_without_order(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    write_dicom(folder / "a.dcm", n=1)
    write_dicom(folder / "b.dcm", n=2)
    _assert_error(folder, "cannot order the DICOM slices: ImagePositionPatient and InstanceNumber are missing")


def test_dicom_compressed_without_decoder(tmp_path, monkeypatch):
    decoders = type(get_decoder(JPEGLSLossless))
    monkeypatch.setattr(decoders, "is_available", property(lambda self: False))  # as without the medical extra
    path = write_dicom(tmp_path / "ls.dcm", syntax=JPEGLSLossless, pixel_data=encapsulate([b"\xff\xd8 not really"]))
    _assert_error(
        path, "cannot decode pixel data compressed as JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80): "
        'no decoder installed; pip install "selfseg[medical]"',
    )


def test_dicom_compressed_data_that_cannot_be_decoded(tmp_path):
    path = write_dicom(tmp_path / "j2k.dcm", syntax=JPEG2000Lossless, pixel_data=encapsulate([b"\x00 garbage" * 4]))
    plugins = ", ".join(get_decoder(JPEG2000Lossless).available_plugins)
    _assert_error(
        path, "cannot decode pixel data compressed as JPEG 2000 Image Compression (Lossless Only) (1.2.840.10008.1.2.4.90): "
        f"the installed decoders ({plugins}) reject it as corrupt or of a variant they do not read; "
        "export the image uncompressed",
    )
    video = write_dicom(tmp_path / "mpeg.dcm", syntax=MPEG2MPML, pixel_data=encapsulate([b"\x00 video" * 4]))
    _assert_error(
        video, "unsupported format: pydicom has no decoder for DICOM pixel data compressed as "
        "MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)",
    )


def test_dicom_without_preamble_is_read_in_its_encoding(tmp_path):
    """A bare dataset (no preamble, "DICM" prefix or file meta) reads as the same volume as the file."""
    path = write_dicom(tmp_path / "file.dcm", center=50, width=41)
    for implicit in (True, False):
        ds = pydicom.dcmread(path)
        ds.preamble, ds.file_meta = None, FileMetaDataset()
        bare = tmp_path / f"bare-{implicit}.dcm"
        ds.save_as(bare, enforce_file_format=False, implicit_vr=implicit, little_endian=True)
        assert bare.read_bytes()[:2] == b"\x08\x00" and is_volume(bare)
        np.testing.assert_array_equal(read_volume(bare).data, read_volume(path).data)


def test_dicom_bad_files(tmp_path):
    whole = write_dicom(tmp_path / "whole.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[:-5])
    _assert_error(cut, "cannot decode image: truncated file")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    _assert_error(junk, "cannot decode image: not a DICOM file")
    unknown = tmp_path / "unknown.dcm"  # a transfer syntax UID of the same length that DICOM does not define
    unknown.write_bytes(whole.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.99999.1.2.1\x00"))
    _assert_error(unknown, "unsupported format: unknown DICOM transfer syntax 1.2.840.99999.1.2.1")
    empty = tmp_path / "empty.dcm"
    empty.touch()
    _assert_error(empty, "empty file")
    _assert_error(tmp_path / "missing.dcm", "file not found")


def _without_decoders(reason: str | None) -> str | None:
    """A refusal's reason without the list of installed decoders (it depends on what is installed)."""
    return None if reason is None else re.sub(r"the installed decoders \([^)]*\)", "the installed decoders", reason)


def test_pydicom_test_files_are_read_or_refused_as_formats_md_lists():
    """Each file of pydicom's own test data that holds pixel data reads as a volume in [0, 1] or is refused with
    an ImageReadError whose reason is one line; with the pydicom version the table of docs/formats.md was written
    with (docs/dicom_table.py), the outcome is the one the table lists, whatever decoders the reason names."""
    table = docs_script("dicom_table")
    version, published = table.published()
    assert len(published) > 60
    files = {path.relative_to(table.TEST_FILES).as_posix(): path for path in table.pixel_files()}
    compared = version == pydicom.__version__  # another pydicom ships other files, decoded otherwise: only read
    if compared:
        assert sorted(files) == sorted(published), "run docs/dicom_table.py"
    differ = []
    for name, path in files.items():
        try:
            data = read_volume(path).data
        except ImageReadError as err:
            assert err.path == str(path) and "\n" not in err.reason
            outcome = err.reason
        else:
            assert data.dtype == np.float32 and np.isfinite(data).all() and 0 <= data.min() <= data.max() <= 1, name
            outcome = None
        if compared and _without_decoders(outcome) != _without_decoders(published[name]):
            differ.append((name, outcome, published[name]))
    assert not differ, "outcome, docs/formats.md: " + repr(differ)


def test_compressed_and_palette_dicom_are_segmented(tmp_path):
    table = docs_script("dicom_table")
    files = [table.TEST_FILES / name for name in ("MR_small_jpeg_ls_lossless.dcm", "examples_palette.dcm")]
    report = selfseg.run_batch(files, tmp_path, method="otsu", workers=1, progress=False)
    assert report.failures == [] and [row["image"] for row in report.results] == [f.stem for f in files]
    assert (tmp_path / "examples_palette_mask.nii.gz").is_file()


def test_dicom_bad_slice_in_a_series_is_named(tmp_path):
    folder = write_series(tmp_path / "s")
    data = (folder / "b.dcm").read_bytes()
    (folder / "b.dcm").write_bytes(data[:-3])
    (folder / "notes.txt").write_text("not DICOM, skipped")
    _assert_error(folder, "cannot decode image: truncated file", where=folder / "b.dcm")
    other = tmp_path / "pngs"
    other.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(other / "a.png")
    _assert_error(other, "no DICOM image files in the folder")


# --- NIfTI ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ct.nii.gz", "ct.nii"])
def test_nifti_round_trip_keeps_affine_header_and_axis(tmp_path, name):
    path = tmp_path / name
    write_nifti(path, CUBE)
    volume = read_volume(path)
    assert (volume.kind, volume.axis, volume.source_shape) == ("nifti", 2, (5, 6, 4))
    assert volume.data.shape == (4, 5, 6) and volume.data.dtype == np.float32
    assert volume.spacing == pytest.approx((0.8, 0.9)) and volume.voxel_spacing == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(volume.affine, nifti_affine())
    labels = (np.arange(4 * 5 * 6).reshape(4, 5, 6) % 7).astype(np.uint8)  # slice order
    out = tmp_path / "out" / name.replace("ct", "ct_labels")
    write_volume_like(out, labels, volume)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left
    back = nib.load(out)
    assert back.shape == (5, 6, 4) and back.get_data_dtype() == np.uint8
    written = np.asarray(back.dataobj)
    for k in range(4):  # slice k of the array is slice k along axis 2 of the file
        np.testing.assert_array_equal(written[:, :, k], labels[k])
    np.testing.assert_allclose(back.affine, nifti_affine())
    source = nib.load(path).header
    for key in ("qform_code", "sform_code", "pixdim", "xyzt_units", "descrip", "quatern_b", "srow_x"):
        np.testing.assert_array_equal(back.header[key], source[key])
    assert back.header.get_slope_inter() == (None, None)
    assert (back.header["cal_min"], back.header["cal_max"]) == (0, 6)
    assert back.header.get_intent()[0] == "label"


def test_nifti_intensity_is_robust_percentile(tmp_path):
    values = np.random.default_rng(0).normal(100, 10, (8, 9, 5)).astype(np.float32)
    values[0, 0, 0] = 1e6  # one hot voxel does not squash the contrast
    write_nifti(tmp_path / "v.nii.gz", values)
    volume = read_volume(tmp_path / "v.nii.gz")
    lo, hi = np.percentile(values.astype(np.float64), [0.5, 99.5])
    expected = np.clip((np.moveaxis(values, 2, 0) - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(volume.data, expected, atol=1e-5)
    assert volume.data.min() == 0 and volume.data.max() == 1 and volume.data[0, 0, 0] == 1
    assert volume.intensity.startswith("percentiles 0.5-99.5: ")


@pytest.mark.parametrize("name", ["big.nii", "big.nii.gz"])
def test_nifti_is_read_without_a_second_float_copy(tmp_path, monkeypatch, name):
    """Peak Python-side memory: the float32 result, plus the stored int16 values for .nii.gz."""
    write_nifti(tmp_path / name, np.random.default_rng(0).integers(0, 1000, (64, 64, 32)).astype(np.int16))
    monkeypatch.setattr(selfseg.volumes.base, "_PERCENTILE_SAMPLE", 4096)
    read_volume(tmp_path / name)  # warm-up: lazy imports inside numpy and nibabel
    tracemalloc.start()
    try:
        volume = read_volume(tmp_path / name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (1.1 if name.endswith(".nii") else 1.6) * volume.data.nbytes


def test_nifti_scaling_is_applied(tmp_path):
    write_nifti(tmp_path / "a.nii", CUBE)
    write_nifti(tmp_path / "b.nii", CUBE, slope=(-2.0, 7.0))  # reversed contrast
    a, b = read_volume(tmp_path / "a.nii"), read_volume(tmp_path / "b.nii")
    np.testing.assert_allclose(b.data, 1 - a.data, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -3])
def test_nifti_other_axes(tmp_path, axis):
    path = tmp_path / "v.nii.gz"
    write_nifti(path, CUBE)
    volume = read_volume(path, axis=axis)
    axis %= 3
    assert volume.axis == axis
    assert volume.data.shape == np.moveaxis(CUBE, axis, 0).shape
    assert volume.spacing == pytest.approx(tuple(s for a, s in enumerate((0.8, 0.9, 2.5)) if a != axis))
    np.testing.assert_allclose(volume.data, np.moveaxis(read_volume(path).data, 0, 2).transpose(
        [axis, *[a for a in range(3) if a != axis]]), atol=1e-6)
    mask = volume.data > 0.5
    write_volume_like(tmp_path / "mask.nii", mask, volume)
    back = np.asarray(nib.load(tmp_path / "mask.nii").dataobj)
    assert back.dtype == np.uint8 and back.shape == CUBE.shape
    np.testing.assert_array_equal(back, np.moveaxis(mask, 0, axis).astype(np.uint8))


def test_nifti_uint16_labels(tmp_path):
    write_nifti(tmp_path / "v.nii.gz", CUBE)
    volume = read_volume(tmp_path / "v.nii.gz")
    labels = np.full(volume.data.shape, 300, dtype=np.uint16)
    write_volume_like(tmp_path / "l.nii.gz", labels, volume)
    back = nib.load(tmp_path / "l.nii.gz")
    assert back.get_data_dtype() == np.uint16 and int(np.asarray(back.dataobj).max()) == 300


def test_nifti_rgb_overlay_round_trip(tmp_path):
    write_nifti(tmp_path / "v.nii.gz", CUBE)
    volume = read_volume(tmp_path / "v.nii.gz")
    rgb = np.random.default_rng(1).integers(0, 256, (*volume.data.shape, 3), dtype=np.uint8)
    write_volume_like(tmp_path / "overlay.nii.gz", rgb, volume)
    back = nib.load(tmp_path / "overlay.nii.gz")
    assert back.header["datatype"] == 128 and back.shape == (5, 6, 4)  # NIFTI_TYPE_RGB24
    stored = np.asarray(back.dataobj)
    np.testing.assert_array_equal(stored["G"][:, :, 2], rgb[2, :, :, 1])
    again = read_volume(tmp_path / "overlay.nii.gz")
    assert again.data.shape == (4, 5, 6, 3)
    np.testing.assert_allclose(again.data, rgb / 255, atol=1e-6)


def test_nifti_2d(tmp_path):
    write_nifti(tmp_path / "flat.nii", CUBE[:, :, 0])
    volume = read_volume(tmp_path / "flat.nii")
    assert volume.data.shape == (1, 5, 6) and volume.source_shape == (5, 6)
    write_volume_like(tmp_path / "flat_mask.nii", np.ones((1, 5, 6), bool), volume)
    assert nib.load(tmp_path / "flat_mask.nii").shape == (5, 6)


def test_nifti_bad_files(tmp_path):
    whole = tmp_path / "whole.nii"
    write_nifti(whole, CUBE)
    data = whole.read_bytes()
    (tmp_path / "cut.nii").write_bytes(data[:-10])
    _assert_error(tmp_path / "cut.nii", "cannot decode image: truncated file")
    (tmp_path / "cuthead.nii").write_bytes(data[:200])
    _assert_error(tmp_path / "cuthead.nii", "cannot decode image: truncated file")
    write_nifti(tmp_path / "whole.nii.gz", np.random.default_rng(0).integers(0, 1000, (20, 20, 20)).astype(np.int16))
    gz = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(gz[: len(gz) // 2])
    _assert_error(tmp_path / "cut.nii.gz", "cannot decode image: truncated file")
    (tmp_path / "junk.nii").write_bytes(b"junk" * 200)
    _assert_error(tmp_path / "junk.nii", "cannot decode image: not a NIfTI file")
    (tmp_path / "junk.nii.gz").write_bytes(b"junk" * 200)
    _assert_error(tmp_path / "junk.nii.gz", "cannot decode image: not a NIfTI file")
    (tmp_path / "empty.nii.gz").touch()
    _assert_error(tmp_path / "empty.nii.gz", "empty file")


def test_nifti_non_finite_and_shapes(tmp_path):
    values = CUBE.astype(np.float32)
    values[1, 2, 3] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", values)
    _assert_error(tmp_path / "nan.nii.gz", "contains NaN or infinite values")
    write_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 3, 2), np.int16))
    four_d = "unsupported format: 4-D NIfTI of shape (4, 4, 3, 2); only 2-D and 3-D volumes are read"
    _assert_error(tmp_path / "4d.nii.gz", four_d)
    write_nifti(tmp_path / "thin.nii.gz", np.zeros((1, 6, 4), np.int16))
    _assert_error(tmp_path / "thin.nii.gz", "image must be at least 2x2 pixels, got 1x6")


def test_volume_pixel_limit(tmp_path, monkeypatch):
    write_nifti(tmp_path / "v.nii.gz", CUBE)
    monkeypatch.setattr(selfseg.volumes.base, "MAX_VOXELS", 119)
    _assert_error(tmp_path / "v.nii.gz", "volume too large: 4x5x6 = 120 voxels, over the limit of 119")
    monkeypatch.setattr(selfseg.decoding, "MAX_PIXELS", 29)
    _assert_error(tmp_path / "v.nii.gz", "image too large: 5x6 = 30 pixels, over the limit of 29")
    assert MAX_VOXELS == 2**30


# --- multi-frame TIFF -------------------------------------------------------------------------


def _frames(path, arrays):
    first, *rest = [Image.fromarray(a) for a in arrays]
    first.save(path, save_all=True, append_images=rest)
    return path


def test_multiframe_tiff_grey_and_16bit(tmp_path):
    frames = [np.full((3, 4), v, np.uint8) for v in (0, 51, 255)]
    volume = read_volume(_frames(tmp_path / "g.tif", frames))
    assert (volume.kind, volume.data.shape, volume.spacing) == ("tiff", (3, 3, 4), (1.0, 1.0))
    np.testing.assert_allclose(volume.data[:, 0, 0], [0, 0.2, 1])
    deep = [np.full((3, 4), v, np.uint16) for v in (0, 65535)]
    np.testing.assert_allclose(read_volume(_frames(tmp_path / "d.tif", deep)).data[:, 1, 1], [0, 1])


def test_multiframe_tiff_colour(tmp_path):
    frames = [np.full((3, 4, 3), (255, 0, 51), np.uint8), np.zeros((3, 4, 3), np.uint8)]
    volume = read_volume(_frames(tmp_path / "c.tiff", frames))
    assert volume.data.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(volume.data[0, 2, 3], [1, 0, 0.2])


def test_multiframe_tiff_bad(tmp_path):
    path = _frames(tmp_path / "mixed.tif", [np.zeros((3, 4), np.uint8), np.zeros((4, 4), np.uint8)])
    _assert_error(path, "frames differ: frame 1 is 4x4 L, frame 0 is 3x4 L")
    path = _frames(tmp_path / "nan.tif", [np.zeros((3, 4), np.float32), np.full((3, 4), np.inf, np.float32)])
    _assert_error(path, "contains NaN or infinite values")
    data = _frames(tmp_path / "whole.tif", [np.zeros((30, 40), np.uint8)] * 3).read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    _assert_error(tmp_path / "cut.tif", "cannot decode image: truncated file")


# --- discovery, dependencies, writing errors ----------------------------------------------------


def test_is_volume(tmp_path):
    folder = write_series(tmp_path / "series")
    _frames(tmp_path / "multi.tif", [np.zeros((3, 4), np.uint8)] * 2)
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "single.tif")
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "image.png")
    (tmp_path / "pngs").mkdir()
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "pngs" / "a.png")
    for name in ("a.nii", "b.NII.GZ", "c.dcm"):
        (tmp_path / name).write_bytes(b"x")
    assert VOLUME_SUFFIXES == (".nii", ".nii.gz", ".dcm")
    assert is_volume(folder) and is_volume(folder / "a.dcm") and is_volume(tmp_path / "multi.tif")
    assert all(is_volume(tmp_path / name) for name in ("a.nii", "b.NII.GZ", "c.dcm"))
    assert not any(is_volume(tmp_path / name) for name in ("single.tif", "image.png", "pngs", "missing.nii.gz2"))


def test_not_a_volume(tmp_path):
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "image.png")
    _assert_error(
        tmp_path / "image.png",
        "unsupported format: not a volume (NIfTI .nii/.nii.gz, DICOM file or series folder, multi-frame TIFF)",
    )
    with pytest.raises(ValueError, match="axis must be 0, 1 or 2, got 3"):
        read_volume(tmp_path / "image.png", axis=3)


def test_missing_dependency(tmp_path, monkeypatch):
    write_nifti(tmp_path / "v.nii.gz", CUBE)
    write_dicom(tmp_path / "s.dcm")
    monkeypatch.setitem(sys.modules, "nibabel", None)  # import nibabel now raises ImportError
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(MissingDependencyError) as info:
        optional_import("nibabel")
    assert isinstance(info.value, ImportError)
    hint = 'is not installed; medical volumes need it: pip install "selfseg[medical]"'
    _assert_error(tmp_path / "v.nii.gz", f"nibabel {hint}")
    _assert_error(tmp_path / "s.dcm", f"pydicom {hint}")


def test_a_pydicom_older_than_3_is_named_with_the_version_needed(tmp_path, monkeypatch):
    dicom = write_dicom(tmp_path / "s.dcm")
    old = types.ModuleType("pydicom")
    old.__version__ = "2.4.4"  # no pydicom.pixels
    monkeypatch.setitem(sys.modules, "pydicom", old)
    hint = 'pydicom 2.4.4 is installed; medical volumes need pydicom >= 3.0: pip install "selfseg[medical]"'
    with pytest.raises(MissingDependencyError, match=f"^{re.escape(hint)}$"):
        optional_import("pydicom.pixels")
    _assert_error(dicom, hint)


def test_write_volume_like_from_dicom(tmp_path):
    volume = read_volume(write_series(tmp_path / "series"))
    mask = volume.data > 0.5
    write_volume_like(tmp_path / "mask.nii.gz", mask, volume)
    back = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), mask.astype(np.uint8))
    np.testing.assert_allclose(back.affine, volume.affine)
    assert (int(back.header["qform_code"]), int(back.header["sform_code"])) == (1, 1)


def test_write_volume_like_rejects(tmp_path):
    write_nifti(tmp_path / "v.nii.gz", CUBE)
    volume = read_volume(tmp_path / "v.nii.gz")
    with pytest.raises(ValueError, match=r"must end in \.nii or \.nii\.gz, got mask\.png"):
        write_volume_like(tmp_path / "mask.png", np.zeros((4, 5, 6), np.uint8), volume)
    with pytest.raises(ValueError, match=r"of shape \(4, 5, 6\).*got shape \(5, 6, 4\)"):
        write_volume_like(tmp_path / "m.nii", np.zeros((5, 6, 4), np.uint8), volume)
    with pytest.raises(TypeError, match="got dtype float32"):
        write_volume_like(tmp_path / "m.nii", volume.data, volume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]
