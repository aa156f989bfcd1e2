"""Batch runner: segment many images and volumes into an output folder with a results table; score them.

For every 2-D input ``<stem>`` the folder gets ``<stem>_labels.png`` (cluster map, 8 or 16 bit),
``<stem>_mask.png`` (foreground, 0/255) and ``<stem>_overlay.png`` (mask drawn on the image); a volume
(``volumes.is_volume``: DICOM file or series folder, NIfTI, multi-frame TIFF) is segmented slice by
slice and gets ``<stem>_labels.nii.gz``, ``<stem>_mask.nii.gz`` and ``<stem>_overlay.nii.gz`` in the
source's space (``volumes.write_volume_like``). ``results.csv`` (one row per input, kept across runs)
is the manifest ``resume`` reads; ``failures.csv`` (image, reason) lists the inputs of the latest run
that failed. ``evaluate_outputs`` scores the 2-D masks of such a folder into ``metrics.csv``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

import selfseg
from selfseg import datasets, engine, io, volumes
from selfseg.batch_inputs import find_inputs, input_stem
from selfseg.batched import check_fits
from selfseg.checks import look_up_option
from selfseg.foreground import check_rule
from selfseg.runner.manifest import RESULT_COLUMNS, Manifest, cell, decide, options_cell, read_manifest, typed
from selfseg.runner.scoring import BatchReport, evaluate_outputs, summarize, summary_line, summary_table
from selfseg.runner.task import (
    LABELS_SUFFIX,
    MASK_SUFFIX,
    OUTPUT_SUFFIXES,
    OVERLAY_SUFFIX,
    VOLUME_OUTPUT_SUFFIXES,
    Task,
    fingerprint,
    image_seed,
    slice_seed,
)
from selfseg.runner.workers import (
    BACKENDS,
    WORKER_MEMORY_GIB,
    available_cores,
    available_memory_gib,
    check_workers,
    plan_batch_images,
    plan_workers,
    run_ray_tasks,
    run_tasks,
)

__all__ = [
    "LABELS_SUFFIX",
    "MASK_SUFFIX",
    "OUTPUT_SUFFIXES",
    "OVERLAY_SUFFIX",
    "RESULT_COLUMNS",
    "VOLUME_OUTPUT_SUFFIXES",
    "WORKER_MEMORY_GIB",
    "BatchReport",
    "available_cores",
    "available_memory_gib",
    "check_workers",
    "evaluate_outputs",
    "image_seed",
    "plan_batch_images",
    "plan_workers",
    "run_batch",
    "slice_seed",
    "summarize",
    "summary_line",
    "summary_table",
]

_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp")  # io.atomic_path's names, left by a killed run


def _check_unique_stems(paths: list[Path]) -> None:
    """Raise ValueError if two inputs would write the same output files."""
    first: dict[str, Path] = {}
    for path in paths:
        stem = input_stem(path)
        if stem in first:
            raise ValueError(
                f"inputs {first[stem]} and {path} have the same name {stem!r}; "
                "their outputs would overwrite each other"
            )
        first[stem] = path


@dataclass
class _Batch:
    """One ``run_batch`` call: what every input is fitted with, the folder's manifest, and what happened."""

    out_dir: Path
    seed: int
    settings: dict  # the row cells every input of the batch shares
    fit: dict  # engine.segment's training arguments and options
    rule: dict  # foreground, target, point, oracle_crop
    axis: int | None
    resume: bool
    truths: dict[str, Path]
    ground_truth: str | os.PathLike | None
    manifest: Manifest
    on_result: Callable[[dict], None] | None
    report: BatchReport = field(default_factory=BatchReport)

    def fail(self, path: Path, reason: str) -> None:
        """Report a failed input on stderr, in the report and in failures.csv (sorted: the same file in any
        finishing order)."""
        tqdm.write(f"error: {path}: {reason}", file=sys.stderr)
        self.report.failures.append((str(path), reason))
        io.write_csv(self.out_dir / "failures.csv", ("image", "reason"), sorted(self.report.failures))

    def plan(self, path: Path) -> tuple[Task, tuple[dict, list[str] | None]] | None:
        """The task of one input with (its wanted cells, its current manifest row); None if it failed or
        is skipped (both recorded)."""
        stem, volume = input_stem(path), volumes.is_volume(path)
        suffixes = VOLUME_OUTPUT_SUFFIXES if volume else OUTPUT_SUFFIXES
        outputs = tuple(self.out_dir / f"{stem}{suffix}" for suffix in suffixes)
        try:
            digest, fitted_seed = fingerprint(path, self.seed)
            if self.rule["foreground"] == "oracle" and stem not in self.truths:
                raise ValueError(f"no ground-truth mask in {self.ground_truth}")
        except ValueError as err:
            self.fail(path, err.reason if isinstance(err, io.ImageReadError) else str(err))
            return None
        wanted = {name: cell(value) for name, value in self.settings.items()} | {"input_sha256": digest}
        wanted["axis"] = wanted["axis"] if volume else ""
        previous = self.manifest.current.get(stem) if self.resume else None
        action = decide(previous, wanted, outputs, path=path, volume=volume)
        if action == "skip":
            self.report.skipped.append(stem)
            return None
        task = Task(
            path, outputs, volume, action == "refit", fitted_seed, self.fit, self.rule, self.truths.get(stem),
            self.axis if volume else None,
        )
        return task, (wanted, previous)

    def finish(self, task: Task, wanted: dict, previous: list[str] | None, outcome: tuple[dict, str | None]) -> None:
        """Record one finished task: its row in the report and the manifest, or its failure."""
        fields, reason = outcome
        if reason is not None:
            self.fail(task.path, reason)
            return
        row = {"image": input_stem(task.path), **(typed(previous) if not task.refit else {}), **fields}
        row["input"] = str(task.path)
        row.update(self.settings, axis=wanted["axis"], input_sha256=wanted["input_sha256"])
        self.report.results.append(row)
        self.manifest.write(row["image"], row)
        if self.on_result is not None:
            self.on_result(row)


def _clear_leftovers(out_dir: Path) -> None:
    """Remove the previous run's failures.csv and the temporary files of a killed run."""
    (out_dir / "failures.csv").unlink(missing_ok=True)
    if out_dir.is_dir():
        for stale in out_dir.iterdir():
            if _TEMPORARY.match(stale.name):
                stale.unlink(missing_ok=True)


def run_batch(
    inputs: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    method: str = "s3net",
    seed: int = 0,
    max_iter: int | None = None,
    min_labels: int | None = None,
    size: int | None = engine.DEFAULT_SIZE,
    device: str = "auto",
    precision: str = "float32",
    foreground: str = "auto",
    target: str = "auto",
    point: tuple[int, int] | None = None,
    ground_truth: str | os.PathLike | None = None,
    oracle_crop: bool = False,
    pattern: str | None = None,
    axis: int | None = None,
    resume: bool = False,
    workers: int | str = 1,
    threads: int = 1,
    batch_images: int | None = None,
    fits: int = 1,
    backend: str = "local",
    ray_address: str | None = None,
    ray_cpus: float = 1.0,
    ray_gpus: float = 0.0,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    **options,
) -> BatchReport:
    """Segment every image and volume of ``inputs`` into ``out_dir``.

    ``inputs`` are files, folders (searched recursively for names matching ``pattern``, ``out_dir``
    left out) and ``@list`` files: ``batch_inputs.find_inputs``. Volumes are read with
    ``volumes.read_volume(path, axis=axis)`` (None: the format's default axis) and fitted slice by
    slice, slice k with ``slice_seed(image_seed(seed, path), k)``; 2-D images with ``image_seed(seed, path)``.

    Writes the files described in this module's docstring, each atomically; an input's
    ``results.csv`` row is written (atomically, rows sorted by stem, rows of earlier runs kept, a
    re-run input replacing its row) only after all its files, so a run killed at any moment leaves
    complete files and each input at most once in the table. An input that cannot be read, or that
    ``segment`` rejects (ValueError, TypeError), is reported as ``error: <path>: <reason>`` on stderr
    and in ``failures`` and ``failures.csv``, gets no outputs, and the batch goes on. ``method``,
    ``seed``, ``max_iter``, ``min_labels``, ``size``, ``device``, ``precision``, ``foreground``,
    ``target``, ``point`` and ``**options`` go to ``engine.segment``. ``foreground="oracle"`` (the
    papers' protocol, ``oracle_crop`` with its crop) reads each image's mask from ``ground_truth``
    (``datasets.load_masks``); an image without one fails.

    With ``resume``, each input's ``results.csv`` row decides (``manifest.decide``): the same training
    parameters (method, seed, size, max_iter, min_labels, device, precision, axis, options, the input's
    SHA-256) and an existing cluster map keep the fit; the same selection parameters (foreground, target,
    point, selfseg version) and existing mask and overlay skip the input (listed in ``skipped``);
    otherwise the mask is chosen again from the stored cluster map. Any other input is fitted and its
    files replaced.

    Every fit runs with ``threads`` torch threads (CPU results depend on it, not on anything else:
    neither the order, the worker count nor the process; recorded in the ``threads`` column).
    ``workers`` inputs are fitted at once, in worker processes when more than 1 (``workers.run_tasks``:
    forked on the CPU, spawned for CUDA; ``plan_workers``: ``"auto"`` takes as many as the CPU cores, the
    free memory and the inputs allow); ``workers`` x ``threads`` may not exceed the CPU cores.
    With ``backend="ray"`` each input is a Ray task instead (``workers.run_ray_tasks``: the Ray of this
    process, the cluster at ``ray_address``, or a local one; ``ray_cpus`` and ``ray_gpus`` per task, fractions
    allowed): the same files, rows, resume and failures; ``workers`` is then unused.
    ``fits`` > 1 fits that many networks to each input and keeps the mask they agree on most
    (``batched.segment_many``; recorded in the row's options).
    ``on_result`` is called with each finished input's row; ``progress`` shows a progress bar on stderr.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs share a stem, ``method``, ``workers``, ``threads``, ``batch_images`` or the selection
            arguments are invalid, or ``out_dir`` holds a ``results.csv`` that is not a results table. Nothing is written.
        KeyboardInterrupt: Ctrl-C; the worker processes (``workers`` > 1) stop at once.
    """
    engine.check_method(method)
    check_workers(workers, threads)
    check_fits(fits)
    if fits != 1:  # an option of the fit, so that resume refits when it changes
        options = options | {"fits": fits}
    batch_images = plan_batch_images(batch_images, method=method, device=device, size=size)
    look_up_option(backend, BACKENDS, name="backend")
    if not ray_cpus > 0 or not ray_gpus >= 0:
        raise ValueError(f"ray_cpus must be > 0 and ray_gpus >= 0, got {ray_cpus} and {ray_gpus}")
    truth_given = ground_truth is not None if foreground == "oracle" else None
    check_rule(foreground=foreground, target=target, point=point, oracle_crop=oracle_crop, truth=truth_given)
    paths = find_inputs(inputs, pattern=pattern, exclude=out_dir)
    _check_unique_stems(paths)
    out_dir = Path(out_dir)
    truths = datasets.load_masks(ground_truth) if foreground == "oracle" else {}
    manifest = read_manifest(out_dir / "results.csv")
    _clear_leftovers(out_dir)
    clustered_to = engine.min_labels_of(method, min_labels)  # None: Otsu, which counts no clusters
    settings = {
        "method": method, "seed": seed, "size": size, "max_iter": max_iter, "min_labels": min_labels,
        "device": device, "precision": precision, "axis": axis,
        "options": options_cell(method, options, min_labels=clustered_to),
        "foreground": "oracle+crop" if oracle_crop else foreground, "target": target,
        "point": None if point is None else f"{point[0]},{point[1]}", "version": selfseg.__version__,
    }
    fit = dict(method=method, size=size, max_iter=max_iter, min_labels=min_labels, device=device, precision=precision)
    rule = dict(foreground=foreground, target=target, point=point, oracle_crop=oracle_crop)
    batch = _Batch(
        out_dir, seed, settings, fit | options, rule, axis, resume, truths, ground_truth, manifest, on_result
    )
    with tqdm(total=len(paths), desc="segment", unit="input", file=sys.stderr, disable=not progress) as bar:
        tasks = []
        for path in paths:
            planned = batch.plan(path)
            if planned is None:
                bar.update()
            else:
                tasks.append(planned)
        if backend == "ray":
            outcomes = run_ray_tasks(
                tasks, threads=threads, address=ray_address, cpus=ray_cpus, gpus=ray_gpus, batch_images=batch_images
            )
        else:
            workers = plan_workers(workers, threads, method=method, device=device, inputs=len(tasks))
            on_start = lambda task: bar.set_postfix_str(task.path.name)  # noqa: E731
            outcomes = run_tasks(
                tasks, workers=workers, threads=threads, device=device, on_start=on_start, batch_images=batch_images
            )
        for task, (wanted, previous), outcome in outcomes:
            bar.update()
            batch.finish(task, wanted, previous, outcome)
    return batch.report
