"""Batch runner: segment many image files into an output folder with a results table; score them.

For every input image ``<stem>`` the folder gets ``<stem>_labels.png`` (cluster map, 8 or 16 bit),
``<stem>_mask.png`` (foreground, 0/255) and ``<stem>_overlay.png`` (mask drawn on the image), plus
``results.csv`` (one row per image, kept across runs) and, when some inputs failed, ``failures.csv``
(image, reason) for the latest run. ``evaluate_outputs`` scores the masks of such a folder against
ground-truth masks into ``metrics.csv``.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

import selfseg
from selfseg import datasets, engine, io
from selfseg.foreground import check_rule, choose_mask
from selfseg.metrics import METRIC_NAMES, evaluate
from selfseg.visualize import overlay

__all__ = [
    "LABELS_SUFFIX",
    "MASK_SUFFIX",
    "OUTPUT_SUFFIXES",
    "OVERLAY_SUFFIX",
    "RESULT_COLUMNS",
    "BatchReport",
    "evaluate_outputs",
    "image_seed",
    "run_batch",
    "summarize",
    "summary_line",
    "summary_table",
]

MASK_SUFFIX = "_mask.png"
"""Name ending of the foreground masks that ``run_batch`` writes and ``evaluate_outputs`` reads."""
LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
OUTPUT_SUFFIXES = (LABELS_SUFFIX, MASK_SUFFIX, OVERLAY_SUFFIX)
"""The files ``run_batch`` writes for each image ``<stem>``."""

RESULT_COLUMNS: tuple[str, ...] = (
    "image",
    "method",
    "seed",
    "image_seed",
    "iterations",
    "seconds",
    "n_labels",
    "foreground_pixels",
    "height",
    "width",
    "size",
    "max_iter",
    "min_labels",
    "device",
    "precision",
    "foreground",
    "target",
    "point",
    "chosen",
    "version",
)
"""Columns of ``results.csv``: image stem, what ran and what came out, then the parameters
(an empty cell means the default: the method's for ``max_iter`` and ``min_labels``, native
resolution for ``size``). ``image_seed`` is the seed the image was fitted with (``image_seed()``);
``foreground``, ``target`` and ``point`` say how the mask was asked for and ``chosen`` what chose it
(``foreground.choose_mask``); ``version`` is the selfseg version that wrote the row."""

_TRAINING = ("method", "seed", "size", "max_iter", "min_labels", "device", "precision")
_SELECTION = ("foreground", "target", "point", "version")
"""``results.csv`` columns that must match for ``resume`` to keep an image's cluster map, and its mask."""


def image_seed(seed: int, path: str | os.PathLike) -> int:
    """Seed for one image file: a 31-bit number derived from ``seed`` and the SHA-256 of the file's bytes.

    Results then depend on neither the order of a batch, its folder layout nor the number of workers,
    and two copies of one file get the same segmentation.
    """
    digest = hashlib.sha256(str(seed).encode() + b"\0")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return int.from_bytes(digest.digest()[:4], "big") >> 1


@dataclass
class BatchReport:
    """What ``run_batch`` did: one row (keys ``RESULT_COLUMNS``) per finished image of this batch,
    (path, reason) per input that failed, and the stems ``resume`` skipped."""

    results: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _cell(value: object) -> str:
    """CSV text of a row value: None is empty, floats (seconds) get 3 decimals."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _read_results(path: Path) -> dict[str, list[str]]:
    """Rows of an existing ``results.csv`` keyed by image stem, as ``RESULT_COLUMNS`` cells ({} if absent).

    Columns it lacks are left empty and unknown ones dropped, so tables of older versions carry over.
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "image" not in reader.fieldnames:
                raise ValueError(f"{path} exists but is not a results table (no 'image' column)")
            return {row["image"]: [row.get(c) or "" for c in RESULT_COLUMNS] for row in reader}
    except FileNotFoundError:
        return {}


def _check_unique_stems(paths: list[Path]) -> None:
    """Raise ValueError if two inputs would write the same output files."""
    first: dict[str, Path] = {}
    for path in paths:
        if path.stem in first:
            raise ValueError(
                f"inputs {first[path.stem]} and {path} have the same name {path.stem!r}; "
                "their outputs would overwrite each other"
            )
        first[path.stem] = path


def _write_outputs(out_dir: Path, stem: str, image: np.ndarray, mask: np.ndarray, labels: np.ndarray | None) -> None:
    """Write an image's cluster map (unless None), mask and overlay, each atomically."""
    if labels is not None:
        io.write_image(out_dir / f"{stem}{LABELS_SUFFIX}", labels.astype(np.uint8 if labels.max() < 256 else np.uint16))
    io.write_image(out_dir / f"{stem}{MASK_SUFFIX}", mask)
    io.write_image(out_dir / f"{stem}{OVERLAY_SUFFIX}", overlay(image, mask))


def _typed(cells: list[str]) -> dict:
    """A ``results.csv`` row (cells) back as a row dict with numbers where ``summary_line`` needs them."""
    row: dict = dict(zip(RESULT_COLUMNS, cells))
    for name in ("image_seed", "iterations", "n_labels", "foreground_pixels", "height", "width"):
        row[name] = int(row[name])
    row["seconds"] = float(row["seconds"])
    return row


def run_batch(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    method: str = "s3net",
    seed: int = 0,
    max_iter: int | None = None,
    min_labels: int | None = None,
    size: int | None = 256,
    device: str = "auto",
    precision: str = "float32",
    foreground: str = "auto",
    target: str = "auto",
    point: tuple[int, int] | None = None,
    ground_truth: str | os.PathLike | None = None,
    oracle_crop: bool = False,
    resume: bool = False,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    **options,
) -> BatchReport:
    """Segment every image of ``inputs`` (files and folders, see ``io.find_images``) into ``out_dir``.

    Writes the files described in this module's docstring, each atomically; ``results.csv`` is
    rewritten after every image and keeps rows of earlier runs (a re-run image replaces its row).
    An input that cannot be read, or that ``segment`` rejects (ValueError, TypeError), is reported
    as ``error: <path>: <reason>`` on stderr and in ``failures``, gets no outputs, and the batch goes
    on. ``method``, ``seed``, ``max_iter``, ``min_labels``, ``size``, ``device``, ``precision``,
    ``foreground``, ``target``, ``point`` and ``**options`` go to ``engine.segment``; each image is
    fitted with ``image_seed(seed, path)``. ``foreground="oracle"`` (the papers' protocol,
    ``oracle_crop`` with its crop) reads each image's mask from ``ground_truth``
    (``datasets.load_masks``); an image without one fails.

    With ``resume``, an image whose ``results.csv`` row has the same training parameters (method,
    seed, size, max_iter, min_labels, device, precision) and whose cluster map exists is not fitted
    again: if the selection parameters (foreground, target, point, selfseg version) also match and
    its mask and overlay exist it is skipped (listed in ``skipped``), otherwise its mask is chosen
    again from the stored cluster map, in well under a second. ``on_result`` is called with each
    finished image's row; ``progress`` shows a progress bar on stderr.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs share a file stem, ``method`` or the selection arguments are invalid,
            or ``out_dir`` holds a ``results.csv`` that is not a results table. Nothing is written.
    """
    paths = io.find_images(inputs)
    _check_unique_stems(paths)
    if method not in engine.ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(engine.ALL_METHODS)}")
    check_rule(foreground=foreground, target=target, point=point, oracle_crop=oracle_crop, truth=ground_truth is not None if foreground == "oracle" else None)
    out_dir = Path(out_dir)
    results_csv, failures_csv = out_dir / "results.csv", out_dir / "failures.csv"
    truths = datasets.load_masks(ground_truth) if foreground == "oracle" else {}
    table = _read_results(results_csv)
    failures_csv.unlink(missing_ok=True)
    report = BatchReport()
    settings = {
        "method": method, "seed": seed, "size": size, "max_iter": max_iter, "min_labels": min_labels,
        "device": device, "precision": precision, "foreground": "oracle+crop" if oracle_crop else foreground,
        "target": target, "point": None if point is None else f"{point[0]},{point[1]}", "version": selfseg.__version__,
    }
    wanted = {name: _cell(value) for name, value in settings.items()}

    def matches(previous: list[str], names: tuple[str, ...], suffixes: tuple[str, ...], stem: str) -> bool:
        return all(previous[RESULT_COLUMNS.index(n)] == wanted[n] for n in names) and all(
            (out_dir / f"{stem}{suffix}").exists() for suffix in suffixes
        )

    with tqdm(paths, desc="segment", unit="image", file=sys.stderr, disable=not progress) as bar:
        for path in bar:
            bar.set_postfix_str(path.stem)
            previous = table.get(path.stem) if resume else None
            refit = previous is None or not matches(previous, _TRAINING, (LABELS_SUFFIX,), path.stem)
            if not refit and matches(previous, _SELECTION, (MASK_SUFFIX, OVERLAY_SUFFIX), path.stem):
                report.skipped.append(path.stem)
                continue
            try:
                image = io.read_image(path)
                truth = None
                if foreground == "oracle":
                    if path.stem not in truths:
                        raise ValueError(f"no ground-truth mask in {ground_truth}")
                    truth = io.read_mask(truths[path.stem])
                rule = dict(foreground=foreground, target=target, point=point, truth=truth, oracle_crop=oracle_crop)
                if refit:
                    result = engine.segment(
                        image, method, seed=image_seed(seed, path), size=size, max_iter=max_iter,
                        min_labels=min_labels, device=device, precision=precision, **rule, **options,
                    )
                    labels, mask, chosen = result.labels, result.mask, result.foreground
                else:
                    labels = io.read_labels(out_dir / f"{path.stem}{LABELS_SUFFIX}")
                    mask, chosen = choose_mask(labels, engine.as_float_image(image), **rule)
            except (ValueError, TypeError) as err:  # io.ImageReadError is a ValueError
                reason = err.reason if isinstance(err, io.ImageReadError) else " ".join(str(err).split())
                tqdm.write(f"error: {path}: {reason}", file=sys.stderr)
                report.failures.append((str(path), reason))
                io.write_csv(failures_csv, ("image", "reason"), report.failures)
                continue
            _write_outputs(out_dir, path.stem, image, mask, labels if refit else None)
            if refit:
                row = {
                    "image": path.stem, "method": result.method, "seed": seed, "image_seed": result.seed,
                    "iterations": result.iterations, "seconds": result.seconds, "n_labels": result.n_labels,
                    "height": image.shape[0], "width": image.shape[1],
                }
            else:
                row = _typed(previous)
            row.update(settings, foreground_pixels=int(mask.sum()), chosen=chosen)
            report.results.append(row)
            table[path.stem] = [_cell(row[c]) for c in RESULT_COLUMNS]
            io.write_csv(results_csv, RESULT_COLUMNS, table.values())
            if on_result is not None:
                on_result(row)
    return report


def summary_line(row: dict) -> str:
    """One console line for a ``BatchReport.results`` row, e.g.
    ``Test_1: 3 labels, 7 iterations, 9.8 s, foreground 19.6% (lesion)``, ending with what chose the
    mask (``(oracle)`` or ``(oracle+crop)`` when it was chosen with the ground truth)."""
    share = 100 * row["foreground_pixels"] / (row["height"] * row["width"])
    return (
        f"{row['image']}: {row['n_labels']} labels, {row['iterations']} iterations, "
        f"{row['seconds']:.1f} s, foreground {share:.1f}% ({row['chosen']})"
    )


def evaluate_outputs(
    out_dir: str | os.PathLike, ground_truth: str | os.PathLike, *, spacing: tuple[float, ...] | None = None
) -> BatchReport:
    """Score every ``<stem>_mask.png`` of ``out_dir`` against its ground-truth mask; write ``metrics.csv``.

    ``ground_truth`` is a folder of masks or a dataset (``datasets.load_masks``). One row per scored
    image (``image`` and ``metrics.METRIC_NAMES``); a prediction without a ground-truth mask, an
    unreadable mask or a size mismatch is a failure (image, reason) and the rest go on.

    Raises:
        datasets.DatasetError: ``ground_truth`` holds no masks.
        FileNotFoundError: ``out_dir`` does not exist.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output folder not found: {out_dir}")
    truths = datasets.load_masks(ground_truth)
    report = BatchReport()
    for path in sorted(out_dir.glob(f"*{MASK_SUFFIX}")):
        stem = path.name[: -len(MASK_SUFFIX)]
        if stem not in truths:
            report.failures.append((stem, f"no ground-truth mask in {ground_truth}"))
            continue
        try:
            predicted, truth = io.read_mask(path), io.read_mask(truths[stem])
        except io.ImageReadError as err:
            report.failures.append((stem, str(err)))
            continue
        if predicted.shape != truth.shape:
            report.failures.append(
                (stem, f"prediction {predicted.shape} and ground truth {truth.shape} differ in size")
            )
            continue
        report.results.append({"image": stem, **evaluate(predicted, truth, spacing=spacing)})
    rows = ([row["image"], *(f"{row[name]:.6f}" for name in METRIC_NAMES)] for row in report.results)
    io.write_csv(out_dir / "metrics.csv", ("image", *METRIC_NAMES), rows)
    return report


def summarize(rows: list[dict]) -> dict[str, tuple[float, float, float, int]]:
    """Per metric: (mean, std, median, n) over the finite values of ``rows`` (inf/nan left out)."""
    summary = {}
    for name in METRIC_NAMES:
        values = np.array([row[name] for row in rows], dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size:
            summary[name] = (float(finite.mean()), float(finite.std()), float(np.median(finite)), int(finite.size))
        else:
            summary[name] = (float("nan"), float("nan"), float("nan"), 0)
    return summary


def summary_table(summary: dict[str, tuple[float, float, float, int]]) -> str:
    """Plain-text table of ``summarize``'s result, one metric per line."""
    lines = [f"{'metric':<12} {'mean':>8} {'std':>8} {'median':>8} {'n':>5}"]
    lines += [f"{name:<12} {m:>8.4f} {s:>8.4f} {med:>8.4f} {n:>5}" for name, (m, s, med, n) in summary.items()]
    return "\n".join(lines)
