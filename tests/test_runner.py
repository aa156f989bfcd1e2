from __future__ import annotations

import contextlib
import csv
import io as stdio
import re

import numpy as np
import pytest
from PIL import Image

from selfseg import engine
from selfseg.engine import SegmentationResult
from selfseg.runner import (
    RESULT_COLUMNS,
    BatchReport,
    evaluate_outputs,
    image_seed,
    run_batch,
    summarize,
    summary_line,
    summary_table,
)

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


def _fake_segment(n_labels: int = 2):
    """A stand-in for engine.segment: ``n_labels`` vertical-ish stripes, mask = last label."""

    def segment(image, method="s3net", *, seed=0, **kwargs):
        height, width = image.shape[:2]
        labels = (np.arange(height * width) % n_labels + 1).reshape(height, width).astype(np.int32)
        return SegmentationResult(labels, labels == n_labels, method, seed, iterations=1, seconds=0.25)

    return segment


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
        report = run_batch([src], out, seed=3, progress=True, on_result=rows.append, **FAST)
    return src, out, report, rows, stderr.getvalue()


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
    monkeypatch.setattr(engine, "segment", _fake_segment())
    src = tmp_path / "in"
    src.mkdir()
    first, second = _disc(src / "b.png"), _disc(src / "a.png", rgb=True)
    rows = run_batch([src], tmp_path / "out", seed=5, progress=False).results
    assert [row["image"] for row in rows] == ["a", "b"]
    assert [row["image_seed"] for row in rows] == [image_seed(5, second), image_seed(5, first)]
    assert {row["seed"] for row in rows} == {5}


def test_rerun_replaces_rows_and_keeps_others(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "segment", _fake_segment())
    a, b = _disc(tmp_path / "a.png"), _disc(tmp_path / "b.png")
    out = tmp_path / "out"
    run_batch([a, b], out, seed=1, progress=False)
    report = run_batch([b], out, seed=2, progress=False)
    assert [row["seed"] for row in report.results] == [2]
    table = _read_csv(out / "results.csv")
    assert [(r[0], r[2]) for r in table[1:]] == [("a", "1"), ("b", "2")]


def test_resume_skips_refits_or_rechooses(tmp_path, monkeypatch):
    calls = []
    fake = _fake_segment()
    monkeypatch.setattr(engine, "segment", lambda *a, **k: calls.append(k) or fake(*a, **k))
    a, b = _disc(tmp_path / "a.png"), _disc(tmp_path / "b.png")
    out = tmp_path / "out"
    run_batch([a, b], out, progress=False)
    assert len(calls) == 2
    report = run_batch([a, b], out, resume=True, progress=False)
    assert report.skipped == ["a", "b"] and report.results == [] and len(calls) == 2
    # another target: the masks are chosen again from the stored cluster maps, nothing is refitted
    report = run_batch([a, b], out, target="lungs", resume=True, progress=False)
    assert len(calls) == 2 and [row["target"] for row in report.results] == ["lungs", "lungs"]
    assert [row["iterations"] for row in report.results] == [1, 1]  # kept from the fit
    assert {row["chosen"] for row in report.results} == {"lungs"}
    rows = {r[0]: dict(zip(RESULT_COLUMNS, r)) for r in _read_csv(out / "results.csv")[1:]}
    assert rows["a"]["target"] == "lungs" and rows["a"]["seconds"] == "0.250"
    # a missing cluster map, or another training parameter, refits
    (out / "a_labels.png").unlink()
    run_batch([a, b], out, target="lungs", resume=True, progress=False)
    assert len(calls) == 3
    run_batch([a, b], out, target="lungs", seed=4, resume=True, progress=False)
    assert len(calls) == 5


def test_failures_csv_describes_latest_run(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "segment", _fake_segment())
    good, bad = _disc(tmp_path / "good.png"), tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    out = tmp_path / "out"
    assert len(run_batch([good, bad], out, progress=False).failures) == 1
    assert (out / "failures.csv").exists()
    assert run_batch([good], out, progress=False).failures == []
    assert not (out / "failures.csv").exists()


def test_segment_rejection_is_a_failure(tmp_path, capsys):
    Image.fromarray(np.zeros((1, 1), dtype=np.uint8)).save(tmp_path / "dot.png")  # too small to segment
    report = run_batch([tmp_path / "dot.png"], tmp_path / "out", progress=False, **FAST)
    assert report.results == [] and report.failures[0][1].startswith("image must be at least 2x2")
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'dot.png'}: image must be")


def test_large_label_count_is_written_as_16_bit(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "segment", _fake_segment(n_labels=300))
    image = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "many.png")
    run_batch([tmp_path / "many.png"], tmp_path / "out", progress=False)
    labels = np.asarray(Image.open(tmp_path / "out" / "many_labels.png"))
    assert labels.dtype == np.uint16 and labels.max() == 300


def test_duplicate_stems_rejected_before_any_work(tmp_path):
    (tmp_path / "x").mkdir()
    first, second = _disc(tmp_path / "scan.png"), _disc(tmp_path / "x" / "scan.bmp")
    with pytest.raises(ValueError, match="same name") as info:
        run_batch([first, second], tmp_path / "out", progress=False, **FAST)
    assert str(first) in str(info.value) and str(second) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_bad_arguments_rejected_before_any_work(tmp_path):
    image = _disc(tmp_path / "a.png")
    with pytest.raises(ValueError, match="unknown method"):
        run_batch([image], tmp_path / "out", method="nope", progress=False)
    with pytest.raises(FileNotFoundError):
        run_batch([tmp_path / "missing.png"], tmp_path / "out", progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "results.csv").write_text("name,score\nfoo,1\n")
    with pytest.raises(ValueError, match="not a results table"):
        run_batch([image], tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.csv"]


def test_empty_input_folder(tmp_path):
    (tmp_path / "in").mkdir()
    assert run_batch([tmp_path / "in"], tmp_path / "out", progress=False) == BatchReport()


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
