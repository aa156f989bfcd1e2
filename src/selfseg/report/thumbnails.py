"""Thumbnails of one input for the report: its image, cluster map and overlay (a slice strip for a volume),
written once as small PNG files and reused while the outputs they show are unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from selfseg import io
from selfseg.optional import MissingDependencyError, optional_import
from selfseg.runner.task import LABELS_SUFFIX, OVERLAY_SUFFIX, output_paths
from selfseg.visualize import colorize_labels

__all__ = ["STRIP_SLICES", "THUMBNAIL_SIDE", "overlay_thumbnail", "thumbnails"]

THUMBNAIL_SIDE = 160
"""Longest side of a thumbnail in pixels (a volume's strip: of each of its slices)."""
STRIP_SLICES = 6
"""Slices shown in a volume's strip, evenly spaced."""


def _small(array: np.ndarray, side: int, *, nearest: bool = False) -> Image.Image:
    """(H, W) or (H, W, 3) uint8 -> a PIL image whose longer side is at most ``side``; ``nearest`` for a
    coloured cluster map, whose colours must not blend."""
    image = Image.fromarray(np.ascontiguousarray(array))
    image.thumbnail((side, side), Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)
    return image


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """A float image in [0, 1], (H, W, C) with C 1 or 3 -> uint8 (H, W) or (H, W, 3)."""
    pixels = pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def _strip(slices: list[np.ndarray], side: int, *, nearest: bool = False) -> np.ndarray:
    """Slices side by side, each brought to the same height."""
    images = [_small(s, side, nearest=nearest).convert("RGB") for s in slices]
    height = min(image.height for image in images)
    images = [image.resize((max(1, round(image.width * height / image.height)), height)) for image in images]
    return np.concatenate([np.asarray(image) for image in images], axis=1)


def _volume_pictures(folder: Path, row: dict[str, str], side: int) -> dict[str, np.ndarray]:
    """Cluster-map and overlay strips of a volume's outputs (NIfTI; the image itself is in the overlay)."""
    nib = optional_import("nibabel")
    labels_path, _, overlay_path = output_paths(folder, row["image"], True)
    labels = np.asarray(nib.load(labels_path).dataobj)
    overlay = np.asarray(nib.load(overlay_path).dataobj)
    axis = int(row["axis"]) if row.get("axis") else (2 if row.get("kind") == "nifti" else 0)
    if overlay.dtype.names:  # RGB24
        overlay = np.stack([overlay[name] for name in ("R", "G", "B")], axis=-1)
    picks = np.unique(np.linspace(0, labels.shape[axis] - 1, STRIP_SLICES).round().astype(int))
    return {
        "clusters": _strip(
            [colorize_labels(np.take(labels, k, axis=axis).astype(np.int64)) for k in picks], side, nearest=True
        ),
        "overlay": _strip([np.take(overlay, k, axis=axis).astype(np.uint8) for k in picks], side),
    }


def _image_pictures(folder: Path, row: dict[str, str]) -> dict[str, np.ndarray]:
    """Image (when its input still exists), cluster map (when there is one) and overlay of a 2-D input."""
    pictures = {}
    source = Path(row.get("input") or "")
    if row.get("input") and source.is_file():
        try:
            pictures["image"] = _as_uint8(io.read_image(source))
        except io.ImageReadError:
            pass
    labels = folder / f"{row['image']}{LABELS_SUFFIX}"
    if labels.is_file():  # a study stage's masks come without clusters
        pictures["clusters"] = colorize_labels(io.read_labels(labels))
    pictures["overlay"] = np.asarray(Image.open(folder / f"{row['image']}{OVERLAY_SUFFIX}").convert("RGB"))
    return pictures


def thumbnails(folder: Path, row: dict[str, str], into: Path, *, side: int = THUMBNAIL_SIDE) -> dict[str, Path]:
    """PNG thumbnails of one ``results.csv`` row of ``folder``, written into ``into``: kind -> path.

    A thumbnail newer than the outputs it shows is kept. Outputs that cannot be read give no thumbnail.
    """
    volume = row.get("kind") not in ("", None, "image")
    outputs = output_paths(folder, row["image"], volume)
    newest = max((p.stat().st_mtime for p in outputs if p.is_file()), default=0.0)
    kinds = ("clusters", "overlay") if volume else ("image", "clusters", "overlay")
    paths = {kind: into / f"{row['image']}_{kind}.png" for kind in kinds}
    if all(p.exists() and p.stat().st_mtime >= newest for p in paths.values()):
        return paths
    try:
        pictures = _volume_pictures(folder, row, side) if volume else _image_pictures(folder, row)
    except (OSError, ValueError, MissingDependencyError):
        return {}
    written = {}
    for kind, array in pictures.items():
        image = Image.fromarray(array) if volume else _small(array, side, nearest=kind == "clusters")
        io.write_image(paths[kind], np.asarray(image.convert("RGB")))
        written[kind] = paths[kind]
    return written


def overlay_thumbnail(folder: Path, stem: str, into: Path, *, side: int = THUMBNAIL_SIDE) -> Path | None:
    """A PNG thumbnail of ``folder/<stem>_overlay.png`` (a study stage's mask) written into ``into``, or None when
    the overlay cannot be read. A thumbnail newer than the overlay is kept."""
    source, target = folder / f"{stem}{OVERLAY_SUFFIX}", into / f"{stem}_overlay.png"
    try:
        if target.exists() and target.stat().st_mtime >= source.stat().st_mtime:
            return target
        picture = _small(np.asarray(Image.open(source).convert("RGB")), side)
    except OSError:
        return None
    io.write_image(target, np.asarray(picture))
    return target
