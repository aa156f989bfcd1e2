"""Image/mask pairs from dataset folders: images/+masks/, official PH2, ISIC challenge naming."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from selfseg.io import find_images

__all__ = [
    "LAYOUTS",
    "DatasetError",
    "Pair",
    "detect_layout",
    "load_masks",
    "load_pairs",
    "unmatched_images",
]

LAYOUTS: tuple[str, ...] = ("folders", "ph2", "isic")

PH2_FOLDER = "PH2 Dataset images"
ISIC_DEPTH = 3  # ISIC files are searched in ROOT and up to this many folder levels below it

_ISIC_IMAGE = re.compile(r"(ISIC_\d+)\.(jpg|jpeg|png)", re.IGNORECASE)
_ISIC_MASK = re.compile(r"(ISIC_\d+)_[Ss]egmentation\.(?i:png)")
_MASK_TAG = re.compile(r"_(segmentation|lesion|mask)$", re.IGNORECASE)


class DatasetError(ValueError):
    """A folder is not a usable dataset; ``str(err)`` is ``"<root>: <reason>"``."""

    def __init__(self, root: str | os.PathLike, reason: str) -> None:
        self.root = str(root)
        self.reason = reason
        super().__init__(f"{self.root}: {reason}")

    def __reduce__(self):
        return type(self), (self.root, self.reason)


@dataclass(frozen=True)
class Pair:
    """One image and its expert mask."""

    stem: str
    image: Path
    mask: Path


def _by_stem(paths: Iterable[Path], key: Callable[[Path], str], root: Path) -> dict[str, Path]:
    """Map ``key(path) -> path``; two files with one key raise :class:`DatasetError`."""
    found: dict[str, Path] = {}
    for path in paths:
        stem = key(path)
        if stem in found:
            raise DatasetError(root, f"two files for {stem!r}: {found[stem]} and {path}")
        found[stem] = path
    return found


def _stem(path: Path) -> str:
    """Key of an image (or folders-layout mask): its stem."""
    return path.stem


def _ph2_case(path: Path) -> str:
    """Key of a PH2 mask: its case folder, IMDxxx."""
    return path.parent.parent.name


def _isic_id(path: Path) -> str:
    """Key of an ISIC mask: ISIC_xxxxxxx."""
    return _ISIC_MASK.fullmatch(path.name).group(1)


def _plain_stem(path: Path) -> str:
    """Key of a mask in a plain folder: its stem without a _segmentation/_lesion/_mask tag."""
    return _MASK_TAG.sub("", path.stem)


def _named(folder: Path, stem: str) -> list[Path]:
    """Images in FOLDER (if it exists) whose stem is STEM."""
    return [path for path in find_images([folder]) if path.stem == stem] if folder.is_dir() else []


def _ph2_folder(root: Path) -> Path | None:
    """The folder holding PH2's ``IMDxxx/IMDxxx_Dermoscopic_Image`` cases: ROOT or its PH2 folder."""
    for folder in (root / PH2_FOLDER, root):
        if folder.is_dir() and any(
            (case / f"{case.name}_Dermoscopic_Image").is_dir()
            for case in folder.iterdir()
            if case.is_dir()
        ):
            return folder
    return None


def _isic_files(root: Path) -> tuple[list[Path], list[Path]]:
    """ISIC-named images and masks in ROOT and up to ISIC_DEPTH levels below it (hidden skipped)."""
    images: list[Path] = []
    masks: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        folder = Path(folder)
        if len(folder.relative_to(root).parts) >= ISIC_DEPTH:
            subfolders.clear()
        else:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if _ISIC_IMAGE.fullmatch(name):
                images.append(folder / name)
            elif _ISIC_MASK.fullmatch(name):
                masks.append(folder / name)
    return images, masks


def _layout(root: Path) -> str | None:
    """The layout of ROOT, or None."""
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "folders"
    if _ph2_folder(root) is not None:
        return "ph2"
    if root.is_dir() and all(_isic_files(root)):
        return "isic"
    return None


def detect_layout(root: str | os.PathLike) -> str:
    """Which of :data:`LAYOUTS` ROOT is; :class:`DatasetError` if none."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(root, "not found")
    layout = _layout(root)
    if layout is None:
        raise DatasetError(
            root,
            "not a dataset: expected images/ and masks/ folders, a PH2 'PH2 Dataset images' "
            "folder, or ISIC_xxxxxxx images with _segmentation masks",
        )
    return layout


def _scan(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Images and masks of the dataset at ROOT, both keyed by image stem."""
    layout = detect_layout(root)
    if layout == "folders":
        images = find_images([root / "images"])
        masks = find_images([root / "masks"])
        return _by_stem(images, _stem, root), _by_stem(masks, _stem, root)
    if layout == "ph2":
        images, masks = [], []
        for case in sorted(p for p in _ph2_folder(root).iterdir() if p.is_dir()):
            images += _named(case / f"{case.name}_Dermoscopic_Image", case.name)
            masks += _named(case / f"{case.name}_lesion", f"{case.name}_lesion")
        return _by_stem(images, _stem, root), _by_stem(masks, _ph2_case, root)
    images, masks = _isic_files(root)
    return _by_stem(images, _stem, root), _by_stem(masks, _isic_id, root)


def load_pairs(root: str | os.PathLike) -> list[Pair]:
    """Image/mask pairs of the dataset at ROOT, sorted by stem.

    Images without a mask are left out (see :func:`unmatched_images`); if no image
    has a mask, :class:`DatasetError` is raised.
    """
    root = Path(root)
    images, masks = _scan(root)
    pairs = [Pair(stem, images[stem], masks[stem]) for stem in sorted(images.keys() & masks.keys())]
    if not pairs:
        raise DatasetError(
            root, f"no image has a mask ({len(images)} images, {len(masks)} masks, no stem in common)"
        )
    return pairs


def unmatched_images(root: str | os.PathLike) -> list[str]:
    """Sorted stems of the images at ROOT that have no mask."""
    images, masks = _scan(Path(root))
    return sorted(images.keys() - masks.keys())


def load_masks(root: str | os.PathLike) -> dict[str, Path]:
    """Masks keyed by image stem, sorted, from a dataset in any layout or a plain folder of masks.

    In a plain folder a trailing ``_segmentation``, ``_lesion`` or ``_mask`` (any case)
    is stripped from the stem. No mask found raises :class:`DatasetError`.
    """
    root = Path(root)
    if root.is_dir() and _layout(root) is None:
        masks = _by_stem(find_images([root]), _plain_stem, root)
    else:
        masks = _scan(root)[1]
    if not masks:
        raise DatasetError(root, "no mask found")
    return dict(sorted(masks.items()))
