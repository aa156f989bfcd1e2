"""A self-contained HTML report of an output folder: ``write_report(DIR)`` -> ``DIR/report.html``.

The page lists every input of every run found under DIR (a folder with a ``results.csv``: a ``selfseg
segment`` output, or the per-dataset, per-method folders of ``selfseg benchmark``) with thumbnails of the
image, its cluster map and its overlay (``DIR/report_files/``, bounded in size, loaded lazily), its row of
``results.csv`` and, where a ``metrics.csv`` exists, its scores. A run with a study stage (``DIR/study/``) shows
each image's study mask beside its per-image mask, with the study mask's Dice and the two masks' agreement.
Rows sort by any column (worst Dice first when there are scores), filter by name and come in pages. Summary
plots (matplotlib, embedded as SVG): the Dice of each method and run, seconds per image, and the benchmark's
table when DIR holds ``benchmark.csv``. Each input can be marked accepted / rejected / needs edit; the page
saves the marks as ``qc.csv`` (a download), and a later report of a folder holding ``qc.csv`` shows them.
``failures.csv`` rows are listed at the top. No remote resource is used: the page reads offline.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from selfseg import io
from selfseg.report.thumbnails import THUMBNAIL_SIDE, overlay_thumbnail, thumbnails
from selfseg.runner.review import QC_MARKS, read_marks
from selfseg.runner.study import STUDY_FOLDER

__all__ = ["QC_MARKS", "REPORT_NAME", "write_report"]

REPORT_NAME = "report.html"

_PAGE = Path(__file__).with_name("page.html")
_FILES = "report_files"
_SHOWN = ("method", "confidence", "seconds", "iterations", "n_labels", "chosen", "kind", "slices")
_NUMERIC = ("confidence", "seconds", "iterations", "n_labels", "slices")  # the shown cells that sort as numbers
_SCORES = ("dice", "iou", "hd95", "assd", "sensitivity", "specificity")


@dataclass
class _Run:
    """One folder with a results.csv: its name relative to the report's folder ('' for the folder itself)."""

    folder: Path
    name: str
    rows: list[dict[str, str]]
    scores: dict[str, dict[str, str]]
    failures: list[dict[str, str]]
    study: _Run | None = None
    """The run's study stage (its ``study/`` folder), shown beside it rather than as a run of its own."""


def _plain(name: str | None) -> bool:
    """Whether ``name`` is a file name, not a path (nor missing: a short row): the page's thumbnails of an input
    stay in ``report_files/``."""
    return name not in (None, "", ".", "..") and not any(sep and sep in name for sep in ("/", os.sep, os.altsep, "\0"))


def _runs(out_dir: Path) -> list[_Run]:
    """Every folder at or below ``out_dir`` holding a results.csv (hidden folders and report files skipped). A row
    whose ``image`` is not a file name (an edited table) is listed among the failures, not shown."""
    runs = []
    for table in sorted(out_dir.rglob("results.csv")):
        folder = table.parent
        relative = folder.relative_to(out_dir)
        if any(part.startswith(".") or part == _FILES for part in relative.parts):
            continue
        scores = {row["image"]: row for row in io.read_csv(folder / "metrics.csv")}
        rows = io.read_csv(table)
        shown = [row for row in rows if _plain(row["image"])]
        refused = [{"image": row["image"] or "", "reason": "not a file name: left out of the report"}
                   for row in rows if not _plain(row["image"])]
        runs.append(_Run(folder, relative.as_posix() if relative.parts else "", shown, scores,
                         io.read_csv(folder / "failures.csv") + refused))
    by_folder, shown = {run.folder: run for run in runs}, []
    for run in runs:
        parent = by_folder.get(run.folder.parent) if run.folder.name == STUDY_FOLDER else None
        if parent is None:
            shown.append(run)
        else:
            parent.study = run
    return shown


def _entries(run: _Run, out_dir: Path, side: int) -> list[dict]:
    """What the page shows for each input of ``run``, with its study mask where the run has a study stage."""
    study = {row["image"]: row for row in run.study.rows} if run.study else {}
    return [_entry(run, row, study.get(row["image"]), out_dir, side) for row in run.rows]


def _entry(run: _Run, row: dict[str, str], study_row: dict[str, str] | None, out_dir: Path, side: int) -> dict:
    """What the page shows for one input: its cells, scores, thumbnails (relative paths) and key."""
    into = out_dir / _FILES / (run.name or ".")
    pictures = thumbnails(run.folder, row, into, side=side)
    cells = {name: row.get(name, "") for name in _SHOWN}
    scores = {name: run.scores[row["image"]][name] for name in _SCORES if row["image"] in run.scores}
    if study_row is not None:
        picture = overlay_thumbnail(run.study.folder, row["image"], into / STUDY_FOLDER, side=side)
        pictures |= {"study": picture} if picture else {}
        cells["agreement"] = study_row["agreement_with_image_stage"]
        if row["image"] in run.study.scores:
            scores["study_dice"] = run.study.scores[row["image"]]["dice"]
    return {
        "key": f"{run.name}/{row['image']}",
        "run": run.name,
        "image": row["image"],
        "cells": cells,
        "scores": scores,
        "thumbs": {kind: quote(os.path.relpath(path, out_dir).replace(os.sep, "/")) for kind, path in pictures.items()},
    }


def _plots(runs: list[_Run], benchmark: list[dict[str, str]]) -> list[str]:
    """The summary plots that apply, as SVG strings."""
    from selfseg.report.plots import benchmark_svg, dice_svg, seconds_svg  # matplotlib: only when a report is made

    groups: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    for run in runs:
        for row in run.rows:
            label = run.name or row.get("method", "")
            if row.get("seconds"):  # a study stage's rows time no fit
                seconds.setdefault(label, []).append(float(row["seconds"]) / max(1, int(row.get("slices") or 1)))
            if row["image"] in run.scores:
                groups.setdefault(label, []).append(float(run.scores[row["image"]]["dice"]))
        if run.study and run.study.scores:
            label = run.name or (run.rows[0].get("method", "") if run.rows else "")
            groups[f"{label} study".strip()] = [float(row["dice"]) for row in run.study.scores.values()]
    plots = [dice_svg(groups)] if groups else []
    plots += [seconds_svg(seconds)] if seconds else []
    plots += [benchmark_svg(benchmark)] if benchmark else []
    return plots


def write_report(out_dir: str | os.PathLike, *, thumbnail_side: int = THUMBNAIL_SIDE, page_size: int = 50) -> Path:
    """Write ``out_dir/report.html`` (and its thumbnails in ``out_dir/report_files/``); return its path.

    ``thumbnail_side`` bounds each thumbnail's longer side (px); ``page_size`` rows are shown per page.

    Raises:
        FileNotFoundError: ``out_dir`` holds no results.csv (at any depth).
    """
    out_dir = Path(out_dir)
    runs = _runs(out_dir)
    if not runs:
        raise FileNotFoundError(f"no results.csv in {out_dir}: not a selfseg output folder")
    benchmark = io.read_csv(out_dir / "benchmark.csv")
    studied = any(run.study for run in runs)
    study_scored = any(run.study and run.study.scores for run in runs)
    data = {
        "title": f"selfseg report: {out_dir.resolve().name}",
        "rows": [entry for run in runs for entry in _entries(run, out_dir, thumbnail_side)],
        "failures": [{"run": run.name, **row} for run in runs for row in run.failures],
        "scored": study_scored or any(run.scores for run in runs),
        "pictures": ["image", "clusters", "overlay"] + (["study"] if studied else []),
        "marks": read_marks(out_dir),
        "qcMarks": list(QC_MARKS),
        "shown": list(_SHOWN) + (["agreement"] if studied else []),
        "numeric": [*_NUMERIC, "agreement"],
        "scoreNames": list(_SCORES) + (["study_dice"] if study_scored else []),
        "pageSize": page_size,
        "benchmark": benchmark,
    }
    page = _PAGE.read_text(encoding="utf-8")
    page = page.replace("@@TITLE@@", html.escape(data["title"]))
    page = page.replace("@@PLOTS@@", "\n".join(f'<figure class="plot">{svg}</figure>' for svg in _plots(runs, benchmark)))
    # markup in a name ("</script>", "<!--") must not end or change the script element: as JSON escapes
    escaped = json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    page = page.replace("@@DATA@@", escaped)
    target = out_dir / REPORT_NAME
    with io.atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target
