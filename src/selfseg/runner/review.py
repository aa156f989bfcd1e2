"""Reviewing an output folder: its inputs in review order, their marks (``qc.csv``) and a mask mended by hand.

``review_items`` lists a folder's inputs from its ``results.csv``, the doubtful first (by confidence, or by the
marks of ``qc.csv``, "needs edit" first); ``load_item`` reads one input with its cluster map, mask and (where the
folder has a study stage) study mask; ``save_edited_mask`` replaces its mask by one mended by hand: the mask and
the overlay (which carries the row) are written atomically, then the row says ``chosen = "edited"``. A later run
into the folder (a resumed run) keeps the edit while the input is the same file, whatever its settings or
version (``manifest.decide``). The report (``selfseg report``) and the napari widget (``selfseg.napari``) read and write
the same ``qc.csv``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfseg import io, volumes
from selfseg.confidence import mask_confidence
from selfseg.runner.manifest import EDITED, cell, read_manifest
from selfseg.runner.study import STUDY_FOLDER
from selfseg.runner.task import output_paths, stored_labels, write_outputs

__all__ = [
    "EDITED",
    "ORDERS",
    "QC_MARKS",
    "LoadedItem",
    "ReviewItem",
    "load_item",
    "read_marks",
    "review_items",
    "save_edited_mask",
    "write_mark",
]

QC_MARKS = ("accepted", "rejected", "needs edit", "edited")
"""Review marks, as ``qc.csv`` holds them (columns ``run``, ``image``, ``mark``; ``run`` is the folder of the
input's ``results.csv`` relative to the reviewed folder, "" for the folder itself)."""
ORDERS = ("confidence", "marks")
"""Review orders: least confident first; or "needs edit" first, then unmarked, edited, rejected, accepted (each
least confident first)."""
_MARK_ORDER = {"needs edit": 0, "": 1, EDITED: 2, "rejected": 3, "accepted": 4}
QC_NAME = "qc.csv"


def read_marks(out_dir: str | os.PathLike) -> dict[str, str]:
    """The marks of ``out_dir/qc.csv``, keyed "run/image" (unknown marks left out; {} without the file)."""
    rows = io.read_csv(Path(out_dir) / QC_NAME)
    return {f"{row.get('run') or ''}/{row['image']}": row["mark"] for row in rows
            if row.get("image") and row.get("mark") in QC_MARKS}


def write_mark(out_dir: str | os.PathLike, image: str, mark: str | None, *, run: str = "") -> None:
    """Set (or, with None, clear) the mark of ``image`` of ``run`` in ``out_dir/qc.csv``, written atomically.

    Raises:
        ValueError: ``mark`` is not one of ``QC_MARKS``.
    """
    if mark is not None and mark not in QC_MARKS:
        raise ValueError(f"mark must be one of {', '.join(QC_MARKS)}; got {mark!r}")
    marks = read_marks(out_dir)
    key = f"{run}/{image}"
    if mark is None:
        marks.pop(key, None)
    else:
        marks[key] = mark
    rows = sorted((*key.rsplit("/", 1), value) for key, value in marks.items())
    io.write_csv(Path(out_dir) / QC_NAME, ("run", "image", "mark"), rows)


@dataclass(frozen=True)
class ReviewItem:
    """One input of a reviewed folder: its stem, its input path as recorded, its confidence and mark, whether it
    is a volume, and whether the folder has a study mask of it."""

    image: str
    input: str
    confidence: float
    mark: str
    volume: bool
    study: bool


def review_items(out_dir: str | os.PathLike, *, order: str = "confidence") -> list[ReviewItem]:
    """The inputs of ``out_dir/results.csv`` in review order (``ORDERS``); ties by name.

    Raises:
        ValueError: ``order`` is not one of ``ORDERS``; ``results.csv`` is missing or not a results table.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}; got {order!r}")
    out_dir = Path(out_dir)
    if not (out_dir / "results.csv").is_file():
        raise ValueError(f"{out_dir} has no results.csv: not an output folder of selfseg segment")
    marks = read_marks(out_dir)
    study = out_dir / STUDY_FOLDER
    items = [
        ReviewItem(stem, row["input"], float(row["confidence"] or 0), marks.get(f"/{stem}", ""),
                   row["kind"] not in ("", "image"), (study / f"{stem}_mask.png").is_file())
        for stem, row in read_manifest(out_dir / "results.csv").rows.items()
    ]
    key = (lambda item: (item.confidence, item.image)) if order == "confidence" else (
        lambda item: (_MARK_ORDER[item.mark], item.confidence, item.image))
    return sorted(items, key=key)


@dataclass(frozen=True)
class LoadedItem:
    """An input read for review: its (D, H, W[, C]) slices in [0, 1] (D = 1 for an image), its (D, H, W) int32
    cluster map and bool mask, its study mask (None without one), and its volume (None for an image)."""

    slices: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    study_mask: np.ndarray | None
    volume: volumes.Volume | None


def _read_input(out_dir: Path, row: dict[str, str]) -> tuple[np.ndarray, volumes.Volume | None]:
    """The (D, H, W[, C]) slices of the input of ``row`` (D = 1 for an image) and its volume (None for an image).
    The input is found as recorded (absolute, or relative to the working folder), else relative to the folder
    above ``out_dir`` (a run started there with ``--out`` naming ``out_dir``)."""
    recorded = row["input"]
    path = next((path for path in (Path(recorded), out_dir.resolve().parent / recorded) if recorded and path.exists()),
                None)
    if path is None:
        raise FileNotFoundError(f"input not found: {recorded} (open the folder from where selfseg segment ran)")
    if row["kind"] in ("", "image"):
        return io.read_image(path)[None], None
    volume = volumes.read_volume(path, axis=int(row["axis"]) if row["axis"] else None)
    return volume.data, volume


def load_item(out_dir: str | os.PathLike, image: str) -> LoadedItem:
    """Read input ``image`` of ``out_dir`` with its outputs (``LoadedItem``).

    Raises:
        KeyError: ``results.csv`` has no row ``image``. FileNotFoundError: the input is not found.
        io.ImageReadError: the input or an output cannot be read.
    """
    out_dir = Path(out_dir)
    slices, volume = _read_input(out_dir, read_manifest(out_dir / "results.csv").rows[image])
    labels_path, mask_path, _ = output_paths(out_dir, image, volume is not None)
    labels = stored_labels(labels_path, volume)
    mask = stored_labels(mask_path, volume) > 0
    study_path = out_dir / STUDY_FOLDER / f"{image}_mask.png"
    study = io.read_mask(study_path)[None] if volume is None and study_path.is_file() else None
    return LoadedItem(slices, labels, mask, study, volume)


def save_edited_mask(out_dir: str | os.PathLike, image: str, mask: np.ndarray) -> dict[str, str]:
    """Replace the mask of input ``image`` of ``out_dir`` by ``mask`` ((H, W), or (D, H, W) for a volume, bool),
    mended by hand: mask and overlay written atomically, then its ``results.csv`` row (returned) with
    ``chosen = "edited"`` and the mask's pixel count and confidence. The cluster map is kept.

    Raises:
        KeyError, FileNotFoundError, io.ImageReadError: as ``load_item``. ValueError: ``mask`` does not have the
        input's shape. io.WriteError: the disk refused a write (the former files stay whole).
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir / "results.csv")
    row = dict(manifest.rows[image])
    slices, volume = _read_input(out_dir, row)
    given = np.asarray(mask, dtype=bool)
    mask = given[None] if given.ndim == 2 and volume is None else given
    if mask.shape != slices.shape[:3]:
        wanted = slices.shape[:3] if volume is not None else slices.shape[1:3]
        raise ValueError(f"the mask of {image} must have shape {wanted}, got {given.shape}")
    confidence = float(np.mean([mask_confidence(m, s) for m, s in zip(mask, slices)]))
    row.update(chosen=EDITED, foreground_pixels=str(int(mask.sum())), confidence=cell(confidence))
    write_outputs(output_paths(out_dir, image, volume is not None), slices, volume, None, mask, row)
    manifest.write(image, row)
    return manifest.rows[image]
