"""The manifest of an output folder: ``results.csv``, one row per input, and what resume does with a row.

``settings_row`` is the one writer of the settings into a row; ``read_manifest`` reads the table once and brings
rows of older versions to today's meaning (``upgrade.upgrade_row``, the only place that knows former versions);
``Manifest.adopt`` takes the row an input's overlay carries where ``results.csv`` could not record it; ``decide``
answers, for one input, "skip" (its files are complete and current), "rechoose" (its cluster map is
current, its mask is not) or "refit". Nothing here reads an image.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import selfseg
from selfseg import io
from selfseg.runner.upgrade import upgrade_row
from selfseg.settings import FitSettings, MaskRule

__all__ = ["EDITED", "RESULT_COLUMNS", "UNNOTED", "Manifest", "PacedSave", "cell", "decide", "read_manifest",
           "settings_row", "typed"]

RESULT_COLUMNS: tuple[str, ...] = (
    "image", "input", "method", "seed", "image_seed", "iterations", "seconds", "n_labels", "foreground_pixels",
    "confidence", "height", "width", "slices", "kind", "size", "max_iter", "min_labels", "device", "precision",
    "readout", "readout_clusters", "threads", "axis", "options", "foreground", "target", "point", "chosen",
    "input_sha256", "version",
)
"""Columns of ``results.csv`` (docs/formats.md describes each): input stem and path, what ran and what came out,
then the settings (an empty cell means the default)."""
UNNOTED = ("input", "seconds")
"""Columns an input's overlay does not carry (``task.overlay_row``): how the input was named and how long the fit
took, so that the files stay the same whatever the paths, the order or the workers of the batch."""

TRAINING = (
    "method", "seed", "size", "max_iter", "min_labels", "device", "precision", "readout", "readout_clusters", "axis",
    "options", "input_sha256",
)
"""Columns that must match for resume to keep an input's cluster map."""
SELECTION = ("foreground", "target", "point", "version")
"""Columns that must also match for resume to keep its mask."""
EDITED = "edited"
"""The ``chosen`` cell of a mask mended by hand (``runner.review.save_edited_mask``): resume keeps it while its
input is the same file, whatever the settings or the version."""

_DEFAULTS = FitSettings()
_IN_OPTIONS = ("min_iter", "tol", "patience", "lr", "fits")
"""Settings without a column of their own: named in the ``options`` cell when not at their default."""


def cell(value: object) -> str:
    """CSV text of a row value: None is empty, floats (seconds) get 3 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _clusters_cell(settings: FitSettings) -> str:
    """"auto" for the default counts, else the counts joined by commas; empty where no count applies (the argmax
    readout, Otsu)."""
    if settings.clusters_to is None or (settings.network and settings.readout == "argmax"):
        return ""
    return "auto" if settings.readout_clusters is None else ",".join(map(str, settings.readout_clusters))


def options_cell(settings: FitSettings) -> str:
    """JSON of the model's and objective's options and of the settings of ``_IN_OPTIONS`` not at their default."""
    named = {name: getattr(settings, name) for name in _IN_OPTIONS if getattr(settings, name) != getattr(_DEFAULTS, name)}
    options = {**settings.options, **named}
    return json.dumps(options, sort_keys=True, default=str) if options else ""


def settings_row(settings: FitSettings, rule: MaskRule, *, seed: int, axis: int | None) -> dict[str, object]:
    """The values of a results row that the settings of a run decide (``cell`` gives their text)."""
    return {
        "method": settings.method, "seed": seed, "size": settings.size, "max_iter": settings.max_iter,
        "min_labels": settings.min_labels, "device": settings.device, "precision": settings.precision,
        "readout": settings.readout if settings.network else None, "readout_clusters": _clusters_cell(settings),
        "axis": axis, "options": options_cell(settings), "foreground": rule.name, "target": rule.target,
        "point": None if rule.point is None else f"{rule.point[0]},{rule.point[1]}", "version": selfseg.__version__,
    }


def typed(cells: dict[str, str]) -> dict:
    """A ``results.csv`` row back as a row dict with numbers where ``summary_line`` needs them."""
    row: dict = dict(cells)
    for name in ("image_seed", "iterations", "n_labels", "foreground_pixels", "height", "width"):
        row[name] = int(row[name])
    row["slices"] = int(row["slices"] or 1)
    row["threads"] = int(row["threads"]) if row["threads"] else None
    row["seconds"] = float(row["seconds"]) if row["seconds"] else None  # not known for a row taken from its files
    return row


class PacedSave:
    """Rewrite a whole table as rows come, without the cost growing with the square of their number.

    Calling it writes (``save()``) when the last write is at least ``interval`` seconds old and at least ``1 / share``
    times as old as that write took; ``flush`` writes what came since, ``write_now`` writes whatever came. A write
    that fails leaves the rows pending, for the next ``flush``. A run killed between two writes loses those rows
    from the table, not their files: resume takes them back from the files (``Manifest.adopt``) or makes them again
    (the study stage, a forward pass each).
    """

    def __init__(self, save: Callable[[], None], *, interval: float = 1.0, share: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.save, self.interval, self.share, self.clock = save, interval, share, clock
        self.saved_at, self.took, self.pending = -math.inf, 0.0, False

    def __call__(self) -> None:
        self.pending = True
        if self.clock() - self.saved_at >= max(self.interval, self.took / self.share):
            self.flush()

    def flush(self) -> None:
        """Write now if anything came since the last write."""
        if self.pending:
            self.write_now()

    def write_now(self) -> None:
        """Write now."""
        self.pending, start = True, self.clock()
        self.save()
        self.saved_at, self.pending = self.clock(), False
        self.took = self.saved_at - start


@dataclass
class Manifest:
    """An output folder's ``results.csv``: ``rows`` as stored (keyed by stem, written back as they are) and
    ``current``, the same rows in today's terms (None for a row that must be refitted)."""

    path: Path
    rows: dict[str, dict[str, str]]
    current: dict[str, dict[str, str] | None]
    paced: PacedSave = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.paced = PacedSave(self._write_table)

    def write(self, stem: str, row: dict) -> None:
        """Replace (or add) the row of ``stem``; the table is written at once if its last write is older than a
        second, else by a later ``write`` or by ``flush`` (``PacedSave``)."""
        self.rows[stem] = {name: cell(row.get(name)) for name in RESULT_COLUMNS}
        self.paced()

    def flush(self) -> None:
        """Write the table if a row came since its last write."""
        self.paced.flush()

    def save(self) -> None:
        """Write the table now (``io.WriteError`` if the disk refuses; its rows then wait for ``flush``)."""
        self.paced.write_now()

    def _write_table(self) -> None:
        """Write the table, rows sorted by stem, atomically (``io.WriteError`` if the disk refuses)."""
        table = ([self.rows[key][name] for name in RESULT_COLUMNS] for key in sorted(self.rows))
        io.write_csv(self.path, RESULT_COLUMNS, table)

    def adopt(self, stem: str, cells: dict[str, str] | None) -> bool:
        """Take ``cells``, the row that the files of ``stem`` carry (``task.overlay_row``), as its row where the
        table lacks it or holds another (results.csv could not be written after the files); whether it did.
        The table is not written (``save``)."""
        stored = self.rows.get(stem)
        if cells is None or (stored is not None and all(stored[name] == cells[name] for name in RESULT_COLUMNS
                                                         if name not in UNNOTED)):
            return False
        self.rows[stem] = cells
        upgraded = upgrade_row(cells)
        self.current[stem] = None if upgraded is None else _full(upgraded)
        return True


def read_manifest(path: Path) -> Manifest:
    """The ``results.csv`` at ``path`` (empty if absent). Columns it lacks are left empty and unknown ones are
    dropped, once each row is brought up to date.

    Raises:
        ValueError: the file exists but has no ``image`` column.
    """
    rows: dict[str, dict[str, str]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "image" not in reader.fieldnames:
                raise ValueError(f"{path} exists but is not a results table (no 'image' column)")
            rows = {row["image"]: {name: value or "" for name, value in row.items() if name} for row in reader}
    except FileNotFoundError:
        pass
    upgraded = {stem: upgrade_row(cells) for stem, cells in rows.items()}
    return Manifest(path, {stem: _full(cells) for stem, cells in rows.items()},
                    {stem: None if cells is None else _full(cells) for stem, cells in upgraded.items()})


def _full(cells: dict[str, str]) -> dict[str, str]:
    """A row with every column of ``RESULT_COLUMNS`` (empty where it had none), and no other."""
    return {name: cells.get(name, "") for name in RESULT_COLUMNS}


def decide(previous: dict[str, str] | None, wanted: dict[str, str], outputs: tuple[Path, ...]) -> str:
    """What resume does with one input: "skip", "rechoose" or "refit".

    ``previous`` is its ``Manifest.current`` row (None: none, or one to refit), ``wanted`` the cells a new row
    would have, ``outputs`` its files (cluster map first, overlay last). The cluster map is kept if the
    ``TRAINING`` cells match and it and the overlay exist (the overlay is removed before an input's files are
    rewritten: without it, the cluster map may be another run's); the mask too if the ``SELECTION`` cells match
    and the mask exists. A mask mended by hand (``EDITED``) is kept while its files exist and the input is the
    same file: a hand's work is never replaced by a fit.
    """

    def matches(names: tuple[str, ...], files: tuple[Path, ...]) -> bool:
        return all(previous[name] == wanted[name] for name in names) and all(f.exists() for f in files)

    if previous is not None and previous["chosen"] == EDITED and matches(("input_sha256",), outputs):
        return "skip"
    if previous is None or not matches(TRAINING, (outputs[0], outputs[-1])):
        return "refit"
    return "skip" if matches(SELECTION, outputs[1:2]) else "rechoose"

