"""Rows of ``results.csv`` written by former versions, brought to today's meaning: the only place that knows them.

- selfseg 0.11 gave ``readout`` and ``readout_clusters`` columns of their own; 0.5 to 0.10 named them in the
  ``options`` JSON, with ``readout_clusters`` "auto", a count or a list of counts.
- Before 0.5 a row named neither: its networks were read out by ``argmax``, and k-means clustered to
  ``min_labels``.
- Before 0.9 networks were fitted at the papers' widths (64 or 100 channels): such a row is fitted again.
"""

from __future__ import annotations

import json

from selfseg.methods import BASELINES, METHODS, min_labels_of

__all__ = ["upgrade_row"]

_BEFORE_COLUMNS = {"readout": "argmax", "readout_clusters": "min_labels"}
"""What a row that names no readout was made with (before 0.5)."""


def _before(version: str, major_minor: tuple[int, int]) -> bool:
    """Whether ``version`` precedes ``major_minor`` (an edited, unparsable cell counts as older)."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return True
    return (major, minor) < major_minor


def _clusters_cell(value: object, min_labels: int) -> str:
    """A former ``readout_clusters`` value as today's cell: "auto", or counts joined by commas."""
    if value == "min_labels":
        value = min_labels
    if value is None or value == "auto":
        return "auto"
    counts = value if isinstance(value, list) else [value]
    return ",".join(str(count) for count in counts)


def upgrade_row(cells: dict[str, str]) -> dict[str, str] | None:
    """A stored row (column -> cell) in today's terms, to compare with a new run's cells; None if its cluster map
    must be fitted again. A row of today is returned as it is; an edited ``options`` cell that is not JSON is
    kept and matches nothing."""
    method = cells.get("method", "")
    if "readout" in cells or method not in (*METHODS, *BASELINES):
        return cells
    if method in METHODS and _before(cells.get("version", ""), (0, 9)):
        return None
    try:
        options = json.loads(cells.get("options") or "{}")
    except ValueError:
        return cells
    if not isinstance(options, dict):
        return cells
    stored = cells.get("min_labels", "")
    fewest = min_labels_of(method, int(stored) if stored.isdigit() else None)
    readout = options.pop("readout", _BEFORE_COLUMNS["readout"])
    clusters = options.pop("readout_clusters", _BEFORE_COLUMNS["readout_clusters"])
    current = dict(cells, options=json.dumps(options, sort_keys=True, default=str) if options else "")
    current["readout"] = readout if method in METHODS else ""
    counted = fewest is not None and (method not in METHODS or readout == "kmeans")
    current["readout_clusters"] = _clusters_cell(clusters, fewest) if counted else ""
    return current
