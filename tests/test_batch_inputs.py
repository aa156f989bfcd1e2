from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from selfseg.batch_inputs import INPUT_SUFFIXES, find_inputs, input_digest, input_stem

from helpers import CUBE, write_dicom, write_nifti


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """root/ a.png, b/c.JPG, b/d/e.tif, vol.nii.gz, series/ (DICOM without suffix),
    notes.txt, .hidden/f.png, b/.g.png."""
    root = tmp_path / "root"
    for name in ("a.png", "b/c.JPG", "b/d/e.tif", ".hidden/f.png", "b/.g.png"):
        _png(root / name)
    write_nifti(root / "vol.nii.gz", CUBE)
    (root / "series").mkdir()
    for k in range(2):
        write_dicom(root / "series" / f"IM{k}", n=k, position=(0, 0, k))
    (root / "notes.txt").write_text("not an image")
    return root


def test_folders_are_searched_recursively(tree):
    found = [p.relative_to(tree).as_posix() for p in find_inputs([tree])]
    assert found == ["a.png", "b/c.JPG", "b/d/e.tif", "series", "vol.nii.gz"]
    assert INPUT_SUFFIXES == (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".dcm")


def test_glob_pattern(tree):
    assert [p.name for p in find_inputs([tree], pattern="*.png")] == ["a.png"]
    assert [p.name for p in find_inputs([tree], pattern="d/*")] == ["e.tif"]
    assert [p.name for p in find_inputs([tree], pattern="IM*")] == ["series"]  # DICOM files: their series


def test_series_folder_and_files_given_directly(tree):
    assert find_inputs([tree / "series", tree / "notes.txt"]) == [tree / "series", tree / "notes.txt"]


def test_list_file(tree, tmp_path):
    listing = tree / "lists" / "batch.txt"
    listing.parent.mkdir()
    listing.write_text("# scans for today\n\n../a.png\n  ../b  \n../missing.png\n../series\n../a.png\n")
    found = find_inputs([f"@{listing}", tree / "vol.nii.gz"])
    assert [p.resolve().relative_to(tree).as_posix() for p in found] == [
        "a.png", "b/c.JPG", "b/d/e.tif", "missing.png", "series", "vol.nii.gz",
    ]
    with pytest.raises(FileNotFoundError, match="list file not found: .*nope.txt"):
        find_inputs([f"@{tmp_path / 'nope.txt'}"])
    with pytest.raises(FileNotFoundError, match="input not found"):
        find_inputs([tmp_path / "nope.png"])


def test_input_stem_and_digest(tree):
    names = ("vol.nii.gz", "a.png", "series", "series/IM0")
    assert [input_stem(tree / n) for n in names] == ["vol", "a", "series", "IM0"]
    assert input_digest(tree / "a.png") == hashlib.sha256((tree / "a.png").read_bytes()).hexdigest()
    before = input_digest(tree / "series")
    (tree / "series" / "IM1").write_bytes((tree / "series" / "IM1").read_bytes() + b"\0")
    assert len(before) == 64 and input_digest(tree / "series") != before


def test_output_folder_inside_an_input_folder_is_left_out(tree):
    _png(tree / "out" / "a_mask.png")
    assert "a_mask.png" not in [p.name for p in find_inputs([tree], exclude=tree / "out")]
    assert "a_mask.png" in [p.name for p in find_inputs([tree])]
