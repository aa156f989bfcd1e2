from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import io as stdio
import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from selfseg import decoding, io, runner
from selfseg.runner import (
    RESULT_COLUMNS,
    BatchReport,
    evaluate_outputs,
    image_seed,
    run_batch,
    slice_seed,
    summarize,
    summary_line,
    summary_table,
)
from selfseg.runner import manifest as runner_manifest
from selfseg.runner import task as runner_task
from selfseg.runner.manifest import PacedSave
from selfseg.volumes import read_volume

from helpers import CUBE, UID, TickingPacedSave, fake_fit_images, png_bytes, tiff_bytes, write_dicom, write_nifti, write_series

FAST = dict(size=32, max_iter=2, device="cpu")  # engine runs are slow: keep them tiny


def _disc(path, rgb: bool = False):
    """A 40x48 dark disc on a light background."""
    yy, xx = np.mgrid[:40, :48]
    grey = np.where((yy - 20) ** 2 + (xx - 24) ** 2 < 120, 50, 200).astype(np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=2) if rgb else grey).save(path)
    return path


def _read_csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """One real engine batch: two good images, a corrupt and an empty file."""
    src = tmp_path_factory.mktemp("in")
    _disc(src / "grey.png")
    _disc(src / "colour.bmp", rgb=True)
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (src / "empty.png").write_bytes(b"")
    out = tmp_path_factory.mktemp("out")
    rows = []
    stderr = stdio.StringIO()
    with contextlib.redirect_stderr(stderr):
        report = run_batch([src], out, seed=3, workers=1, progress=True, on_result=rows.append, **FAST)
    return src, out, report, rows, stderr.getvalue()



def _record_segment(monkeypatch) -> list[dict]:
    """Replace the runner's ``engine.fit_images`` with ``fake_fit_images``; the settings of each image fitted
    (``FitSettings`` fields, its options and its seed) land in the list returned."""
    calls: list[dict] = []
    fake = fake_fit_images()

    def record(images, settings, rule, **kwargs):
        for image in images:
            calls.append({**dataclasses.asdict(settings), **settings.options, "seed": image.seed})
        return fake(images, settings, rule, **kwargs)

    monkeypatch.setattr(runner_task, "fit_images", record)
    return calls

def test_batch_outputs(batch):
    _, out, report, _, _ = batch
    assert [row["image"] for row in report.results] == ["colour", "grey"]
    for row in report.results:
        stem = row["image"]
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        mask = np.asarray(Image.open(out / f"{stem}_mask.png"))
        over = np.asarray(Image.open(out / f"{stem}_overlay.png"))
        assert labels.shape == mask.shape == (40, 48) and over.shape == (40, 48, 3)
        assert labels.dtype == mask.dtype == over.dtype == np.uint8
        assert labels.min() >= 1 and labels.max() == row["n_labels"]
        assert set(np.unique(mask)) <= {0, 255}
        assert (mask == 255).sum() == row["foreground_pixels"]
        assert row["iterations"] <= 2 and row["seed"] == 3 and row["method"] == "s3net"
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary files left


def test_batch_results_csv(batch):
    _, out, report, rows, _ = batch
    table = _read_csv(out / "results.csv")
    assert tuple(table[0]) == RESULT_COLUMNS
    assert [r[0] for r in table[1:]] == ["colour", "grey"]
    for cells, row in zip(table[1:], report.results):
        record = dict(zip(RESULT_COLUMNS, cells))
        assert re.fullmatch(r"\d+\.\d{3}", record["seconds"])
        assert record["n_labels"] == str(row["n_labels"])
        assert (record["size"], record["max_iter"], record["min_labels"], record["device"]) == ("32", "2", "", "cpu")
        assert record["precision"] == "float32"
        assert (record["height"], record["width"]) == ("40", "48")
    assert rows == report.results  # on_result saw every finished image


def test_batch_failures(batch):
    src, out, report, _, stderr = batch
    assert [path for path, _ in report.failures] == [str(src / "corrupt.png"), str(src / "empty.png")]
    assert dict(report.failures)[str(src / "empty.png")] == "empty file"
    assert f"error: {src / 'corrupt.png'}: cannot decode image" in stderr
    assert f"error: {src / 'empty.png'}: empty file" in stderr
    assert _read_csv(out / "failures.csv") == [["image", "reason"], *map(list, report.failures)]
    assert not list(out.glob("corrupt_*")) and not list(out.glob("empty_*"))


def test_image_seed_depends_on_content_and_global_seed(tmp_path) -> None:
    a, b, c = tmp_path / "a.png", tmp_path / "copy_of_a.png", tmp_path / "c.png"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")
    assert image_seed(0, a) == image_seed(0, b)
    assert len({image_seed(0, a), image_seed(1, a), image_seed(0, c)}) == 3
    assert all(0 <= image_seed(s, a) < 2**31 for s in range(20))


def test_batch_seeds_images_by_content(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    src = tmp_path / "in"
    src.mkdir()
    first, second = _disc(src / "b.png"), _disc(src / "a.png", rgb=True)
    rows = run_batch([src], tmp_path / "out", seed=5, workers=1, progress=False).results
    assert [row["image"] for row in rows] == ["a", "b"]
    assert [row["image_seed"] for row in rows] == [image_seed(5, second), image_seed(5, first)]
    assert {row["seed"] for row in rows} == {5}


def test_a_temporary_left_during_the_run_is_removed_at_its_end(tmp_path, monkeypatch) -> None:
    """A worker that dies in a write (its node lost) leaves its temporary file; the task runs again elsewhere."""
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    out, left = tmp_path / "out", ".a_mask.png.0123abcd.tmp.png"
    assert io.is_temporary(left)
    run_batch([_disc(tmp_path / "a.png")], out, workers=1, progress=False,
              on_result=lambda row: (out / left).write_bytes(b"partial"))
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_mask.png", "a_overlay.png", "results.csv"]


def test_rerun_replaces_rows_and_keeps_others(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    a, b = _disc(tmp_path / "a.png"), _disc(tmp_path / "b.png")
    out = tmp_path / "out"
    run_batch([a, b], out, seed=1, workers=1, progress=False)
    report = run_batch([b], out, seed=2, workers=1, progress=False)
    assert [row["seed"] for row in report.results] == [2]
    table = _read_csv(out / "results.csv")
    seed = RESULT_COLUMNS.index("seed")
    assert [(r[0], r[seed]) for r in table[1:]] == [("a", "1"), ("b", "2")]


def test_paced_save_writes_at_most_once_a_second_and_flush_writes_the_rest() -> None:
    now, saves = [0.0], []
    paced = PacedSave(lambda: saves.append(now[0]), clock=lambda: now[0])
    for now[0] in (0.0, 0.3, 0.9, 1.0, 1.5, 2.2):
        paced()
    assert saves == [0.0, 1.0, 2.2]
    paced.flush()  # nothing came since the last write
    now[0] = 2.5
    paced()
    paced.flush()
    assert saves == [0.0, 1.0, 2.2, 2.5]


def test_paced_save_waits_twenty_times_as_long_as_a_write_took() -> None:
    now, saves = [0.0], []

    def slow() -> None:  # a write of 0.2 s
        saves.append(now[0])
        now[0] += 0.2

    paced = PacedSave(slow, clock=lambda: now[0])
    for now[0] in (0.0, 1.5, 4.1, 4.2):
        paced()
    assert saves == [0.0, 4.2]


def test_results_csv_is_written_at_the_first_row_and_the_end_not_at_every_row(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    monkeypatch.setattr(runner_manifest, "PacedSave", TickingPacedSave)
    paths = [_disc(tmp_path / f"{k}.png") for k in range(6)]
    tables, write = [], io.write_csv
    monkeypatch.setattr(io, "write_csv", lambda path, *args: (tables.append(Path(path).name), write(path, *args)))
    run_batch(paths, tmp_path / "out", workers=1, progress=False)
    assert tables == ["results.csv", "results.csv"]
    assert [cells[0] for cells in _read_csv(tmp_path / "out" / "results.csv")[1:]] == [str(k) for k in range(6)]


def test_resume_skips_refits_or_rechooses(tmp_path, monkeypatch):
    calls = _record_segment(monkeypatch)
    a, b = _disc(tmp_path / "a.png"), _disc(tmp_path / "b.png")
    out = tmp_path / "out"
    run_batch([a, b], out, workers=1, progress=False)
    assert len(calls) == 2
    report = run_batch([a, b], out, resume=True, workers=1, progress=False)
    assert report.skipped == ["a", "b"] and report.results == [] and len(calls) == 2
    # another target: the masks are chosen again from the stored cluster maps, nothing is refitted
    report = run_batch([a, b], out, target="lungs", resume=True, workers=1, progress=False)
    assert len(calls) == 2 and [row["target"] for row in report.results] == ["lungs", "lungs"]
    assert [row["iterations"] for row in report.results] == [1, 1]  # kept from the fit
    assert {row["chosen"] for row in report.results} == {"lungs"}
    rows = {r[0]: dict(zip(RESULT_COLUMNS, r)) for r in _read_csv(out / "results.csv")[1:]}
    assert rows["a"]["target"] == "lungs" and rows["a"]["seconds"] == "0.250"
    # a missing cluster map, or another training parameter, refits
    (out / "a_labels.png").unlink()
    run_batch([a, b], out, target="lungs", resume=True, workers=1, progress=False)
    assert len(calls) == 3
    run_batch([a, b], out, target="lungs", seed=4, resume=True, workers=1, progress=False)
    assert len(calls) == 5


def test_failures_csv_describes_latest_run(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    good, bad = _disc(tmp_path / "good.png"), tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    out = tmp_path / "out"
    assert len(run_batch([good, bad], out, workers=1, progress=False).failures) == 1
    assert (out / "failures.csv").exists()
    assert run_batch([good], out, workers=1, progress=False).failures == []
    assert not (out / "failures.csv").exists()


def test_segment_rejection_is_a_failure(tmp_path, capsys):
    Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(tmp_path / "dot.png")  # too small to segment
    report = run_batch([tmp_path / "dot.png"], tmp_path / "out", workers=1, progress=False, **FAST)
    assert report.results == [] and report.failures[0][1].startswith("image must be at least 2x2")
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'dot.png'}: image must be")


def test_large_label_count_is_written_as_16_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images(n_labels=300))
    image = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "many.png")
    run_batch([tmp_path / "many.png"], tmp_path / "out", workers=1, progress=False)
    labels = np.asarray(Image.open(tmp_path / "out" / "many_labels.png"))
    assert labels.dtype == np.uint16 and labels.max() == 300


def test_duplicate_stems_rejected_before_any_work(tmp_path):
    (tmp_path / "x").mkdir()
    first, second = _disc(tmp_path / "scan.png"), _disc(tmp_path / "x" / "scan.bmp")
    with pytest.raises(ValueError, match="same name") as info:
        run_batch([first, second], tmp_path / "out", workers=1, progress=False, **FAST)
    assert str(first) in str(info.value) and str(second) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_arguments_rejected_before_any_work(tmp_path):
    image = _disc(tmp_path / "a.png")
    with pytest.raises(ValueError, match="method must be one of s3net, msformer, dfc, otsu, kmeans, got 'nope'"):
        run_batch([image], tmp_path / "out", method="nope", workers=1, progress=False)
    with pytest.raises(FileNotFoundError):
        run_batch([tmp_path / "missing.png"], tmp_path / "out", workers=1, progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("name,score\nfoo,1\n")
    with pytest.raises(ValueError, match="not a results table"):
        run_batch([image], tmp_path / "out", workers=1, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv"]


def test_empty_input_folder(tmp_path):
    (tmp_path / "in").mkdir()
    assert run_batch([tmp_path / "in"], tmp_path / "out", workers=1, progress=False) == BatchReport()


def test_summary_line():
    row = {
        "image": "Test_1",
        "n_labels": 3,
        "iterations": 7,
        "seconds": 9.8123,
        "foreground_pixels": 1960,
        "height": 100,
        "width": 100,
        "slices": 1,
        "chosen": "lesion",
    }
    assert summary_line(row) == "Test_1: 3 labels, 7 iterations, 9.8 s, foreground 19.6% (lesion)"
    volume = {**row, "slices": 4, "foreground_pixels": 4 * 1960, "chosen": "lesion/lungs"}
    assert summary_line(volume) == "Test_1: 4 slices, 3 labels, 7 iterations, 9.8 s, foreground 19.6% (lesion/lungs)"
    assert summary_line({**row, "chosen": "oracle+crop"}).endswith("(oracle+crop)")
    assert ", 7 iterations, ? s, " in summary_line({**row, "seconds": None})  # a row taken from its files


def _mask_file(path, rows: slice, shape=(6, 8)) -> None:
    mask = np.zeros(shape, dtype=np.uint8)
    mask[rows, 2:6] = 255
    Image.fromarray(mask).save(path)


def test_evaluate_outputs_scores_masks_and_reports_failures(tmp_path) -> None:
    out, truth = tmp_path / "out", tmp_path / "gt"
    out.mkdir()
    truth.mkdir()
    _mask_file(out / "a_mask.png", slice(1, 5))  # 4x4 square
    _mask_file(truth / "a.png", slice(2, 6))  # the same, one row lower
    _mask_file(out / "b_mask.png", slice(1, 5))
    _mask_file(truth / "b_segmentation.png", slice(1, 5))  # ISIC-style name, identical mask
    _mask_file(out / "c_mask.png", slice(1, 5))  # no ground truth
    _mask_file(out / "d_mask.png", slice(1, 5))
    _mask_file(truth / "d.png", slice(1, 5), shape=(7, 8))  # size mismatch
    report = evaluate_outputs(out, truth)
    scores = {row["image"]: row for row in report.results}
    assert sorted(scores) == ["a", "b"]
    assert scores["a"]["dice"] == 0.75 and scores["a"]["iou"] == 0.6 and scores["a"]["hd95"] == 1.0
    assert scores["b"]["dice"] == 1.0 and scores["b"]["assd"] == 0.0
    reasons = dict(report.failures)
    assert "no ground-truth mask" in reasons["c"] and "differ in size" in reasons["d"]
    table = _read_csv(out / "metrics.csv")
    assert table[0] == ["image", "dice", "iou", "hm", "xor", "sensitivity", "specificity", "hd95", "assd"]
    assert table[1][:3] == ["a", "0.750000", "0.600000"]


def test_summarize_leaves_out_non_finite_values() -> None:
    rows = [
        {name: value for name in ("dice", "iou", "hm", "xor", "sensitivity", "specificity", "hd95", "assd")}
        for value in (0.5, 1.0, float("inf"))
    ]
    summary = summarize(rows)
    assert summary["dice"] == (0.75, 0.25, 0.75, 2)
    assert "dice" in summary_table(summary).splitlines()[1]
    assert summarize([])["hd95"][3] == 0


# --- real-world batches: bad files, volumes, resume, workers ----------------------------------


def _bad_inputs(folder) -> dict:
    """One file per bad-input class: name -> the reason the user sees."""
    folder.mkdir()
    (folder / "zero.png").write_bytes(b"")
    png = _disc(folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])  # header: 40x48 pixels, more than the limit
    (folder / "text.jpg").write_text("this is a note, not an image\n")
    (folder / "empty_image.png").write_bytes(png_bytes(0, 0))
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32)).save(folder / "nan.tif")
    (folder / "double.tif").write_bytes(tiff_bytes(np.arange(4, dtype=np.float64).reshape(2, 2), sample_format=3))
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(folder / "big.png")  # over the limit set by the test
    write_nifti(folder / "whole.nii", CUBE)
    nii = (folder / "whole.nii").read_bytes()
    (folder / "whole.nii").unlink()
    (folder / "broken.nii").write_bytes(nii[:-50])
    write_series(folder / "mixed")
    write_dicom(folder / "mixed" / "z.dcm", n=9, position=(0, 0, 50), series=f"{UID}.2")
    return {
        "zero.png": "empty file",
        "truncated.png": "image too large: 40x48 = 1920 pixels, over the limit of 1199",
        "text.jpg": "cannot decode image: unknown image format",
        "empty_image.png": "image must be at least 2x2 pixels, got 0x0",
        "dot.png": "image must be at least 2x2 pixels, got 1x1",
        "nan.tif": "contains NaN or infinite values",
        "double.tif": "unsupported format: a TIFF variant Pillow cannot read (64-bit float, 1 sample per pixel)",
        "big.png": "image too large: 30x40 = 1200 pixels, over the limit of 1199",
        "broken.nii": "cannot decode image: truncated file",
        "mixed": f"mixed DICOM series: the folder holds 2 series (SeriesInstanceUID {UID}.1, {UID}.2); "
        "put each series in its own folder",
    }


def test_each_bad_input_class_fails_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner_task, "fit_images", fake_fit_images())
    monkeypatch.setattr(decoding, "MAX_PIXELS", 1199)
    expected = _bad_inputs(tmp_path / "in")
    Image.fromarray(np.full((20, 24), 90, np.uint8)).save(tmp_path / "in" / "good.png")
    out = tmp_path / "out"
    report = run_batch([tmp_path / "in"], out, workers=1, progress=False)
    assert [row["image"] for row in report.results] == ["good"]
    failures = {Path(path).name: reason for path, reason in report.failures}
    assert failures == expected
    err = capsys.readouterr().err.splitlines()
    assert sorted(err) == sorted(f"error: {tmp_path / 'in' / name}: {reason}" for name, reason in expected.items())
    assert _read_csv(out / "failures.csv")[1:] == [list(f) for f in report.failures]
    assert sorted(p.name for p in out.iterdir()) == ["failures.csv", "good_labels.png", "good_mask.png",
                                                     "good_overlay.png", "results.csv"]


def _fake_volume_segment(seeds: list):
    fake = fake_fit_images()

    def fit_images(images, settings, rule, **kwargs):
        seeds.extend(image.seed for image in images)
        return fake(images, settings, rule, **kwargs)

    return fit_images


@pytest.mark.parametrize("axis", [None, 0])
def test_nifti_volume_slice_by_slice_round_trip(tmp_path, monkeypatch, axis):
    seeds = []
    monkeypatch.setattr(runner_task, "fit_images", _fake_volume_segment(seeds))
    source = write_nifti(tmp_path / "ct.nii.gz", CUBE)  # (5, 6, 4) voxels
    out = tmp_path / "out"
    (row,) = run_batch([tmp_path / "ct.nii.gz"], out, seed=3, axis=axis, workers=1, progress=False).results
    depth = 4 if axis is None else 5
    assert seeds == [slice_seed(image_seed(3, tmp_path / "ct.nii.gz"), k) for k in range(depth)]
    assert (row["kind"], row["slices"], row["image_seed"]) == ("nifti", depth, image_seed(3, tmp_path / "ct.nii.gz"))
    assert (row["height"], row["width"]) == ((5, 6) if axis is None else (6, 4))
    assert row["iterations"] == depth and row["seconds"] == pytest.approx(0.25 * depth) and row["n_labels"] == 2
    assert row["axis"] == ("" if axis is None else "0")
    for suffix, dtype in [("_labels", np.uint8), ("_mask", np.uint8)]:
        written = nib.load(out / f"ct{suffix}.nii.gz")
        assert written.shape == (5, 6, 4) and written.get_data_dtype() == dtype
        np.testing.assert_allclose(written.affine, source.affine)
        assert written.header["descrip"] == source.header["descrip"]
        assert written.header.get_xyzt_units() == ("mm", "sec")
    labels = np.asarray(nib.load(out / "ct_labels.nii.gz").dataobj)
    mask = np.asarray(nib.load(out / "ct_mask.nii.gz").dataobj)
    np.testing.assert_array_equal(mask, labels == 2)
    assert row["foreground_pixels"] == mask.sum()
    assert nib.load(out / "ct_overlay.nii.gz").get_data_dtype().names == ("R", "G", "B")


def test_dicom_series_round_trip_and_resume(tmp_path, monkeypatch):
    seeds = []
    monkeypatch.setattr(runner_task, "fit_images", _fake_volume_segment(seeds))
    folder = write_series(tmp_path / "scan")
    out = tmp_path / "out"
    (row,) = run_batch([tmp_path], out, workers=1, progress=False).results
    assert (row["image"], row["kind"], row["slices"], row["height"], row["width"]) == ("scan", "dicom", 3, 3, 4)
    written = nib.load(out / "scan_labels.nii.gz")
    assert written.shape == (3, 3, 4)
    np.testing.assert_allclose(written.affine, read_volume(folder).affine)
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "scan_labels.nii.gz", "scan_mask.nii.gz",
                                                     "scan_overlay.nii.gz"]
    # another target: masks chosen again slice by slice from the stored NIfTI labels, no refit
    report = run_batch([tmp_path], out, target="lungs", resume=True, workers=1, progress=False)
    assert len(seeds) == 3 and report.results[0]["slices"] == 3 and report.results[0]["target"] == "lungs"
    assert run_batch([tmp_path], out, target="lungs", resume=True, workers=1, progress=False).skipped == ["scan"]


def test_resume_refits_changed_inputs_and_partial_outputs(tmp_path, monkeypatch):
    calls = _record_segment(monkeypatch)
    src = tmp_path / "in"
    src.mkdir()
    a, b, c = (_disc(src / f"{n}.png") for n in "abc")
    out = tmp_path / "out"
    run_batch([src], out, workers=1, progress=False)
    rows = {r[0]: dict(zip(RESULT_COLUMNS, r)) for r in _read_csv(out / "results.csv")[1:]}
    assert rows["a"]["input_sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    assert rows["a"]["version"] and rows["a"]["threads"]
    assert (rows["a"]["options"], rows["a"]["readout"], rows["a"]["readout_clusters"]) == ("", "kmeans", "auto")
    # b changes; c is "killed between files": its row is gone, its mask missing, a temporary file left
    _disc(b, rgb=True)
    table = _read_csv(out / "results.csv")
    io.write_csv(out / "results.csv", table[0], [r for r in table[1:] if r[0] != "c"])
    (out / "c_mask.png").unlink()
    (out / ".c_overlay.png.0123abcd.tmp.png").write_bytes(b"partial")
    calls.clear()
    report = run_batch([src], out, resume=True, workers=1, progress=False)
    assert report.skipped == ["a"] and [row["image"] for row in report.results] == ["b", "c"] and len(calls) == 2
    assert [r[0] for r in _read_csv(out / "results.csv")[1:]] == ["a", "b", "c"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "c_mask.png").exists()
    # without resume (--overwrite) everything is fitted again
    calls.clear()
    assert len(run_batch([src], out, workers=1, progress=False).results) == 3 and len(calls) == 3


def _row(out: Path) -> dict[str, str]:
    (row,) = [dict(zip(RESULT_COLUMNS, r)) for r in _read_csv(out / "results.csv")[1:]]
    return row


def test_extra_options_are_recorded_and_compared(tmp_path, monkeypatch):
    calls = _record_segment(monkeypatch)
    image, out = _disc(tmp_path / "a.png"), tmp_path / "out"
    run_batch([image], out, n_channels=8, workers=1, progress=False)
    assert calls[0]["n_channels"] == 8
    # the readout and its clusters have columns of their own ("auto": readout.default_readout_clusters); settings
    # at their default are left out of the options
    assert [_row(out)[name] for name in ("options", "readout", "readout_clusters")] == ['{"n_channels": 8}', "kmeans", "auto"]
    assert run_batch([image], out, n_channels=8, resume=True, workers=1, progress=False).skipped == ["a"]
    assert run_batch([image], out, n_channels=8, tol=0.1, resume=True, workers=1, progress=False).skipped == ["a"]
    run_batch([image], out, n_channels=16, resume=True, workers=1, progress=False)
    run_batch([image], out, n_channels=16, readout="argmax", resume=True, workers=1, progress=False)
    assert len(calls) == 3 and calls[2]["readout"] == "argmax"
    assert [_row(out)[name] for name in ("options", "readout", "readout_clusters")] == ['{"n_channels": 16}', "argmax", ""]


def _former_table(folder: Path, *, options: str | None = None, version: str | None = None) -> None:
    """Rewrite ``folder``'s results.csv as selfseg 0.10 and older wrote it: no readout columns (the ``options``
    cell named them), with ``options`` and ``version`` cells as given; its overlays, as they wrote them, carry no
    row."""
    for overlay in folder.glob("*_overlay.png"):
        io.write_image(overlay, np.asarray(Image.open(overlay)))
    table = _read_csv(folder / "results.csv")
    keep = [k for k, name in enumerate(table[0]) if name not in ("readout", "readout_clusters")]
    rows = [[row[k] for k in keep] for row in table]
    for row in rows[1:]:
        for name, value in (("options", options), ("version", version)):
            if value is not None:
                row[rows[0].index(name)] = value
    io.write_csv(folder / "results.csv", rows[0], rows[1:])


def test_rows_of_former_versions_resume_what_they_mean(tmp_path, monkeypatch):
    """Rows of 0.5 to 0.10 named the readout in ``options``; rows of 0.4 and older named none, meaning argmax;
    an edited, broken cell matches nothing; a baseline's row never names a readout (baselines ignore it)."""
    calls = _record_segment(monkeypatch)
    image, out = _disc(tmp_path / "a.png"), tmp_path / "out"
    run_batch([image], out, readout="argmax", workers=1, progress=False)
    _former_table(out, options="")  # as written by selfseg 0.4
    assert run_batch([image], out, readout="argmax", resume=True, workers=1, progress=False).skipped == ["a"]
    assert run_batch([image], out, resume=True, workers=1, progress=False).results[0]["readout"] == "kmeans"
    assert len(calls) == 2 and calls[1]["readout"] == "kmeans" and calls[1]["readout_clusters"] is None
    _former_table(out, options='{"readout": "kmeans", "readout_clusters": "auto"}')  # as written by 0.5 to 0.10
    assert run_batch([image], out, resume=True, workers=1, progress=False).skipped == ["a"]
    _former_table(out, options='{"readout": "kmeans"')
    assert run_batch([image], out, resume=True, workers=1, progress=False).skipped == [] and len(calls) == 3
    run_batch([image], out, method="kmeans", readout="kmeans", workers=1, progress=False)
    assert [_row(out)[name] for name in ("options", "readout", "readout_clusters")] == ["", "", "auto"]
    assert run_batch([image], out, method="kmeans", readout="argmax", resume=True, workers=1, progress=False).skipped == ["a"]
    run_batch([image], out, method="otsu", readout_clusters=4, min_labels=4, workers=1, progress=False)
    assert [_row(out)[name] for name in ("options", "readout", "readout_clusters")] == ["", "", ""]
    # Otsu ignores min_labels: a run that gives one resumes (its row must not grow a readout_clusters)
    assert run_batch([image], out, method="otsu", min_labels=4, resume=True, workers=1, progress=False).skipped == ["a"]


def _grey_and_colour(tmp_path: Path, monkeypatch) -> tuple[list[dict], Path, Path]:
    """A grey and a colour disc image, and the settings of each image fitted (``_record_segment``)."""
    calls = _record_segment(monkeypatch)
    grey = _disc(tmp_path / "grey.png")
    colour = tmp_path / "colour.png"
    rgb = np.stack([np.asarray(Image.open(grey))] * 3, axis=2)
    rgb[..., 2] //= 2
    Image.fromarray(rgb).save(colour)
    return calls, grey, colour


def test_former_rows_name_the_counts_they_were_read_out_with(tmp_path, monkeypatch):
    """A kmeans-readout row of selfseg 0.4 (no readout clusters: min_labels, 3) and a k-means row of 0.9 (no
    clusters: one k-means of min_labels) resume a run asking for 3 clusters; a default run ("auto") fits them
    again, since which counts "auto" stands for depends on the image, which the manifest does not read."""
    calls, grey, colour = _grey_and_colour(tmp_path, monkeypatch)
    for method, options in (("s3net", '{"readout": "kmeans"}'), ("kmeans", "")):
        out = tmp_path / method
        run_batch([grey, colour], out, method=method, readout_clusters=3, workers=1, progress=False)
        _former_table(out, options=options)
        assert run_batch([grey, colour], out, method=method, readout_clusters=3, resume=True, workers=1,
                         progress=False).skipped == ["grey", "colour"]
        assert run_batch([grey, colour], out, method=method, resume=True, workers=1, progress=False).skipped == []
    assert len(calls) == 8 and calls[-1]["readout_clusters"] is None


def test_network_rows_before_09_are_fitted_again(tmp_path, monkeypatch):
    """selfseg 0.9 narrowed the networks to 32 channels: a network's row of an earlier version (or with an
    unreadable version) is fitted again whatever its options say; a baseline's row still resumes."""
    calls, grey, colour = _grey_and_colour(tmp_path, monkeypatch)
    out = tmp_path / "out"
    run_batch([grey, colour], out, workers=1, progress=False)
    run_batch([grey], tmp_path / "kmeans", method="kmeans", workers=1, progress=False)
    assert run_batch([grey, colour], out, resume=True, workers=1, progress=False).skipped == ["grey", "colour"]
    _former_table(out, options='{"readout": "kmeans", "readout_clusters": "auto"}', version="0.8.0")
    _former_table(tmp_path / "kmeans", options='{"readout_clusters": "auto"}', version="0.8.0")
    report = run_batch([grey, colour], out, resume=True, workers=1, progress=False)
    assert report.skipped == [] and len(calls) == 5
    report = run_batch([grey], tmp_path / "kmeans", method="kmeans", resume=True, workers=1, progress=False)
    assert report.skipped == [] and len(report.results) == 1 and len(calls) == 5  # mask chosen again, no fit


def test_workers_give_the_same_outputs(tmp_path, monkeypatch, request):
    """Two worker processes and one in-process run, one torch thread per fit each (the default):
    identical cluster maps, masks and rows (but seconds); the caller's torch threads are restored."""
    monkeypatch.setattr(runner.workers, "available_cores", lambda: 2)
    threads = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    torch.set_num_threads(2)
    src = tmp_path / "in"
    src.mkdir()
    for k, name in enumerate("abc"):
        yy, xx = np.mgrid[:24, :28]
        grey = np.where((yy - 12) ** 2 + (xx - 10 - 3 * k) ** 2 < 40 + 10 * k, 40, 210).astype(np.uint8)
        Image.fromarray(grey).save(src / f"{name}.png")
    (src / "bad.png").write_bytes(b"junk")
    tables = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        stderr = stdio.StringIO()
        with contextlib.redirect_stderr(stderr):
            report = run_batch([src], out, workers=workers, progress=False, **FAST)
        assert torch.get_num_threads() == 2
        assert sorted(row["image"] for row in report.results) == ["a", "b", "c"] and len(report.failures) == 1
        assert "bad.png: cannot decode image" in stderr.getvalue()
        rows = _read_csv(out / "results.csv")
        tables[workers] = [[c for c, name in zip(r, RESULT_COLUMNS) if name != "seconds"] for r in rows]
    assert tables[1] == tables[2]
    assert {dict(zip(RESULT_COLUMNS, r))["threads"] for r in _read_csv(tmp_path / "out2" / "results.csv")[1:]} == {"1"}
    for name in ("a_labels.png", "a_mask.png", "b_labels.png", "b_mask.png", "c_labels.png", "c_overlay.png"):
        one, two = (np.asarray(Image.open(tmp_path / out / name)) for out in ("out1", "out2"))
        np.testing.assert_array_equal(one, two)


def test_plan_workers(monkeypatch):
    """auto: bounded by cores // threads, memory per method and inputs; explicit counts are checked."""
    monkeypatch.setattr(runner.workers, "available_cores", lambda: 8)
    monkeypatch.setattr(runner.workers, "available_memory_gib", lambda: 3.5)
    plan = runner.plan_workers
    assert plan("auto", 1, method="s3net", device="cpu", inputs=100) == 3  # 3.5 GiB // 1 GiB
    assert plan("auto", 1, method="otsu", device="cpu", inputs=100) == 7  # 3.5 GiB // 0.5 GiB
    monkeypatch.setattr(runner.workers, "available_memory_gib", lambda: 10.0)
    assert plan("auto", 1, method="otsu", device="cpu", inputs=100) == 8  # cores
    assert plan("auto", 4, method="otsu", device="cpu", inputs=100) == 2  # 8 cores // 4 threads
    assert plan("auto", 1, method="otsu", device="cpu", inputs=3) == 3
    assert plan("auto", 1, method="msformer", device="cpu", inputs=0) == 1
    assert plan("auto", 1, method="otsu", device="cuda", inputs=100) == 1
    assert plan(3, 2, method="s3net", device="cpu", inputs=1) == 3
    monkeypatch.setattr(runner.workers, "available_memory_gib", lambda: None)
    assert plan("auto", 1, method="msformer", device="cpu", inputs=100) == 8
    with pytest.raises(ValueError, match=r"^3 workers x 3 threads = 9 exceeds the 8 CPU cores$"):
        plan(3, 3, method="s3net", device="cpu", inputs=1)
    with pytest.raises(ValueError, match=r"^workers must be 'auto' or at least 1, got 0$"):
        runner.check_workers(0, 1)
    with pytest.raises(ValueError, match=r"^threads must be at least 1, got 0$"):
        runner.check_workers("auto", 0)


def test_available_resources():
    """The machine's cores and free memory are read as positive numbers (memory: Linux only)."""
    assert 1 <= runner.available_cores() <= (os.cpu_count() or 1)
    memory = runner.available_memory_gib()
    assert memory is None or memory > 0


def test_batched_fits_give_the_same_outputs(tmp_path, monkeypatch):
    """Inputs fitted two at a time, in this process and in two workers: the outputs and rows of one-by-one
    fits (identical at 8 channels; at 32, 3 label pixels of 672 differ: docs/methods.md); an input that
    segment rejects (the point lies outside it) fails alone, its group's other input not."""
    monkeypatch.setattr(runner.workers, "available_cores", lambda: 2)
    src = tmp_path / "in"
    src.mkdir()
    yy, xx = np.mgrid[:24, :28]
    for k, name in enumerate("abc"):
        grey = np.where((yy - 12) ** 2 + (xx - 10 - 3 * k) ** 2 < 40 + 10 * k, 40, 210).astype(np.uint8)
        Image.fromarray(grey).save(src / f"{name}.png")
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(src / "d_small.png")
    tables = {}
    for workers, batch_images in ((1, 1), (1, 2), (2, 2)):
        out = tmp_path / f"out{workers}{batch_images}"
        with contextlib.redirect_stderr(stdio.StringIO()) as stderr:
            report = run_batch([src], out, workers=workers, batch_images=batch_images, point=(20, 18), progress=False,
                               n_channels=8, **FAST)
        assert sorted(row["image"] for row in report.results) == ["a", "b", "c"]
        assert [Path(path).name for path, _ in report.failures] == ["d_small.png"]
        assert "point (20, 18) is outside" in stderr.getvalue()
        rows = _read_csv(out / "results.csv")
        tables[workers, batch_images] = [[c for c, name in zip(r, RESULT_COLUMNS) if name != "seconds"] for r in rows]
        for name in ("a_labels.png", "b_mask.png", "c_labels.png"):
            first = np.asarray(Image.open(tmp_path / "out11" / name))
            np.testing.assert_array_equal(np.asarray(Image.open(out / name)), first)
    assert tables[1, 1] == tables[1, 2] == tables[2, 2]


def test_plan_batch_images(monkeypatch):
    plan = runner.plan_batch_images
    assert plan(None, method="s3net", device="cpu", size=96) == 1
    assert plan(None, method="otsu", device="cuda", size=96) == 1
    assert plan(8, method="s3net", device="cpu", size=None) == 8
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (8 * 2**30, 16 * 2**30))
    # half of 8 GiB at 220 MiB per 96-px S3-Net image; a quarter as many at 192 px
    assert plan(None, method="s3net", device="cuda", size=96) == 18
    assert plan(None, method="s3net", device="cuda", size=192) == 4
    with pytest.raises(ValueError, match=r"^batch_images must be None \(auto\) or at least 1, got 0$"):
        plan(0, method="s3net", device="cpu", size=96)


def test_fits_are_an_option_of_the_fit(tmp_path, monkeypatch):
    calls = _record_segment(monkeypatch)
    image, out = _disc(tmp_path / "a.png"), tmp_path / "out"
    run_batch([image], out, fits=2, workers=1, progress=False)
    assert [call["fits"] for call in calls] == [2]
    assert _row(out)["options"] == '{"fits": 2}'
    assert run_batch([image], out, fits=2, resume=True, workers=1, progress=False).skipped == ["a"]
    run_batch([image], out, resume=True, workers=1, progress=False)  # one fit: a different fit, fitted again
    assert [call["fits"] for call in calls] == [2, 1]
    with pytest.raises(ValueError, match="fits must be an integer of at least 1, got 0"):
        run_batch([image], out, fits=0, workers=1, progress=False)


def _outputs(folder: Path) -> dict[str, bytes]:
    """Every output file of a folder (bytes) and its results rows without the timing cells."""
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name.endswith(".png")}
    table = _read_csv(folder / "results.csv")
    timing = {RESULT_COLUMNS.index(name) for name in ("seconds", "input")}
    files["rows"] = repr([[c for k, c in enumerate(row) if k not in timing] for row in table])
    return files


@pytest.mark.parametrize("method", ["kmeans", "s3net"])
def test_a_rechosen_folder_equals_a_fresh_run(shared_data, tmp_path, monkeypatch, method):
    """A folder segmented with one mask rule and resumed with another gives, file for file, what a fresh run with
    that rule gives: a chest X-ray (one readout: its mask chosen again from the stored clusters) and two dermoscopy
    photographs (readouts of 3, 4 and 5 clusters to vote among: fitted again)."""
    inputs = [shared_data / "lung-cxr-shenzhen" / "images" / "CHNCXR_0018_0.jpg",
              *sorted((shared_data / "isic2018" / "images").glob("*.jpg"))[:2]]
    options = dict(method=method, workers=1, progress=False, **({} if method == "kmeans" else dict(size=32, max_iter=3)))
    history, fresh = tmp_path / "history", tmp_path / "fresh"
    run_batch(inputs, history, **options)
    fitted: list[int] = []
    fit_images = runner_task.fit_images
    count = lambda images, *a, **k: fitted.append(len(images)) or fit_images(images, *a, **k)  # noqa: E731
    monkeypatch.setattr(runner_task, "fit_images", count)
    for rule in (dict(target="polyp"), dict(point=(30, 40))):
        fitted.clear()
        assert len(run_batch(inputs, history, resume=True, **rule, **options).results) == 3
        assert fitted == [1, 1]  # the X-ray's mask is chosen again, the photographs are fitted again
        run_batch(inputs, fresh, **rule, **options)
        assert _outputs(history) == _outputs(fresh)
