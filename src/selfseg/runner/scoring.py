"""Scoring and summaries of an output folder: ``evaluate_outputs`` (``metrics.csv``), ``summarize`` and
``summary_table`` (mean, std, median per metric), ``summary_line`` (one console line per result row)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from selfseg import datasets, io
from selfseg.checks import one_line
from selfseg.metrics import METRIC_NAMES, evaluate
from selfseg.runner.task import MASK_SUFFIX

__all__ = ["BatchReport", "evaluate_outputs", "summarize", "summary_line", "summary_table"]


@dataclass
class BatchReport:
    """What ``run_batch`` did: one row (keys ``RESULT_COLUMNS``) per finished input of this batch,
    (path, reason) per input that failed, and the stems ``resume`` skipped."""

    results: list[dict] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    study: list[dict] = field(default_factory=list)  # the study stage's rows (``runner.study.STUDY_COLUMNS``)


def summary_line(row: dict) -> str:
    """One console line for a ``BatchReport.results`` row, e.g.
    ``Test_1: 3 labels, 7 iterations, 9.8 s, foreground 19.6% (lesion)``, ending with what chose the
    mask (``(oracle)`` or ``(oracle+crop)`` when it was chosen with the ground truth); ``? s`` where the seconds of
    the fit are not known (a row taken from the files of its input)."""
    share = 100 * row["foreground_pixels"] / (row["slices"] * row["height"] * row["width"])
    slices = f"{row['slices']} slices, " if row["slices"] > 1 else ""
    seconds = "?" if row["seconds"] is None else f"{row['seconds']:.1f}"
    return one_line(
        f"{row['image']}: {slices}{row['n_labels']} labels, {row['iterations']} iterations, "
        f"{seconds} s, foreground {share:.1f}% ({row['chosen']})"
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

