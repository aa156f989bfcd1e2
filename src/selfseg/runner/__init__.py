"""Batch runner: segment many images and volumes into an output folder with a results table; score them.

For every 2-D input ``<stem>`` the folder gets ``<stem>_labels.png`` (cluster map, 8 or 16 bit),
``<stem>_mask.png`` (foreground, 0/255) and ``<stem>_overlay.png`` (mask drawn on the image); a volume
(``volumes.is_volume``: DICOM file or series folder, NIfTI, multi-frame TIFF) is segmented slice by
slice and gets ``<stem>_labels.nii.gz``, ``<stem>_mask.nii.gz`` and ``<stem>_overlay.nii.gz`` in the
source's space (``volumes.write_volume_like``). ``results.csv`` (one row per input, kept across runs)
is the manifest resume reads; ``failures.csv`` (image, reason) lists the inputs of the latest run
that failed. ``evaluate_outputs`` scores the 2-D masks of such a folder into ``metrics.csv``.

``run_batch`` runs in three named steps: plan (``batch.Batch.plan``: each input's task from the manifest),
run (``workers.Execution.run``: here, in worker processes or on Ray) and record (``batch.Batch.record``).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path

from tqdm import tqdm

from selfseg import io, volumes
from selfseg.batch_inputs import find_inputs, input_stem
from selfseg.methods import DEFAULT_SIZE
from selfseg.runner.batch import Batch, clear_leftovers, record_failure
from selfseg.runner.manifest import RESULT_COLUMNS
from selfseg.runner.scoring import BatchReport, evaluate_outputs, summarize, summary_line, summary_table
from selfseg.runner.study import apply_study_model, run_study_stage
from selfseg.runner.task import (
    LABELS_SUFFIX,
    MASK_SUFFIX,
    OUTPUT_SUFFIXES,
    OVERLAY_SUFFIX,
    VOLUME_OUTPUT_SUFFIXES,
    fingerprint,
    image_seed,
    slice_seed,
)
from selfseg.runner.workers import (
    BACKENDS,
    WORKER_MEMORY_GIB,
    Execution,
    RayJoinError,
    available_cores,
    available_memory_gib,
    check_workers,
    plan_batch_images,
    plan_workers,
)
from selfseg.settings import settings_from_arguments
from selfseg.study import StudySettings

__all__ = [
    "BACKENDS",
    "LABELS_SUFFIX",
    "MASK_SUFFIX",
    "OUTPUT_SUFFIXES",
    "OVERLAY_SUFFIX",
    "RESULT_COLUMNS",
    "VOLUME_OUTPUT_SUFFIXES",
    "WORKER_MEMORY_GIB",
    "BatchReport",
    "RayJoinError",
    "available_cores",
    "available_memory_gib",
    "check_workers",
    "evaluate_outputs",
    "image_seed",
    "plan_batch_images",
    "plan_workers",
    "run_batch",
    "run_study_model",
    "slice_seed",
    "summarize",
    "summary_line",
    "summary_table",
]


def _unique_stems(paths: list[Path]) -> list[Path]:
    """``paths``; ValueError if two inputs would write the same output files."""
    first: dict[str, Path] = {}
    for path in paths:
        stem = input_stem(path)
        if stem in first:
            raise ValueError(
                f"inputs {first[stem]} and {path} have the same name {stem!r}; their outputs would overwrite each other"
            )
        first[stem] = path
    return paths


def run_batch(
    inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, *, method: str = "s3net", seed: int = 0,
    max_iter: int | None = None, min_labels: int | None = None, size: int | None = DEFAULT_SIZE, device: str = "auto",
    precision: str = "float32", foreground: str = "auto", target: str = "auto", point: tuple[int, int] | None = None,
    ground_truth: str | os.PathLike | None = None, oracle_crop: bool = False, pattern: str | None = None,
    axis: int | None = None, resume: bool = False, workers: int | str = "auto", threads: int = 1,
    batch_images: int | None = None, fits: int = 1, backend: str = "local", ray_address: str | None = None,
    ray_cpus: float = 1.0, ray_gpus: float = 0.0, progress: bool = True, on_result: Callable[[dict], None] | None = None,
    study: StudySettings | None = None, **options,
) -> BatchReport:
    """Segment every image and volume of ``inputs`` into ``out_dir``; return what happened.

    ``inputs``: files, folders (searched recursively for names matching ``pattern``, ``out_dir`` left out) and
    ``@list`` files (``batch_inputs.find_inputs``). Each input is fitted with its own seed (``image_seed``; a
    volume slice by slice, ``slice_seed``), its files written atomically before its ``results.csv`` row, so a run
    killed at any moment leaves complete files. A bad input is reported (stderr, ``failures``, failures.csv) and
    the batch goes on. With ``resume``, an input whose row and files are current is skipped, and one whose cluster
    map is current gets its mask chosen again where that gives what a fit would (``manifest.decide``); a row
    results.csv lacks is taken from the input's complete files (``Manifest.adopt``): results.csv, rewritten whole, is
    written at most about once a second while rows come (``manifest.PacedSave``). A disk that refuses a write
    (full, read-only) stops the batch: what has not started is cancelled, the inputs finished are recorded where
    the disk takes results.csv, no temporary file remains, and the same call resumes once space is back. However the
    run ends, the temporary files in ``out_dir`` are removed (those of a worker that died in a write: its node lost).
    ``method`` ... ``oracle_crop``, ``fits`` and ``**options`` are ``engine.segment``'s (``FitSettings``,
    ``MaskRule``; ``foreground="oracle"`` reads each image's mask from ``ground_truth``); ``workers`` ...
    ``ray_gpus`` say where the fits run (``workers.Execution``). With ``study``, the study stage follows
    (``runner.study.run_study_stage``: ``out_dir/study``, rows in ``report.study``). docs/api.md describes every
    argument.

    Raises:
        io.WriteError: ``out_dir`` cannot be created or written (before any work), or the disk refused a write
            and the batch stopped.
        FileNotFoundError: an input does not exist.
        ValueError: a bad argument, two inputs sharing a stem, or a ``results.csv`` in ``out_dir`` that is not a
            results table. Nothing is written.
        RayJoinError: ``backend="ray"`` and the cluster at ``ray_address`` cannot be joined (a ConnectionError;
            the message says why, for a refused authentication token what to set).
        KeyboardInterrupt: Ctrl-C; the worker processes stop at once.
    """
    arguments = dict(size=size, max_iter=max_iter, min_labels=min_labels, device=device, precision=precision,
                     fits=fits, foreground=foreground, target=target, point=point, oracle_crop=oracle_crop)
    settings, rule = settings_from_arguments(method, arguments | options)
    execution = Execution(workers, threads, batch_images, backend, ray_address, ray_cpus, ray_gpus)
    rule.check(truth=rule.foreground == "oracle" and ground_truth is not None)
    paths = _unique_stems(find_inputs(inputs, pattern=pattern, exclude=out_dir))
    batch = Batch.open(out_dir, settings, rule, seed=seed, axis=axis, resume=resume, ground_truth=ground_truth,
                       on_result=on_result)
    with tqdm(total=len(paths), desc="segment", unit="input", file=sys.stderr, disable=not progress) as bar:
        try:
            tasks = []
            for path in paths:  # plan
                task = batch.plan(path)
                if task is None:
                    bar.update()
                else:
                    tasks.append(task)
            batch.save_adopted()
            on_start = lambda task: bar.set_postfix_str(task.path.name)  # noqa: E731
            with closing(execution.run(tasks, settings, on_start)) as outcomes:
                for task, outcome in outcomes:  # run, record
                    bar.update()
                    batch.record(task, outcome)
            batch.flush()
        finally:  # however it ended: the rows not yet written, where the disk takes them
            batch.end()
    if study is not None:
        batch.report.study = run_study_stage(batch.out_dir, batch.image_rows(paths), study, progress=progress)
    return batch.report


def run_study_model(
    inputs: Iterable[str | os.PathLike], out_dir: str | os.PathLike, model: str | os.PathLike, *,
    pattern: str | None = None, device: str = "auto", progress: bool = True,
) -> BatchReport:
    """Segment every 2-D image of ``inputs`` with the stored study ``model`` (``--study-model``): a forward pass and
    the prior per image, no per-image fit; masks, overlays and ``results.csv`` (``runner.study.STUDY_COLUMNS``)
    into ``out_dir``. Returns the report: its ``results`` are the rows; an input that cannot be read is reported
    (stderr, ``failures``, failures.csv) and the others go on.

    Raises:
        study.StudyModelError: ``model`` is not a usable study model (a ValueError). FileNotFoundError: an input
            or the model does not exist. io.WriteError: ``out_dir`` cannot be created or written, or a write failed.
    """
    paths = [path for path in _unique_stems(find_inputs(inputs, pattern=pattern, exclude=out_dir))
             if not volumes.is_volume(path)]
    out = io.check_folder(out_dir)
    clear_leftovers(out)
    report = BatchReport()
    fail = functools.partial(record_failure, report, out)
    items = []
    for path in paths:
        try:
            items.append((input_stem(path), path, fingerprint(path, 0)[0]))
        except io.ImageReadError as err:
            fail(path, err.reason)
    report.results = apply_study_model(Path(model), items, out, device=device, progress=progress, on_failure=fail)
    return report
