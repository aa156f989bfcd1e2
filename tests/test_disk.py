"""A full or read-only disk under ``--out`` (issue 38): one line naming the file and the cause, exit status 3, the
inputs finished before recorded, no temporary file left, and the same command resumes once space is back; an
unusable ``--out`` is refused before any work. The errors are simulated (root ignores file permissions); a real
small tmpfs, and a read-only one, are mounted where this machine allows it."""

from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfseg import cli, io, volumes
from selfseg.models.unet import UNet
from selfseg.runner import RESULT_COLUMNS, run_batch
from selfseg.runner import task as runner_task
from selfseg.runner.batch import Batch
from selfseg.runner.study import apply_study_model
from selfseg.settings import FitSettings, MaskRule
from selfseg.study import StudySettings
from selfseg.study.model import StudyModel
from selfseg.study.store import save_study_model

from helpers import CUBE, fake_fit_images, write_nifti


def _noise(folder: Path, n: int, side: int = 24) -> list[Path]:
    """``n`` colour images of random noise (overlays that do not compress), named a, b, c, ..."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = [folder / f"{chr(ord('a') + k)}.png" for k in range(n)]
    for path in paths:
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return paths


def _rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        return {row["image"]: row for row in csv.DictReader(handle)}


def _temporary(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if ".tmp" in p.name]


@pytest.fixture
def fits(monkeypatch) -> list[int]:
    """The stand-in fits (``fake_fit_images``); the list grows by the number of images of each call."""
    calls: list[int] = []
    fake = fake_fit_images()

    def fit_images(images, settings, rule, **kwargs):
        calls.append(len(images))
        return fake(images, settings, rule, **kwargs)

    monkeypatch.setattr(runner_task, "fit_images", fit_images)
    return calls


def _refuse(monkeypatch, code: int, first: str) -> None:
    """A disk that refuses with ``code`` the write of the file named ``first`` and every write after it (in this
    process and in worker processes forked after the call). Files are moved into place by ``os.replace``, last."""
    real, state = os.replace, {"refusing": False}

    def replace(source, target):
        if state["refusing"] or Path(target).name == first:
            state["refusing"] = True
            raise OSError(code, os.strerror(code))
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)


def _complete(out: Path, stems: str) -> set[str]:
    return {stem for stem in stems if all((out / f"{stem}{s}").exists() for s in runner_task.OUTPUT_SUFFIXES)}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_full_disk_stops_with_one_line_and_the_same_command_resumes(tmp_path, monkeypatch, capsys, fits, workers):
    _noise(tmp_path / "in", 4)
    out = tmp_path / "out"
    # on the CPU, workers are forked and inherit the patches (a CUDA device would spawn them)
    argv = ["segment", str(tmp_path / "in"), "--out", str(out), "--workers", str(workers), "--device", "cpu", "--quiet"]
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, "c_overlay.png")
        assert cli.main(argv) == 3
    assert capsys.readouterr().err == f"error: cannot write {out / 'c_overlay.png'}: no space left on device\n"
    assert _temporary(out) == [] and not (out / "c_overlay.png").exists() and (out / "c_mask.png").exists()
    complete, recorded = _complete(out, "abcd"), set(_rows(out))
    # results.csv holds the rows written before the refusal (paced, ``manifest.PacedSave``); the files carry the rest
    assert recorded <= complete and "c" not in complete and (workers == 2 or complete == {"a", "b"})
    assert cli.main(argv) == 0  # space is back: nothing complete is fitted again
    printed = capsys.readouterr().out.splitlines()
    assert {line.split(":")[0] for line in printed[:-1]} == {"a", "b", "c", "d"} - complete
    assert sorted(_rows(out)) == ["a", "b", "c", "d"] and _temporary(out) == []


def test_rows_the_disk_refused_are_taken_from_the_complete_files_on_the_next_run(tmp_path, monkeypatch, fits):
    _noise(tmp_path / "in", 2)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, "results.csv")  # a's three files fit, its row does not
        with pytest.raises(io.WriteError, match=re.escape(f"cannot write {out / 'results.csv'}: no space left on")):
            run_batch([tmp_path / "in"], out, workers=1, progress=False)
    assert not (out / "results.csv").exists() and _complete(out, "ab") == {"a"} and _temporary(out) == []
    report = run_batch([tmp_path / "in"], out, resume=True, workers=1, progress=False)
    assert report.skipped == ["a"] and [row["image"] for row in report.results] == ["b"] and fits == [1, 1]
    fresh = tmp_path / "fresh"
    run_batch([tmp_path / "in"], fresh, workers=1, progress=False)
    rebuilt, expected = _rows(out)["a"], _rows(fresh)["a"]
    assert rebuilt["seconds"] == "" and expected["seconds"] == "0.250"  # the one cell the files do not carry
    assert list(rebuilt) == list(RESULT_COLUMNS) and {**rebuilt, "seconds": ""} == {**expected, "seconds": ""}
    assert run_batch([tmp_path / "in"], out, resume=True, workers=1, progress=False).skipped == ["a", "b"]


def test_a_row_older_than_the_files_is_replaced_by_theirs(tmp_path, monkeypatch, fits):
    """Files rewritten with other settings whose row the disk refused: the next run goes by the files' row."""
    _noise(tmp_path / "in", 1)
    out = tmp_path / "out"
    run_batch([tmp_path / "in"], out, min_labels=3, workers=1, progress=False)
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, "results.csv")
        with pytest.raises(io.WriteError):
            run_batch([tmp_path / "in"], out, min_labels=4, resume=True, workers=1, progress=False)
    assert _rows(out)["a"]["min_labels"] == "3" and len(fits) == 2
    assert run_batch([tmp_path / "in"], out, min_labels=3, resume=True, workers=1, progress=False).skipped == []
    assert len(fits) == 3 and _rows(out)["a"]["min_labels"] == "3"


def test_files_partly_rewritten_when_the_disk_filled_are_fitted_again(tmp_path, monkeypatch, fits):
    """The overlay goes before an input's files are rewritten: a cluster map of other settings beside the former
    row is never taken as current."""
    _noise(tmp_path / "in", 1)
    out = tmp_path / "out"
    run_batch([tmp_path / "in"], out, min_labels=3, workers=1, progress=False)
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, "a_mask.png")  # the new cluster map is written, the mask is not
        with pytest.raises(io.WriteError):
            run_batch([tmp_path / "in"], out, min_labels=4, resume=True, workers=1, progress=False)
    assert not (out / "a_overlay.png").exists() and _rows(out)["a"]["min_labels"] == "3"
    assert run_batch([tmp_path / "in"], out, min_labels=3, resume=True, workers=1, progress=False).skipped == []
    assert len(fits) == 3 and _complete(out, "a") == {"a"}


def test_a_cluster_map_rewritten_by_other_settings_is_not_chosen_from(tmp_path, monkeypatch, fits):
    """One readout count, so that a re-choice would be taken: the missing overlay marks files partly rewritten by
    another seed, and the input is fitted again rather than its mask chosen from that seed's cluster map."""
    _noise(tmp_path / "in", 1)
    out, options = tmp_path / "out", {"method": "kmeans", "readout_clusters": (3,), "workers": 1, "progress": False}
    run_batch([tmp_path / "in"], out, seed=0, **options)
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, "a_mask.png")  # seed 5's cluster map is written, its mask is not
        with pytest.raises(io.WriteError):
            run_batch([tmp_path / "in"], out, seed=5, resume=True, **options)
    assert not (out / "a_overlay.png").exists() and _rows(out)["a"]["seed"] == "0" and len(fits) == 2
    report = run_batch([tmp_path / "in"], out, seed=0, resume=True, **options)
    assert report.skipped == [] and len(fits) == 3 and _complete(out, "a") == {"a"}


def _retell(overlay: Path, **changes) -> None:
    """Write ``overlay`` again with its note's cells changed (an edited or forged note)."""
    cells = json.loads(io.read_note(overlay)) | changes
    io.write_image(overlay, np.asarray(Image.open(overlay)), note=json.dumps(cells))


@pytest.mark.parametrize("changes", [{"image": "../../evil"}, {"chosen": None}, {"iterations": "many"}])
def test_an_overlay_whose_note_is_not_a_row_of_its_input_is_fitted_again(tmp_path, fits, changes):
    """Another input's name, a value that is not text, a number that is not one: no row is taken, the input is
    fitted again, and nothing is written outside ``out``."""
    _noise(tmp_path / "in", 1)
    out = tmp_path / "out"
    run_batch([tmp_path / "in"], out, workers=1, progress=False)
    (out / "results.csv").unlink()
    _retell(out / "a_overlay.png", **changes)
    study = StudySettings(size=16, width=4, depth=1, epochs=1, batch=4, device="cpu")
    report = run_batch([tmp_path / "in"], out, resume=True, workers=1, progress=False, study=study)
    assert report.skipped == [] and fits == [1, 1] and [row["image"] for row in report.study] == ["a"]
    assert list(_rows(out)) == ["a"] and "None" not in _rows(out)["a"].values()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_the_files_of_another_input_copied_beside_an_identical_one_are_not_its_row(tmp_path, fits):
    """b.png is a copy of a.png and a's files are copied to b's names: b is fitted under its own name."""
    (a,) = _noise(tmp_path / "in", 1)
    out = tmp_path / "out"
    run_batch([a], out, workers=1, progress=False)
    shutil.copy(a, tmp_path / "in" / "b.png")
    for suffix in runner_task.OUTPUT_SUFFIXES:
        shutil.copy(out / f"a{suffix}", out / f"b{suffix}")
    report = run_batch([tmp_path / "in"], out, resume=True, workers=1, progress=False)
    assert report.skipped == ["a"] and [row["image"] for row in report.results] == ["b"] and fits == [1, 1]
    with open(out / "results.csv", newline="", encoding="utf-8") as handle:
        assert [row["image"] for row in csv.DictReader(handle)] == ["a", "b"]


def test_the_study_stage_names_each_image_after_its_input(tmp_path, fits):
    """Rows for the study stage carry the input's stem and path, whatever the stored cells say."""
    (a,) = _noise(tmp_path / "in", 1)
    out = tmp_path / "out"
    run_batch([a], out, workers=1, progress=False)
    batch = Batch.open(out, FitSettings(), MaskRule(), seed=0, axis=None, resume=True, ground_truth=None,
                       on_result=None)
    batch.manifest.rows["a"] |= {"image": "../../evil", "input": "elsewhere.png"}
    (row,) = batch.image_rows([a])
    assert (row["image"], row["input"]) == ("a", str(a))


@pytest.mark.parametrize("code, cause", [(errno.EROFS, "read-only file system"), (errno.EACCES, "permission denied")])
def test_a_read_only_or_forbidden_out_is_refused_before_any_work(tmp_path, monkeypatch, capsys, fits, code, cause):
    _noise(tmp_path / "in", 2)
    out = tmp_path / "out"

    def touch(self, *args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "touch", touch)
    assert cli.main(["segment", str(tmp_path / "in"), "--out", str(out), "--workers", "1"]) == 3
    assert capsys.readouterr().err == f"error: cannot write {out}: {cause}\n"  # no progress bar: refused first
    assert fits == [] and list(out.iterdir()) == []


def test_an_out_that_cannot_be_created_is_refused_before_any_work(tmp_path, capsys, fits):
    _noise(tmp_path / "in", 1)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    assert cli.main(["segment", str(tmp_path / "in"), "--out", str(out), "--workers", "1"]) == 3
    assert capsys.readouterr().err == f"error: cannot write {out}: not a directory\n" and fits == []


def test_a_disk_refusing_while_results_are_written_stops_with_the_file_named(tmp_path, monkeypatch, fits):
    """A read-only disk met in the middle of a run: the same stop, its cause named."""
    _noise(tmp_path / "in", 2)
    out = tmp_path / "out"
    _refuse(monkeypatch, errno.EROFS, "a_labels.png")
    with pytest.raises(io.WriteError) as raised:
        run_batch([tmp_path / "in"], out, workers=1, progress=False)
    assert str(raised.value) == f"cannot write {out / 'a_labels.png'}: read-only file system" and raised.value.disk
    assert sorted(p.name for p in out.iterdir()) == [] and len(fits) == 1  # b never started


def _refuse_folder(monkeypatch, name: str) -> None:
    """A disk that refuses to create the folder called ``name``."""
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_a_study_folder_the_disk_refuses_is_one_write_error(tmp_path, monkeypatch, fits):
    (a,) = _noise(tmp_path / "in", 1)
    out, study = tmp_path / "out", StudySettings(network="unet", size=16, width=4, depth=1, epochs=1, batch=4, device="cpu")
    _refuse_folder(monkeypatch, "study")
    with pytest.raises(io.WriteError, match=re.escape(f"cannot write {out / 'study' / 'study_model.pt'}: no space")):
        run_batch([a], out, workers=1, progress=False, study=study)
    model = tmp_path / "model.pt"
    save_study_model(StudyModel(UNet(3, study.width, study.depth), study, "lesion"), model)
    with pytest.raises(io.WriteError, match=re.escape(f"cannot write {out / 'study' / 'a_mask.png'}: no space")):
        apply_study_model(model, [("a", a, "")], out / "study", device="cpu", progress=False)


def _mount_tmpfs(folder: Path, options: str) -> None:
    """Mount a tmpfs at ``folder`` or skip the test with the reason."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8) on Linux")
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"this machine does not allow mounting a tmpfs: {done.stderr.strip()}")


@pytest.fixture
def disk(tmp_path):
    """A real 300 KB tmpfs (``mount``), unmounted after the test."""
    folder = tmp_path / "disk"
    _mount_tmpfs(folder, "size=300k")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_real_full_tmpfs_stops_and_resumes_once_space_is_back(tmp_path, disk, capsys):
    """The issue's run: 6 images, k-means, onto a 300 KB tmpfs; then the tmpfs grows and the command resumes."""
    _noise(tmp_path / "in", 6, side=160)  # overlays of about 75 KB each: some fit, not all
    out = disk / "out"
    argv = ["segment", str(tmp_path / "in"), "--out", str(out), "--method", "kmeans", "--workers", "1", "--quiet"]
    assert cli.main(argv) == 3
    error = capsys.readouterr().err
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}/\S+: no space left on device\n", error)
    assert _temporary(out) == []
    complete = {stem for stem in "abcdef" if all((out / f"{stem}{s}").exists() for s in runner_task.OUTPUT_SUFFIXES)}
    assert complete and len(complete) < 6
    recorded = set(_rows(out)) if (out / "results.csv").exists() else set()
    assert recorded <= complete
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    assert cli.main(argv) == 0
    segmented = {line.split(":")[0] for line in capsys.readouterr().out.splitlines()[:-1]}
    assert segmented == set("abcdef") - complete  # complete inputs were recorded or taken from their files
    assert sorted(_rows(out)) == list("abcdef") and _temporary(out) == []


def test_a_real_read_only_mount_is_refused_before_any_work(tmp_path, capsys, fits):
    _noise(tmp_path / "in", 1)
    folder = tmp_path / "readonly"
    _mount_tmpfs(folder, "ro,size=64k")
    try:
        out = folder / "out"
        assert cli.main(["segment", str(tmp_path / "in"), "--out", str(out), "--workers", "1"]) == 3
        assert capsys.readouterr().err == f"error: cannot write {out}: read-only file system\n" and fits == []
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_volume_row_the_disk_refused_is_taken_from_its_files(tmp_path, monkeypatch, fits):
    write_nifti(tmp_path / "ct.nii.gz", CUBE)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _refuse(patch, errno.ENOSPC, "results.csv")
        with pytest.raises(io.WriteError):
            run_batch([tmp_path / "ct.nii.gz"], out, workers=1, progress=False)
    assert volumes.read_note(out / "ct_overlay.nii.gz") is not None and not (out / "results.csv").exists()
    assert run_batch([tmp_path / "ct.nii.gz"], out, resume=True, workers=1, progress=False).skipped == ["ct"]
    assert _rows(out)["ct"]["kind"] == "nifti" and _rows(out)["ct"]["slices"] == "4" and len(fits) == 1


def test_a_study_model_the_real_tmpfs_cannot_hold_is_one_write_error(disk):
    settings = StudySettings(device="cpu")
    model = StudyModel(UNet(3, settings.width, settings.depth), settings, "lesion")  # about 480 KB of weights
    with pytest.raises(io.WriteError, match=f"^cannot write {disk / 'study_model.pt'}: no space left on device$"):
        save_study_model(model, disk / "study_model.pt")
    assert list(disk.iterdir()) == []
