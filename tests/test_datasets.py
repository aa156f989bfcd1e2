from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from selfseg.datasets import (
    LAYOUTS,
    DatasetError,
    Pair,
    detect_layout,
    load_masks,
    load_pairs,
    unmatched_images,
)

NOT_A_DATASET = "not a dataset: expected images/ and masks/ folders"


def _write(path: Path) -> Path:
    """A 4x4 image; the format follows the suffix (Pillow ignores its case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), 255, dtype=np.uint8)).convert("RGB").save(
        path, format=Image.registered_extensions()[path.suffix.lower()]
    )
    return path


def _folders(root: Path) -> Path:
    """images/ + masks/: mixed-case suffixes, a text file, one image without a mask, one stray mask."""
    for name in ("a.PNG", "b.jpg", "c.BMP", "nomask.png"):
        _write(root / "images" / name)
    for name in ("a.png", "b.Png", "c.bmp", "stray.png"):
        _write(root / "masks" / name)
    (root / "images" / "notes.txt").write_text("not an image")
    return root


def _ph2(root: Path, cases: tuple[str, ...] = ("IMD002", "IMD003", "IMD010")) -> Path:
    """Official PH2 tree below ROOT; the last case has no lesion mask."""
    folder = root / "PH2 Dataset images"
    for case in cases:
        _write(folder / case / f"{case}_Dermoscopic_Image" / f"{case}.bmp")
        _write(folder / case / f"{case}_roi" / f"{case}_R1_Label4.bmp")
    for case in cases[:-1]:
        _write(folder / case / f"{case}_lesion" / f"{case}_lesion.bmp")
    (root / "PH2_dataset.txt").write_text("index")
    return root


def _isic(root: Path) -> Path:
    """ISIC challenge folders: both mask spellings, superpixels, an image without a mask."""
    inputs = root / "ISIC2018_Task1-2_Training_Input"
    truth = root / "ISIC2018_Task1_Training_GroundTruth"
    for name in ("ISIC_0000001.jpg", "ISIC_0000002.JPG", "ISIC_0000003.png", "ISIC_0000009.jpg"):
        _write(inputs / name)
    _write(inputs / "ISIC_0000001_superpixels.png")
    (inputs / "ATTRIBUTION.txt").write_text("isic")
    _write(truth / "ISIC_0000001_segmentation.png")
    _write(truth / "ISIC_0000002_Segmentation.png")
    _write(truth / "ISIC_0000003_segmentation.PNG")
    return root


def test_folders_layout(tmp_path):
    root = _folders(tmp_path)
    assert LAYOUTS == ("folders", "ph2", "isic")
    assert detect_layout(root) == "folders"
    assert load_pairs(str(root)) == [
        Pair("a", root / "images" / "a.PNG", root / "masks" / "a.png"),
        Pair("b", root / "images" / "b.jpg", root / "masks" / "b.Png"),
        Pair("c", root / "images" / "c.BMP", root / "masks" / "c.bmp"),
    ]
    assert unmatched_images(root) == ["nomask"]
    assert list(load_masks(root)) == ["a", "b", "c", "stray"]


def test_ph2_layout_at_both_levels(tmp_path):
    root = _ph2(tmp_path)
    inner = root / "PH2 Dataset images"
    for where in (root, inner):
        assert detect_layout(where) == "ph2"
        pairs = load_pairs(where)
        assert [pair.stem for pair in pairs] == ["IMD002", "IMD003"]
        assert pairs[0].image == inner / "IMD002" / "IMD002_Dermoscopic_Image" / "IMD002.bmp"
        assert pairs[0].mask == inner / "IMD002" / "IMD002_lesion" / "IMD002_lesion.bmp"
        assert unmatched_images(where) == ["IMD010"]
        assert list(load_masks(where)) == ["IMD002", "IMD003"]


def test_isic_layout(tmp_path):
    root = _isic(tmp_path / "ISIC2018")
    for where in (root, tmp_path):  # the files may sit a level deeper
        assert detect_layout(where) == "isic"
        pairs = load_pairs(where)
        assert [pair.stem for pair in pairs] == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
        assert pairs[1].image.name == "ISIC_0000002.JPG"
        assert pairs[1].mask.name == "ISIC_0000002_Segmentation.png"
        assert unmatched_images(where) == ["ISIC_0000009"]
        masks = load_masks(where)
        assert list(masks) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
        assert masks["ISIC_0000003"].name == "ISIC_0000003_segmentation.PNG"


def test_isic_search_stops_three_levels_down(tmp_path):
    _isic(tmp_path / "near" / "a" / "b")  # files in near/a/b/<folder>/: three levels down
    _isic(tmp_path / "far" / "a" / "b" / "c")  # four levels down
    assert detect_layout(tmp_path / "near") == "isic"
    with pytest.raises(DatasetError, match=NOT_A_DATASET):
        detect_layout(tmp_path / "far")


def test_no_dataset_names_the_root(tmp_path):
    _write(tmp_path / "photo.png")
    (tmp_path / "readme.txt").write_text("x")
    (tmp_path / "images").mkdir()  # masks/ missing
    for call in (detect_layout, load_pairs, unmatched_images):
        with pytest.raises(DatasetError, match=NOT_A_DATASET) as info:
            call(tmp_path)
        assert str(info.value).startswith(f"{tmp_path}: ")
        assert "\n" not in str(info.value)
    with pytest.raises(DatasetError, match="not found$"):
        detect_layout(tmp_path / "missing")
    with pytest.raises(DatasetError, match="not found$"):
        load_masks(tmp_path / "missing")


def test_no_image_has_a_mask(tmp_path):
    _write(tmp_path / "images" / "a.png")
    _write(tmp_path / "masks" / "b.png")
    with pytest.raises(DatasetError, match="no image has a mask") as info:
        load_pairs(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}: ")
    assert unmatched_images(tmp_path) == ["a"]


def test_two_files_for_one_stem(tmp_path):
    _folders(tmp_path)
    _write(tmp_path / "images" / "a.jpg")
    with pytest.raises(DatasetError, match="two files for 'a'"):
        load_pairs(tmp_path)


def test_load_masks_plain_folder_strips_tags(tmp_path):
    for name in ("x.png", "y_segmentation.png", "z_Segmentation.PNG", "IMD002_lesion.bmp", "w_mask.jpg"):
        _write(tmp_path / name)
    (tmp_path / "list.csv").write_text("x")
    masks = load_masks(tmp_path)
    assert list(masks) == ["IMD002", "w", "x", "y", "z"]
    assert masks["z"] == tmp_path / "z_Segmentation.PNG"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no mask found") as info:
        load_masks(empty)
    assert str(info.value) == f"{empty}: no mask found"


def test_dataset_error_pickles():
    err = pickle.loads(pickle.dumps(DatasetError("/data", "not found")))
    assert (str(err), err.root, err.reason) == ("/data: not found", "/data", "not found")


def test_real_isic2018(shared_data):
    root = shared_data / "isic2018"
    assert detect_layout(root) == "folders"
    pairs = load_pairs(root)
    assert len(pairs) == 100
    assert unmatched_images(root) == []
    assert all(pair.image.stem == pair.mask.stem == pair.stem for pair in pairs)
