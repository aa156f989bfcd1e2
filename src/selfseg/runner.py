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

import csv
import ctypes
import hashlib
import inspect
import json
import multiprocessing
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import selfseg
from selfseg import datasets, engine, io, volumes
from selfseg.batch_inputs import find_inputs, input_digest, input_stem
from selfseg.foreground import check_rule, choose_mask
from selfseg.metrics import METRIC_NAMES, evaluate
from selfseg.visualize import overlay

__all__ = [
    "LABELS_SUFFIX",
    "MASK_SUFFIX",
    "OUTPUT_SUFFIXES",
    "OVERLAY_SUFFIX",
    "RESULT_COLUMNS",
    "VOLUME_OUTPUT_SUFFIXES",
    "BatchReport",
    "evaluate_outputs",
    "image_seed",
    "run_batch",
    "slice_seed",
    "summarize",
    "summary_line",
    "summary_table",
]

MASK_SUFFIX = "_mask.png"
"""Name ending of the foreground masks that ``run_batch`` writes and ``evaluate_outputs`` reads."""
LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
OUTPUT_SUFFIXES = (LABELS_SUFFIX, MASK_SUFFIX, OVERLAY_SUFFIX)
"""The files ``run_batch`` writes for each 2-D image ``<stem>``: labels, mask, overlay."""
VOLUME_OUTPUT_SUFFIXES = ("_labels.nii.gz", "_mask.nii.gz", "_overlay.nii.gz")
"""The files ``run_batch`` writes for each volume ``<stem>``: labels, mask, overlay (NIfTI)."""

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
"""Columns of ``results.csv``: input stem, what ran and what came out, then the parameters (an empty
cell means the default: the method's for ``max_iter`` and ``min_labels``, native resolution for
``size``, the format's slice axis for ``axis``; ``options`` are the extra model and objective options
as JSON). ``image_seed`` is the seed the input was fitted with (``image_seed()``); ``foreground``,
``target`` and ``point`` say how the mask was asked for and ``chosen`` what chose it
(``foreground.choose_mask``); ``input_sha256`` fingerprints the input's bytes; ``version`` is the
selfseg version that wrote the row. ``kind`` is ``image``, or the volume's ``dicom``, ``nifti`` or
``tiff``. ``threads`` is the number of torch threads the fit ran with (CPU results depend on it: torch's
reductions round differently with another thread count). A volume's row sums ``iterations``,
``seconds`` and ``foreground_pixels`` (voxels) over its ``slices``, gives the largest ``n_labels`` of
a slice, a slice's ``height`` and ``width``, and the distinct ``chosen`` values joined by ``/``."""

_TRAINING = (
    "method", "seed", "size", "max_iter", "min_labels", "device", "precision", "axis", "options", "input_sha256"
)
_SEGMENT_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(engine.segment).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}
"""``engine.segment``'s own keyword defaults: an option passed at its default is left out of ``options``,
so that outputs written without it still resume."""
_FORMER_DEFAULTS = {"readout": "argmax", "readout_clusters": "min_labels"}
"""``engine.segment`` options whose default changed, with what a row that does not name them was made with
(up to selfseg 0.4 the readout was "argmax" by default, and ``--readout kmeans`` took ``min_labels``
clusters): a network's row always names them (``readout_clusters`` only with the kmeans readout; "auto"
for the default, ``engine.default_readout_clusters``)."""

_NEW_DEFAULTS = {"readout": _SEGMENT_DEFAULTS["readout"], "readout_clusters": "auto"}

_SELECTION = ("foreground", "target", "point", "version")
"""``results.csv`` columns that must match for ``resume`` to keep an input's cluster map, and its mask."""
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp")  # io.atomic_path's names, left by a killed run


def image_seed(seed: int, path: str | os.PathLike) -> int:
    """Seed for one input: a 31-bit number, the first bits of SHA-256("<seed>\\0" + the input's bytes)
    (``batch_inputs.input_digest``; a folder's covers its files).

    Results then depend on neither the order of a batch, its folder layout nor the number of workers,
    and two copies of one file get the same segmentation.
    """
    return int(input_digest(path, salt=f"{seed}\0".encode())[:8], 16) >> 1


def slice_seed(seed: int, index: int) -> int:
    """Seed for slice ``index`` of a volume fitted with ``seed`` (its ``image_seed``): a 31-bit number."""
    return int(hashlib.sha256(f"{seed}\0{index}".encode()).hexdigest()[:8], 16) >> 1


@dataclass
class BatchReport:
    """What ``run_batch`` did: one row (keys ``RESULT_COLUMNS``) per finished input of this batch,
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
        stem = input_stem(path)
        if stem in first:
            raise ValueError(
                f"inputs {first[stem]} and {path} have the same name {stem!r}; "
                "their outputs would overwrite each other"
            )
        first[stem] = path


def _options_cell(method: str, options: dict, *, missing: dict, min_labels: int | None) -> str:
    """The ``options`` cell of a row of ``method`` fitted with ``options`` (``min_labels``: the network's, its
    spec's default filled in; None for a baseline).

    Options at ``engine.segment``'s default are left out, except ``_FORMER_DEFAULTS``, which a network's
    row always names (``missing`` gives their value where ``options`` lacks them: ``_NEW_DEFAULTS`` for a
    new run, ``_FORMER_DEFAULTS`` for a stored row); ``readout_clusters`` is "auto" for the default, else a
    number or a list of them, and is left out with the argmax readout, which has no clusters to count; baselines
    ignore the readout, so theirs never name it.
    """
    options = dict(options)
    if method in engine.BASELINES:
        options.pop("readout", None)
        options.pop("readout_clusters", None)
    else:
        options = {name: missing[name] for name in _FORMER_DEFAULTS} | options
        if options["readout"] == "argmax":
            del options["readout_clusters"]
        elif options["readout_clusters"] is None:
            options["readout_clusters"] = "auto"
        elif options["readout_clusters"] == "min_labels":
            options["readout_clusters"] = min_labels
        elif isinstance(options["readout_clusters"], (list, tuple)) and len(options["readout_clusters"]) == 1:
            options["readout_clusters"] = options["readout_clusters"][0]
    kept = {
        name: value
        for name, value in options.items()
        if name in _FORMER_DEFAULTS or name not in _SEGMENT_DEFAULTS or value != _SEGMENT_DEFAULTS[name]
    }
    return json.dumps(kept, sort_keys=True, default=str) if kept else ""


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


def _resolve_counts(count: object, image: np.ndarray, min_labels: int) -> tuple[int, ...]:
    """The cluster counts a ``readout_clusters`` cell value stands for on ``image``. ValueError if none."""
    if count == "auto":
        return engine.default_readout_clusters(image, min_labels)
    if isinstance(count, str) or count is None:
        raise ValueError(f"not a cluster count: {count!r}")
    return engine.readout_counts(count)


def _before_widths(version: str) -> bool:
    """Whether a row of selfseg ``version`` fitted a network at the papers' widths (64 or 100 channels, before
    0.9 made 32 the default): such rows are fitted again, whatever their ``options`` cell says."""
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:  # an edited cell
        return True
    return (major, minor) < (0, 9)


def _typed(cells: list[str]) -> dict:
    """A ``results.csv`` row (cells) back as a row dict with numbers where ``summary_line`` needs them."""
    row: dict = dict(zip(RESULT_COLUMNS, cells))
    for name in ("image_seed", "iterations", "n_labels", "foreground_pixels", "height", "width"):
        row[name] = int(row[name])
    # rows of 0.2.0 runs before these columns existed: 2-D images, thread count not recorded
    row["slices"] = int(row["slices"] or 1)
    row["threads"] = int(row["threads"]) if row["threads"] else None
    row["seconds"] = float(row["seconds"])
    return row


@dataclass(frozen=True)
class _Task:
    """One input for ``_run_task`` (picklable, for worker processes)."""

    path: Path
    outputs: tuple[Path, Path, Path]  # labels, mask, overlay
    volume: bool
    refit: bool
    seed: int  # image_seed
    fit: dict  # engine.segment's training arguments and options
    rule: dict  # foreground, target, point, oracle_crop
    truth: Path | None  # ground-truth mask (foreground="oracle")
    axis: int | None


def _stored_labels(path: Path, volume: volumes.Volume | None) -> np.ndarray:
    """A cluster map written by ``_run_task``, as int32 (D, H, W) slices (D = 1 for an image)."""
    if volume is None:
        return io.read_labels(path)[None]
    nib = volumes.optional_import("nibabel")
    try:
        data = np.asarray(nib.load(path).dataobj, dtype=np.int32)
    except Exception as err:  # nibabel raises many types
        raise io.ImageReadError(path, f"cannot read label map: {io._decode_reason(err)}") from None
    return np.moveaxis(data.reshape(*data.shape[:2], -1), volume.axis, 0)


def _run_task(task: _Task) -> tuple[dict, str | None]:
    """Read one input, fit it (or choose its mask again from the stored cluster map) slice by slice and
    write its outputs, each atomically. Returns (the row's measured fields, None) or ({}, the reason it failed)."""
    try:
        volume = volumes.read_volume(task.path, axis=task.axis) if task.volume else None
        slices = volume.data if volume is not None else io.read_image(task.path)[None]
        truth = None
        if task.truth is not None:
            if volume is not None:
                raise ValueError("foreground='oracle' is for 2-D images, not volumes")
            truth = io.read_mask(task.truth)
        stored = None if task.refit else _stored_labels(task.outputs[0], volume)
        labels, masks, chosen, iterations, seconds = [], [], [], 0, 0.0
        for k, pixels in enumerate(slices):
            if task.refit:
                seed = task.seed if volume is None else slice_seed(task.seed, k)
                result = engine.segment(pixels, seed=seed, truth=truth, **task.fit, **task.rule)
                labels.append(result.labels)
                mask, how = result.mask, result.foreground
                iterations, seconds = iterations + result.iterations, seconds + result.seconds
            else:
                mask, how = choose_mask(stored[k], engine.as_float_image(pixels), truth=truth, **task.rule)
            masks.append(mask)
            chosen.append(how)
    except (ValueError, TypeError) as err:  # io.ImageReadError is a ValueError
        return {}, err.reason if isinstance(err, io.ImageReadError) else " ".join(str(err).split())
    mask_stack = np.stack(masks)
    drawn = np.stack([overlay(pixels, mask) for pixels, mask in zip(slices, masks)])
    label_stack = np.stack(labels) if task.refit else None
    if label_stack is not None:
        label_stack = label_stack.astype(np.uint8 if label_stack.max() < 256 else np.uint16)
    for path, array in zip(task.outputs, (label_stack, mask_stack, drawn)):
        if array is None:
            continue
        if volume is None:
            io.write_image(path, array[0])
        else:
            volumes.write_volume_like(path, array, volume)
    fields = {"foreground_pixels": int(mask_stack.sum()), "chosen": "/".join(sorted(set(chosen)))}
    if task.refit:
        fields.update(
            method=task.fit["method"], image_seed=task.seed, iterations=iterations, seconds=seconds,
            n_labels=int(label_stack.max()), slices=len(slices), height=slices.shape[1], width=slices.shape[2],
            kind="image" if volume is None else volume.kind, threads=torch.get_num_threads(),
        )
    return fields, None


WORKER_MEMORY_GIB: dict[str, float] = {"s3net": 1.0, "msformer": 1.0, "dfc": 0.5, "otsu": 0.5, "kmeans": 0.5}
"""Peak resident memory of a process fitting one input at the default working size and widths, per method
(0.4-0.65 GiB measured on 512-px dermoscopy photographs, rounded up; docs/speed.md): ``plan_workers``
budgets with it."""


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one, e.g. a cluster job's share)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def available_memory_gib() -> float | None:
    """Memory available to new processes (``MemAvailable`` of /proc/meminfo), in GiB; None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def check_workers(workers: int | str, threads: int) -> None:
    """ValueError unless ``workers`` is ``"auto"`` or >= 1, ``threads`` >= 1 and ``workers`` x ``threads``
    fits ``available_cores()``."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    if workers == "auto":
        return
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be 'auto' or at least 1, got {workers!r}")
    if workers * threads > available_cores():
        raise ValueError(
            f"{workers} workers x {threads} threads = {workers * threads} exceeds the {available_cores()} CPU cores"
        )


def plan_workers(workers: int | str, threads: int, *, method: str, device: str, inputs: int) -> int:
    """The worker processes to fit ``inputs`` inputs with: ``workers`` itself (``check_workers``), or for
    ``"auto"`` the most that ``available_cores() // threads``, the available memory
    (``WORKER_MEMORY_GIB[method]`` each) and ``inputs`` allow, at least 1; 1 on a CUDA device."""
    check_workers(workers, threads)
    if workers != "auto":
        return workers
    if engine.resolve_device(device).type == "cuda":
        return 1
    memory = available_memory_gib()
    by_memory = inputs if memory is None else int(memory // WORKER_MEMORY_GIB[method])
    return max(1, min(available_cores() // threads, by_memory, inputs))


def _init_worker(threads: int, parent: int) -> None:
    """Worker process start: ``threads`` torch threads, so that workers x threads fits the cores. Ctrl-C
    ends a worker at once: its files are written atomically, so only complete ones exist, and the main
    process records nothing more. So does the end of the main process ``parent``, even by SIGKILL."""
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))
    _end_with(parent)


def _end_with(parent: int) -> None:
    """Have the OS kill this process when process ``parent`` ends (Linux ``PR_SET_PDEATHSIG``; a no-op
    elsewhere). A forked worker holds copies of the pipes it waits on, so it would never see them close."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the call
        os._exit(1)


def _start_method(device: str) -> str:
    """How worker processes start: forked on the CPU, so that they inherit the imported libraries
    (importing torch costs each spawned worker about 3 s); spawned for CUDA, which cannot be forked."""
    cpu = engine.resolve_device(device).type == "cpu"
    return "fork" if cpu and "fork" in multiprocessing.get_all_start_methods() else "spawn"


def _fingerprint(path: Path, seed: int) -> tuple[str, int]:
    """(SHA-256 of the input, its ``image_seed``); ImageReadError if it cannot be read."""
    io.stat_input(path)
    try:
        digest = input_digest(path)
        return digest, image_seed(seed, path)
    except OSError as err:
        raise io.ImageReadError(path, f"cannot read file: {io._decode_reason(err)}") from None


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
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    **options,
) -> BatchReport:
    """Segment every image and volume of ``inputs`` into ``out_dir``.

    ``inputs`` are files, folders (searched recursively for names matching ``pattern``, ``out_dir``
    left out) and ``@list`` files: ``batch_inputs.find_inputs``. Volumes are read with
    ``volumes.read_volume(path, axis=axis)`` (None: the format's default axis) and fitted slice by
    slice, slice k with
    ``slice_seed(image_seed(seed, path), k)``; 2-D images with ``image_seed(seed, path)``.

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

    With ``resume``, an input whose ``results.csv`` row has the same training parameters (method,
    seed, size, max_iter, min_labels, device, precision, axis, options (``_options_cell``: a row of
    selfseg 0.4 or older that names no readout was read out by argmax, and one that names the kmeans
    readout but no clusters used ``min_labels``; "auto" clusters match the number they stand for on a
    2-D image, ``_same_clusters``) and the input's SHA-256) and whose cluster map exists is not fitted
    again: if the selection parameters (foreground, target, point, selfseg version) also match and its
    mask and overlay exist it is skipped (listed in ``skipped``), otherwise its mask is chosen again from
    the stored cluster map. Any other input is fitted and its files replaced.

    Every fit runs with ``threads`` torch threads (CPU results depend on it, not on anything else:
    neither the order, the worker count nor the process; recorded in the ``threads`` column).
    ``workers`` inputs are fitted at once, in worker processes when more than 1 (forked on the CPU,
    spawned for CUDA; each ends with the main process)
    (``plan_workers``: ``"auto"`` takes as many as the CPU cores, the free memory and the inputs
    allow); ``workers`` x ``threads`` may not exceed the CPU cores.
    ``on_result`` is called with each finished input's row; ``progress`` shows a progress bar on stderr.

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: two inputs share a stem, ``method``, ``workers``, ``threads`` or the selection
            arguments are invalid, or ``out_dir`` holds a ``results.csv`` that is not a results table. Nothing is written.
        KeyboardInterrupt: Ctrl-C; the worker processes (``workers`` > 1) stop at once.
    """
    paths = find_inputs(inputs, pattern=pattern, exclude=out_dir)
    _check_unique_stems(paths)
    if method not in engine.ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(engine.ALL_METHODS)}")
    check_workers(workers, threads)
    check_rule(foreground=foreground, target=target, point=point, oracle_crop=oracle_crop, truth=ground_truth is not None if foreground == "oracle" else None)
    out_dir = Path(out_dir)
    results_csv, failures_csv = out_dir / "results.csv", out_dir / "failures.csv"
    truths = datasets.load_masks(ground_truth) if foreground == "oracle" else {}
    table = _read_results(results_csv)
    failures_csv.unlink(missing_ok=True)
    if out_dir.is_dir():
        for stale in out_dir.iterdir():
            if _TEMPORARY.match(stale.name):
                stale.unlink(missing_ok=True)
    report = BatchReport()
    network_labels = None if method in engine.BASELINES else min_labels or engine.METHODS[method].min_labels
    settings = {
        "method": method, "seed": seed, "size": size, "max_iter": max_iter, "min_labels": min_labels,
        "device": device, "precision": precision, "axis": axis,
        "options": _options_cell(method, options, missing=_NEW_DEFAULTS, min_labels=network_labels),
        "foreground": "oracle+crop" if oracle_crop else foreground, "target": target,
        "point": None if point is None else f"{point[0]},{point[1]}", "version": selfseg.__version__,
    }
    fit = dict(method=method, size=size, max_iter=max_iter, min_labels=min_labels, device=device, precision=precision)
    fit.update(options)
    rule = dict(foreground=foreground, target=target, point=point, oracle_crop=oracle_crop)

    def fail(path: Path, reason: str) -> None:
        tqdm.write(f"error: {path}: {reason}", file=sys.stderr)
        report.failures.append((str(path), reason))
        io.write_csv(failures_csv, ("image", "reason"), report.failures)

    tasks: list[tuple[_Task, dict, list[str] | None]] = []
    with tqdm(total=len(paths), desc="segment", unit="input", file=sys.stderr, disable=not progress) as bar:
        for path in paths:
            stem, volume = input_stem(path), volumes.is_volume(path)
            outputs = tuple(out_dir / f"{stem}{s}" for s in (VOLUME_OUTPUT_SUFFIXES if volume else OUTPUT_SUFFIXES))
            try:
                digest, fitted_seed = _fingerprint(path, seed)
                if foreground == "oracle" and stem not in truths:
                    raise ValueError(f"no ground-truth mask in {ground_truth}")
            except ValueError as err:
                fail(path, err.reason if isinstance(err, io.ImageReadError) else str(err))
                bar.update()
                continue
            wanted = {n: _cell(v) for n, v in settings.items()} | {"input_sha256": digest}
            wanted["axis"] = wanted["axis"] if volume else ""
            previous = table.get(stem) if resume else None
            if previous is not None and network_labels and _before_widths(previous[RESULT_COLUMNS.index("version")]):
                previous = None
            if previous is not None:
                previous, column = list(previous), RESULT_COLUMNS.index("options")
                try:
                    stored = json.loads(previous[column]) if previous[column] else {}
                except ValueError:  # an edited cell: it matches nothing, the input is fitted again
                    stored = None
                if isinstance(stored, dict):
                    previous[column] = _options_cell(
                        method, stored, missing=_FORMER_DEFAULTS, min_labels=network_labels
                    )
                if network_labels and not volume and _same_clusters(
                    previous[column], wanted["options"], path, network_labels
                ):
                    previous[column] = wanted["options"]

            def matches(names: tuple[str, ...], files: tuple[Path, ...]) -> bool:
                same = all(previous[RESULT_COLUMNS.index(n)] == wanted[n] for n in names)
                return same and all(f.exists() for f in files)

            refit = previous is None or not matches(_TRAINING, outputs[:1])
            if not refit and matches(_SELECTION, outputs[1:]):
                report.skipped.append(stem)
                bar.update()
                continue
            task = _Task(
                path, outputs, volume, refit, fitted_seed, fit, rule, truths.get(stem), axis if volume else None
            )
            tasks.append((task, wanted, previous))

        def finish(task: _Task, wanted: dict, previous: list[str] | None, outcome: tuple[dict, str | None]) -> None:
            fields, reason = outcome
            bar.update()
            if reason is not None:
                fail(task.path, reason)
                return
            row = {"image": input_stem(task.path), **(_typed(previous) if not task.refit else {}), **fields}
            row.update(settings, axis=wanted["axis"], input_sha256=wanted["input_sha256"])
            report.results.append(row)
            table[row["image"]] = [_cell(row[c]) for c in RESULT_COLUMNS]
            io.write_csv(results_csv, RESULT_COLUMNS, (table[k] for k in sorted(table)))
            if on_result is not None:
                on_result(row)

        workers = plan_workers(workers, threads, method=method, device=device, inputs=len(tasks))
        if workers == 1:
            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for task, wanted, previous in tasks:
                    bar.set_postfix_str(task.path.name)
                    finish(task, wanted, previous, _run_task(task))
            finally:
                torch.set_num_threads(before)
            return report
        context = multiprocessing.get_context(_start_method(device))
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(threads, os.getpid())) as pool:
            futures = {pool.submit(_run_task, task): (task, wanted, previous) for task, wanted, previous in tasks}
            try:
                for future in as_completed(futures):
                    finish(*futures[future], future.result())
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    return report


def summary_line(row: dict) -> str:
    """One console line for a ``BatchReport.results`` row, e.g.
    ``Test_1: 3 labels, 7 iterations, 9.8 s, foreground 19.6% (lesion)``, ending with what chose the
    mask (``(oracle)`` or ``(oracle+crop)`` when it was chosen with the ground truth)."""
    share = 100 * row["foreground_pixels"] / (row["slices"] * row["height"] * row["width"])
    slices = f"{row['slices']} slices, " if row["slices"] > 1 else ""
    return (
        f"{row['image']}: {slices}{row['n_labels']} labels, {row['iterations']} iterations, "
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
