"""The manifest of an output folder: ``results.csv``, one row per input, and what resume does with a row.

``read_manifest`` reads the table once and brings rows of older versions to today's meaning (``_upgrade``);
``decide`` answers, for one input, "skip" (its files are complete and current), "rechoose" (its cluster
map is current, its mask is not) or "refit".
"""

from __future__ import annotations

import csv
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selfseg import engine, io, readout

__all__ = ["RESULT_COLUMNS", "Manifest", "cell", "decide", "options_cell", "read_manifest", "typed"]

RESULT_COLUMNS: tuple[str, ...] = (
    "image",
    "input",
    "method",
    "seed",
    "image_seed",
    "iterations",
    "seconds",
    "n_labels",
    "foreground_pixels",
    "confidence",
    "height",
    "width",
    "slices",
    "kind",
    "size",
    "max_iter",
    "min_labels",
    "device",
    "precision",
    "threads",
    "axis",
    "options",
    "foreground",
    "target",
    "point",
    "chosen",
    "input_sha256",
    "version",
)
"""Columns of ``results.csv``: input stem and path (as given), what ran and what came out, then the parameters (an empty
cell means the default: the method's for ``max_iter`` and ``min_labels``, native resolution for
``size``, the format's slice axis for ``axis``; ``options`` are the extra model and objective options
as JSON). ``image_seed`` is the seed the input was fitted with (``task.image_seed``); ``foreground``,
``target`` and ``point`` say how the mask was asked for and ``chosen`` what chose it
(``foreground.choose_mask``); ``confidence`` is the mask's ground-truth-free confidence
(``confidence.mask_confidence``, a volume's mean over its slices); ``input_sha256`` fingerprints the
input's bytes; ``version`` is the
selfseg version that wrote the row. ``kind`` is ``image``, or the volume's ``dicom``, ``nifti`` or
``tiff``. ``threads`` is the number of torch threads the fit ran with (CPU results depend on it: torch's
reductions round differently with another thread count). A volume's row sums ``iterations``,
``seconds`` and ``foreground_pixels`` (voxels) over its ``slices``, gives the largest ``n_labels`` of
a slice, a slice's ``height`` and ``width``, and the distinct ``chosen`` values joined by ``/``."""

_TRAINING = (
    "method", "seed", "size", "max_iter", "min_labels", "device", "precision", "axis", "options", "input_sha256"
)
"""Columns that must match for resume to keep an input's cluster map."""
_SELECTION = ("foreground", "target", "point", "version")
"""Columns that must also match for resume to keep its mask."""
_COLUMN = {name: index for index, name in enumerate(RESULT_COLUMNS)}

_SEGMENT_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(engine.segment).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}
"""``engine.segment``'s own keyword defaults: an option passed at its default is left out of ``options``,
so that outputs written without it still resume."""
_NAMED = {"readout": _SEGMENT_DEFAULTS["readout"], "readout_clusters": "auto"}
"""Options a network's row always names, with the value that stands for the default."""
_FORMER_DEFAULTS = {"readout": "argmax", "readout_clusters": "min_labels"}
"""What a stored row that does not name ``_NAMED`` options was made with (selfseg 0.4 and older)."""


def cell(value: object) -> str:
    """CSV text of a row value: None is empty, floats (seconds) get 3 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def typed(cells: list[str]) -> dict:
    """A ``results.csv`` row (cells) back as a row dict with numbers where ``summary_line`` needs them."""
    row: dict = dict(zip(RESULT_COLUMNS, cells))
    for name in ("image_seed", "iterations", "n_labels", "foreground_pixels", "height", "width"):
        row[name] = int(row[name])
    row["slices"] = int(row["slices"] or 1)  # rows written before volumes: one slice
    row["threads"] = int(row["threads"]) if row["threads"] else None
    row["seconds"] = float(row["seconds"])
    return row


def options_cell(method: str, options: dict, *, min_labels: int | None, missing: dict = _NAMED) -> str:
    """The ``options`` cell of a row of ``method`` fitted with ``options`` (``min_labels``: what it clusters to,
    its default filled in, ``engine.min_labels_of``; None for Otsu).

    Options at ``engine.segment``'s default are left out, except ``_NAMED``, which a network's row always
    names (``missing`` gives their value where ``options`` lacks them); ``readout_clusters`` is "auto" for
    the default, else a number or a list of them, and is left out with the argmax readout, which has no
    clusters to count. A k-means row names its ``readout_clusters`` only (it has no scores to read out),
    an Otsu row neither.
    """
    options = dict(options)
    if method in engine.BASELINES:
        options.pop("readout", None)
        clusters = options.pop("readout_clusters", None)
        if min_labels is not None:
            options["readout_clusters"] = missing["readout_clusters"] if clusters is None else clusters
    else:
        options = {name: missing[name] for name in _NAMED} | options
        if options["readout"] == "argmax":
            del options["readout_clusters"]
    if "readout_clusters" in options:
        options["readout_clusters"] = _clusters_value(options["readout_clusters"], min_labels)
    kept = {
        name: value
        for name, value in options.items()
        if name in _NAMED or name not in _SEGMENT_DEFAULTS or value != _SEGMENT_DEFAULTS[name]
    }
    return json.dumps(kept, sort_keys=True, default=str) if kept else ""


def _clusters_value(clusters: object, min_labels: int | None) -> object:
    """The ``readout_clusters`` value an options cell names: "auto" for the default (None), ``min_labels`` for
    ``_FORMER_DEFAULTS``' "min_labels", a single count for a one-count list."""
    if clusters is None:
        return "auto"
    if clusters == "min_labels":
        return min_labels
    if isinstance(clusters, (list, tuple)) and len(clusters) == 1:
        return clusters[0]
    return clusters


def _row_min_labels(cells: list[str]) -> int | None:
    """The ``min_labels`` a row's clusters were counted from (``engine.min_labels_of`` its cell; the method's
    default for an empty one); None for Otsu, which counts none, whatever its cell says."""
    method = cells[_COLUMN["method"]]
    if method not in engine.ALL_METHODS:
        return None
    stored = cells[_COLUMN["min_labels"]]
    return engine.min_labels_of(method, int(stored) if stored.isdigit() else None)


def _before_widths(version: str) -> bool:
    """Whether a row of selfseg ``version`` fitted a network at the papers' widths (64 or 100 channels, before
    0.9 made 32 the default)."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:  # an edited cell
        return True
    return (major, minor) < (0, 9)


def _upgrade(cells: list[str]) -> list[str] | None:
    """A stored row in today's terms, to compare with a new run's; None if its cluster map must be fitted
    again (a network fitted before 0.9, at the papers' widths). Old ``options`` cells get the readout they
    were made with (``_FORMER_DEFAULTS``); an edited cell that is not JSON is kept and matches nothing."""
    labels = _row_min_labels(cells)
    if labels is None:
        return cells
    if cells[_COLUMN["method"]] in engine.METHODS and _before_widths(cells[_COLUMN["version"]]):
        return None
    current = list(cells)
    try:
        stored = json.loads(cells[_COLUMN["options"]] or "{}")
    except ValueError:
        return current
    if isinstance(stored, dict):
        current[_COLUMN["options"]] = options_cell(
            cells[_COLUMN["method"]], stored, min_labels=labels, missing=_FORMER_DEFAULTS
        )
    return current


@dataclass
class Manifest:
    """An output folder's ``results.csv``: ``rows`` as stored (keyed by stem, written back as they are) and
    ``current``, the same rows in today's terms (``_upgrade``; None for a row that must be refitted)."""

    path: Path
    rows: dict[str, list[str]]
    current: dict[str, list[str] | None]

    def write(self, stem: str, row: dict) -> None:
        """Replace (or add) the row of ``stem`` and write the table, rows sorted by stem, atomically."""
        self.rows[stem] = [cell(row[name]) for name in RESULT_COLUMNS]
        io.write_csv(self.path, RESULT_COLUMNS, (self.rows[key] for key in sorted(self.rows)))


def read_manifest(path: Path) -> Manifest:
    """The ``results.csv`` at ``path`` (empty if absent). Columns it lacks are left empty and unknown ones
    dropped, so tables of older versions carry over.

    Raises:
        ValueError: the file exists but has no ``image`` column.
    """
    rows: dict[str, list[str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "image" not in reader.fieldnames:
                raise ValueError(f"{path} exists but is not a results table (no 'image' column)")
            rows = {row["image"]: [row.get(c) or "" for c in RESULT_COLUMNS] for row in reader}
    except FileNotFoundError:
        pass
    return Manifest(path, rows, {stem: _upgrade(cells) for stem, cells in rows.items()})


def _resolve_counts(count: object, image: np.ndarray, min_labels: int) -> tuple[int, ...]:
    """The cluster counts a ``readout_clusters`` cell value stands for on ``image``. ValueError if none."""
    if count == "auto":
        return readout.default_readout_clusters(image, min_labels)
    if isinstance(count, str) or count is None:
        raise ValueError(f"not a cluster count: {count!r}")
    return readout.readout_counts(count)


def _same_clusters(stored: str, wanted: str, path: Path, min_labels: int) -> bool:
    """Whether two ``options`` cells that differ only in ``readout_clusters``, one of them "auto", mean the
    same cluster counts for the 2-D image at ``path`` (with the network's ``min_labels``; the image is read
    only then). False when the image cannot be read: the input is fitted again, and fails there."""
    if stored == wanted or not (stored and wanted):
        return False
    try:
        first, second = json.loads(stored), json.loads(wanted)
    except ValueError:  # an edited cell
        return False
    counts = (first.pop("readout_clusters", None), second.pop("readout_clusters", None))
    if first != second or not any(isinstance(count, str) for count in counts):
        return False
    try:
        image = engine.as_float_image(io.read_image(path))
        resolved = [_resolve_counts(count, image, min_labels) for count in counts]
    except (ValueError, TypeError):
        return False
    return resolved[0] == resolved[1]


def decide(
    previous: list[str] | None, wanted: dict[str, str], outputs: tuple[Path, ...], *, path: Path, volume: bool
) -> str:
    """What resume does with one input: "skip", "rechoose" or "refit".

    ``previous`` is its ``Manifest.current`` row (None: none, or one to refit), ``wanted`` the cells a new
    row would have, ``outputs`` its files (cluster map first). The cluster map is kept if the training
    columns match (``options`` cells that differ only in an "auto" readout that stands for the same
    counts on this 2-D image count as equal, ``_same_clusters``) and it exists; the mask too if the
    selection columns match and the other files exist.
    """
    if previous is None:
        return "refit"
    stored = dict(zip(RESULT_COLUMNS, previous))
    labels = _row_min_labels(previous)
    if labels is not None and not volume and _same_clusters(stored["options"], wanted["options"], path, labels):
        stored["options"] = wanted["options"]

    def matches(names: tuple[str, ...], files: tuple[Path, ...]) -> bool:
        return all(stored[name] == wanted[name] for name in names) and all(f.exists() for f in files)

    if not matches(_TRAINING, outputs[:1]):
        return "refit"
    return "skip" if matches(_SELECTION, outputs[1:]) else "rechoose"
