"""Reviewing an output folder (selfseg.runner.review): review order, qc.csv marks, a mask mended by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import selfseg
from selfseg import io
from selfseg.foreground import points_mask, toggle_region
from selfseg.report import write_report
from selfseg.runner import run_batch
from selfseg.runner.review import load_item, read_marks, review_items, save_edited_mask, write_mark

from helpers import write_nifti


def _folder(tmp_path):
    """Three discs of growing size (k-means, seed 0) in tmp_path/out; returns it."""
    images = tmp_path / "images"
    images.mkdir()
    yy, xx = np.mgrid[:40, :48]
    for k in range(3):
        grey = np.where((yy - 20) ** 2 + (xx - 24) ** 2 < 40 + 60 * k, 50, 200).astype(np.uint8)
        grey[:, :4] = 120 + 30 * k  # a band: the three masks differ in confidence
        Image.fromarray(np.stack([grey] * 3, axis=2)).save(images / f"img{k}.png")
    out = tmp_path / "out"
    run_batch([images], out, method="kmeans", progress=False, workers=1)
    return out


def test_points_take_the_union_of_their_regions_and_a_click_toggles_one() -> None:
    labels = np.array([[1, 1, 2, 2, 2], [1, 1, 2, 2, 2], [3, 3, 3, 1, 1]])  # cluster 1: two regions, apart
    assert points_mask(labels, []).sum() == 0
    left, right = np.zeros(labels.shape, bool), np.zeros(labels.shape, bool)
    left[:2, :2], right[2, 3:] = True, True
    np.testing.assert_array_equal(points_mask(labels, [(0, 0)]), left)  # one region of the cluster, not both
    np.testing.assert_array_equal(points_mask(labels, [(0, 0), (4, 2)]), left | right)
    np.testing.assert_array_equal(points_mask(labels, [(0, 0), (1, 1)]), left)  # two points, one region
    mask = labels == 2
    np.testing.assert_array_equal(toggle_region(mask, labels, (0, 2)), mask | (labels == 3))  # added
    np.testing.assert_array_equal(toggle_region(mask, labels, (4, 0)), np.zeros_like(mask))  # taken out


def test_review_order_and_marks_round_trip(tmp_path) -> None:
    out = _folder(tmp_path)
    by_confidence = review_items(out)
    confidences = [item.confidence for item in by_confidence]
    assert confidences == sorted(confidences) and len(by_confidence) == 3
    last = by_confidence[-1].image
    write_mark(out, last, "needs edit")
    write_mark(out, by_confidence[0].image, "accepted")
    assert read_marks(out) == {f"/{last}": "needs edit", f"/{by_confidence[0].image}": "accepted"}
    by_marks = review_items(out, order="marks")
    assert [item.image for item in by_marks] == [last, by_confidence[1].image, by_confidence[0].image]
    assert by_marks[0].mark == "needs edit" and not by_marks[0].volume and not by_marks[0].study
    write_mark(out, last, None)
    assert read_marks(out) == {f"/{by_confidence[0].image}": "accepted"}
    assert io.read_csv(out / "qc.csv") == [{"run": "", "image": by_confidence[0].image, "mark": "accepted"}]
    with pytest.raises(ValueError, match="mark must be one of accepted, rejected, needs edit, edited; got 'ok'"):
        write_mark(out, last, "ok")
    with pytest.raises(ValueError, match="order must be one of confidence, marks; got 'name'"):
        review_items(out, order="name")
    with pytest.raises(ValueError, match="has no results.csv"):
        review_items(tmp_path)


def test_an_edited_mask_is_saved_whole_and_kept_by_resume(tmp_path, monkeypatch) -> None:
    out = _folder(tmp_path)
    loaded = load_item(out, "img1")
    assert loaded.slices.shape == (1, 40, 48, 3) and loaded.labels.shape == loaded.mask.shape == (1, 40, 48)
    assert loaded.study_mask is None and loaded.volume is None
    edited = np.zeros((40, 48), bool)
    edited[5:15, 10:30] = True
    row = save_edited_mask(out, "img1", edited)
    assert row["chosen"] == "edited" and row["foreground_pixels"] == "200"
    np.testing.assert_array_equal(io.read_mask(out / "img1_mask.png"), edited)
    carried = json.loads(io.read_note(out / "img1_overlay.png"))
    assert carried["chosen"] == "edited" and carried["foreground_pixels"] == "200"
    assert {r["image"]: r["chosen"] for r in io.read_csv(out / "results.csv")}["img1"] == "edited"
    assert not [p for p in out.iterdir() if io.is_temporary(p.name)]
    labels_before = (out / "img1_labels.png").read_bytes()
    mask_before = (out / "img1_mask.png").read_bytes()
    run_batch([tmp_path / "images"], out, method="kmeans", progress=False, workers=1, resume=True)
    assert (out / "img1_mask.png").read_bytes() == mask_before  # the edit survives a resumed run
    assert (out / "img1_labels.png").read_bytes() == labels_before
    monkeypatch.setattr(selfseg, "__version__", "99.0")  # a newer selfseg, another rule, another method: kept too
    run_batch([tmp_path / "images"], out, method="otsu", target="polyp", progress=False, workers=1, resume=True)
    assert (out / "img1_mask.png").read_bytes() == mask_before
    rows = {r["image"]: r for r in io.read_csv(out / "results.csv")}
    assert rows["img1"]["chosen"] == "edited" and rows["img0"]["method"] == "otsu"
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(tmp_path / "images" / "img1.png")  # another file
    run_batch([tmp_path / "images"], out, method="otsu", progress=False, workers=1, resume=True)
    assert {r["image"]: r for r in io.read_csv(out / "results.csv")}["img1"]["chosen"] != "edited"
    with pytest.raises(ValueError, match=r"the mask of img1 must have shape \(40, 48\), got \(40, 47\)"):
        save_edited_mask(out, "img1", np.zeros((40, 47), bool))
    with pytest.raises(KeyError):
        save_edited_mask(out, "nothing", edited)


def test_an_input_recorded_relative_is_found_from_the_folder_above(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = _folder(Path("."))  # inputs recorded as images/img0.png ..., relative to tmp_path
    assert io.read_csv(tmp_path / "out" / "results.csv")[0]["input"] == "images/img0.png"
    monkeypatch.chdir(tmp_path / "images")  # elsewhere: found beside the output folder
    assert load_item(tmp_path / "out", "img0").slices.shape == (1, 40, 48, 3)
    (tmp_path / "images" / "img0.png").unlink()
    with pytest.raises(FileNotFoundError, match="input not found: images/img0.png"):
        load_item(tmp_path / "out", "img0")
    assert out == Path("out")


def test_a_volume_slice_is_edited_and_written_back_as_nifti(tmp_path) -> None:
    data = np.full((24, 20, 3), 200, dtype=np.int16)  # three axial slices
    data[6:16, 5:15, :] = 40
    write_nifti(tmp_path / "vol.nii.gz", data)
    out = tmp_path / "out"
    run_batch([tmp_path / "vol.nii.gz"], out, method="kmeans", progress=False, workers=1)
    item = review_items(out)[0]
    assert item.volume
    loaded = load_item(out, "vol")
    assert loaded.labels.shape == loaded.mask.shape == (3, 24, 20)
    edited = loaded.mask.copy()
    edited[1] = False
    save_edited_mask(out, "vol", edited)
    np.testing.assert_array_equal(load_item(out, "vol").mask, edited)
    with pytest.raises(ValueError, match=r"must have shape \(3, 24, 20\), got \(24, 20\)"):
        save_edited_mask(out, "vol", edited[0])


def test_the_report_shows_the_edited_mark(tmp_path) -> None:
    out = _folder(tmp_path)
    write_mark(out, "img2", "edited")
    page = write_report(out).read_text()
    assert '"qcMarks": ["accepted", "rejected", "needs edit", "edited"]' in page
    assert '"/img2": "edited"' in page


def test_the_study_stage_learns_a_mended_mask_as_sure(tmp_path, monkeypatch) -> None:
    from selfseg.runner import study as runner_study
    from selfseg.study import StudySettings

    out = _folder(tmp_path)
    edited = np.zeros((40, 48), bool)
    edited[10:30, 14:34] = True
    save_edited_mask(out, "img1", edited)
    seen = {}

    def train(images, masks, weights, *, prior, settings, callback):
        seen.update(weights=weights, prior=prior, mask=masks[1])
        raise RuntimeError("stop here")

    monkeypatch.setattr(runner_study, "train_study", train)
    rows = sorted(io.read_csv(out / "results.csv"), key=lambda row: row["image"])
    with pytest.raises(RuntimeError, match="stop here"):
        runner_study.run_study_stage(out, rows, StudySettings(device="cpu"), progress=False)
    confidences = [float(row["confidence"]) for row in rows]
    assert seen["weights"] == [confidences[0], 1.0, confidences[2]] and seen["prior"] == "lesion"
    np.testing.assert_array_equal(seen["mask"], edited)
    for row in rows:  # every mask mended by hand: the prior is the rule the run asked for
        row.update(chosen="edited", target="lungs")
    with pytest.raises(RuntimeError, match="stop here"):
        runner_study.run_study_stage(out, rows, StudySettings(device="cpu"), progress=False)
    assert seen["prior"] == "lungs" and seen["weights"] == [1.0, 1.0, 1.0]
