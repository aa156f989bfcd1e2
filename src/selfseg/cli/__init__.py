"""Command line: ``selfseg segment | evaluate | benchmark | report``. ``parser.build_parser`` parses; ``main``
dispatches each command to the library (``runner.run_batch``, ``runner.evaluate_outputs``, ``benchmark.benchmark``,
``report.write_report``) and turns its outcome into printed lines and an exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from selfseg import io
from selfseg.benchmark import benchmark, markdown_table
from selfseg.checks import one_line
from selfseg.cli.parser import build_parser
from selfseg.datasets import DatasetError, load_masks
from selfseg.optional import MissingDependencyError
from selfseg.report import write_report
from selfseg.runner import (
    RayJoinError,
    evaluate_outputs,
    run_batch,
    run_study_model,
    summarize,
    summary_line,
    summary_table,
)
from selfseg.study import StudySettings

__all__ = ["build_parser", "main"]


def _error(message: object) -> None:
    """Print ``error: <message>`` on stderr, one line whatever the names in it hold."""
    print(one_line(f"error: {message}"), file=sys.stderr)


def _benchmark(args: argparse.Namespace) -> int:
    """Run ``selfseg benchmark``; print the table; exit status."""
    try:
        rows = benchmark(
            args.datasets,
            args.out,
            methods=args.methods.split(","),
            foreground=args.foreground.split(","),
            seeds=args.seed,
            **_run_options(args),
        )
    except (FileNotFoundError, ValueError, MissingDependencyError, RayJoinError) as err:  # DatasetError: a ValueError
        _error(err)
        return 2
    print(markdown_table(rows))
    status = 1 if any(row["failed"] for row in rows) else 0
    return max(status, _report(args.out)) if args.report else status


_RUN_OPTIONS = (
    "size", "device", "precision", "target", "readout", "readout_clusters", "workers", "threads", "batch_images", "fits",
    "backend", "ray_address", "ray_cpus", "ray_gpus",
)
"""The ``run_batch`` arguments of the options every command that segments shares (``parser._add_run_options``)."""


def _run_options(args: argparse.Namespace) -> dict:
    """The shared ``run_batch`` arguments of a command that segments, and its progress bar."""
    return {name: getattr(args, name) for name in _RUN_OPTIONS} | {"progress": not args.quiet}


def _report(out: str) -> int:
    """Write ``out/report.html``; print where; exit status (2: no results in ``out``)."""
    try:
        path = write_report(out)
    except FileNotFoundError as err:
        _error(err)
        return 2
    print(one_line(f"report -> {path}"))
    return 0


def _evaluate(pred_dir: str, ground_truth: str, spacing: tuple[float, ...] | None) -> int:
    """Score ``pred_dir`` against ``ground_truth``, print the summary; exit status."""
    try:
        report = evaluate_outputs(pred_dir, ground_truth, spacing=spacing)
    except (FileNotFoundError, DatasetError) as err:
        _error(err)
        return 2
    for stem, reason in report.failures:
        _error(f"{stem}: {reason}")
    print(summary_table(summarize(report.results)))
    print(one_line(f"{len(report.results)} masks scored, {len(report.failures)} not -> {Path(pred_dir) / 'metrics.csv'}"))
    return 1 if report.failures else 0


def _study_model(args: argparse.Namespace) -> int:
    """Run ``selfseg segment --study-model FILE``; exit status."""
    try:
        report = run_study_model(args.inputs, args.out, args.study_model, pattern=args.glob, device=args.device,
                                 progress=not args.quiet)
    except (FileNotFoundError, ValueError) as err:  # StudyModelError is a ValueError
        _error(err)
        return 2
    print(one_line(f"{len(report.results)} images segmented with {args.study_model}, {len(report.failures)} failed "
                   f"-> {args.out}"))
    status = 1 if report.failures else 0
    return max(status, _evaluate(args.out, args.gt, None)) if args.gt is not None else status


def _segment(args: argparse.Namespace) -> int:
    """Run ``selfseg segment``: one line per finished input, then the summary (and scores, report); exit status."""
    if args.study_model is not None:
        return _study_model(args)
    study = StudySettings(network=args.study_network, members=args.study_members, seed=args.seed,
                          device=args.device) if args.study else None
    try:
        if args.gt is not None:
            load_masks(args.gt)  # a wrong --gt fails before the long run, not after it
        report = run_batch(
            args.inputs, args.out, method=args.method, seed=args.seed, max_iter=args.max_iter,
            min_labels=args.min_labels, foreground=args.foreground, point=args.point, ground_truth=args.gt,
            oracle_crop=args.oracle_crop, pattern=args.glob, axis=args.axis, resume=not args.overwrite,
            on_result=lambda row: tqdm.write(summary_line(row), file=sys.stdout), study=study, **_run_options(args),
        )
    except (FileNotFoundError, ValueError, MissingDependencyError, RayJoinError) as err:  # DatasetError: a ValueError
        _error(err)
        return 2
    except KeyboardInterrupt:
        print(one_line(f"interrupted; finished images are in {args.out}"), file=sys.stderr)
        return 130
    print(one_line(f"{len(report.results)} images segmented, {len(report.failures)} failed -> {args.out}"))
    if report.study:
        print(one_line(f"study stage: {len(report.study)} study masks -> {Path(args.out) / 'study'}"))
    status = 1 if report.failures else 0
    if args.gt is not None:
        status = max(status, _evaluate(args.out, args.gt, None))
        if report.study:
            status = max(status, _evaluate(str(Path(args.out) / "study"), args.gt, None))
    if args.report:
        status = max(status, _report(args.out))
    return status


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; its exit status."""
    if args.command == "evaluate":
        return _evaluate(args.pred_dir, args.gt, args.spacing)
    if args.command == "benchmark":
        return _benchmark(args)
    if args.command == "report":
        return _report(args.out)
    return _segment(args)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 some images failed, 2 usage error or a Ray cluster that
    cannot be joined, 3 an output could not be written, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except io.WriteError as err:  # a full or read-only disk, an unusable --out: one line
        _error(err)
        return 3
