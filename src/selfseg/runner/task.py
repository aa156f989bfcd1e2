"""One input of a batch: its seed, its output files, and ``run_tasks_together``, which reads each input once, fits
it (or chooses its mask again from the stored cluster map, where that gives what a fit would) and writes its files,
the overlay last, carrying the input's results row (``overlay_row``). Tasks are picklable, for worker processes."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfseg import io, volumes
from selfseg.batch_inputs import input_digests
from selfseg.choice import choose
from selfseg.decoding import decode_reason
from selfseg.engine import Prepared, SegmentationResult, fit_images, prepare_image
from selfseg.optional import optional_import
from selfseg.runner.manifest import RESULT_COLUMNS, UNNOTED, cell, typed
from selfseg.settings import FitSettings, MaskRule
from selfseg.visualize import overlay

__all__ = [
    "LABELS_SUFFIX",
    "MASK_SUFFIX",
    "OUTPUT_SUFFIXES",
    "OVERLAY_SUFFIX",
    "VOLUME_OUTPUT_SUFFIXES",
    "Outcome",
    "Task",
    "fingerprint",
    "image_seed",
    "output_paths",
    "overlay_row",
    "run_tasks_together",
    "slice_seed",
    "stored_labels",
    "write_outputs",
]

MASK_SUFFIX = "_mask.png"
"""Name ending of the foreground masks that ``run_batch`` writes and ``evaluate_outputs`` reads."""
LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
OUTPUT_SUFFIXES = (LABELS_SUFFIX, MASK_SUFFIX, OVERLAY_SUFFIX)
"""The files ``run_batch`` writes for each 2-D image ``<stem>``: labels, mask, overlay."""
VOLUME_OUTPUT_SUFFIXES = ("_labels.nii.gz", "_mask.nii.gz", "_overlay.nii.gz")
"""The files ``run_batch`` writes for each volume ``<stem>``: labels, mask, overlay (NIfTI)."""


def _seed_salt(seed: int) -> bytes:
    return f"{seed}\0".encode()


def _seed_of(salted: str) -> int:
    """A 31-bit seed: the first bits of a salted SHA-256 (hex)."""
    return int(salted[:8], 16) >> 1


def output_paths(out_dir: Path, stem: str, volume: bool) -> tuple[Path, Path, Path]:
    """The files of input ``stem`` in ``out_dir``: cluster map, mask, overlay (NIfTI for a volume)."""
    return tuple(out_dir / f"{stem}{suffix}" for suffix in (VOLUME_OUTPUT_SUFFIXES if volume else OUTPUT_SUFFIXES))


def image_seed(seed: int, path: str | os.PathLike) -> int:
    """Seed for one input: a 31-bit number, the first bits of SHA-256("<seed>\\0" + the input's bytes)
    (``batch_inputs.input_digest``; a folder's covers its files).

    Results then depend on neither the order of a batch, its folder layout nor the number of workers,
    and two copies of one file get the same segmentation.
    """
    return _seed_of(input_digests(path, (_seed_salt(seed),))[0])


def slice_seed(seed: int, index: int) -> int:
    """Seed for slice ``index`` of a volume fitted with ``seed`` (its ``image_seed``): a 31-bit number."""
    return int(hashlib.sha256(f"{seed}\0{index}".encode()).hexdigest()[:8], 16) >> 1


def fingerprint(path: Path, seed: int) -> tuple[str, int]:
    """(SHA-256 of the input, its ``image_seed``), from one pass over its bytes; ImageReadError if unreadable."""
    io.stat_input(path)
    try:
        digest, salted = input_digests(path, (b"", _seed_salt(seed)))
    except OSError as err:
        raise io.ImageReadError(path, f"cannot read file: {decode_reason(err)}") from None
    return digest, _seed_of(salted)


@dataclass(frozen=True)
class Task:
    """One input for ``run_tasks_together``: ``action`` is "refit" or "rechoose"; ``row``, the values of its
    results row known before it runs (settings, names, input SHA-256, and what a re-choice keeps of the former
    row)."""

    path: Path
    outputs: tuple[Path, Path, Path]  # labels, mask, overlay
    volume: bool
    action: str
    seed: int  # image_seed
    settings: FitSettings
    rule: MaskRule
    truth: Path | None  # ground-truth mask (foreground="oracle")
    axis: int | None
    row: dict


Outcome = tuple[dict, "str | io.WriteError | None"]
"""What became of a task: (its results row, None), ({}, the reason it failed), or ({}, the ``io.WriteError`` of a
disk that refuses every write (``WriteError.disk``), which stops the batch)."""


def overlay_row(outputs: tuple[Path, ...], volume: bool, path: Path, stem: str) -> dict[str, str] | None:
    """The results row (cells) that the overlay ``outputs[2]`` carries, for the input ``stem`` at ``path``, where
    all of ``outputs`` exist: the row written with these files, even when ``results.csv`` could not be. ``seconds``
    is not carried (empty). None without such files or note, or where the note is not a row of ``stem`` (another
    input's files copied, an edited note: a value that is not text, or a number that is not one); the input is
    then fitted again."""
    if not all(output.exists() for output in outputs):
        return None
    note = (volumes.read_note if volume else io.read_note)(outputs[2])
    try:
        cells = json.loads(note) if note is not None else None
    except ValueError:
        return None
    if not isinstance(cells, dict) or set(cells) != set(RESULT_COLUMNS) - set(UNNOTED):
        return None
    if cells["image"] != stem or not all(isinstance(value, str) for value in cells.values()):
        return None
    row = {name: cells.get(name, "") for name in RESULT_COLUMNS} | {"input": str(path)}
    try:
        typed(row)
    except ValueError:
        return None
    return row


@dataclass(frozen=True)
class _Loaded:
    """An input read once: its raw (D, H, W[, C]) slices, its volume (None for an image), each slice prepared."""

    slices: np.ndarray
    volume: volumes.Volume | None
    prepared: list[Prepared]


def _load(task: Task) -> _Loaded:
    """Read the input (and its ground truth) once; check and convert each slice once (``engine.prepare_image``)."""
    volume = volumes.read_volume(task.path, axis=task.axis) if task.volume else None
    slices = volume.data if volume is not None else io.read_image(task.path)[None]
    truth = None
    if task.truth is not None:
        if volume is not None:
            raise ValueError("foreground='oracle' is for 2-D images, not volumes")
        truth = io.read_mask(task.truth)
    seeds = [task.seed] if volume is None else [slice_seed(task.seed, k) for k in range(len(slices))]
    prepared = [prepare_image(pixels, task.rule, seed=seed, truth=truth) for pixels, seed in zip(slices, seeds)]
    return _Loaded(slices, volume, prepared)


def stored_labels(path: Path, volume: volumes.Volume | None) -> np.ndarray:
    """A cluster map written by ``run_tasks_together``, as int32 (D, H, W) slices (D = 1 for an image)."""
    if volume is None:
        return io.read_labels(path)[None]
    nib = optional_import("nibabel")
    try:
        data = np.asarray(nib.load(path).dataobj, dtype=np.int32)
    except Exception as err:  # nibabel raises many types
        raise io.ImageReadError(path, f"cannot read label map: {decode_reason(err)}") from None
    return np.moveaxis(data.reshape(*data.shape[:2], -1), volume.axis, 0)


class _NeedsFit(Exception):
    """The stored cluster map cannot give what a fit would: fit the input."""


def _needs_fit(count: int) -> np.ndarray:
    raise _NeedsFit


def _rechoose(task: Task, loaded: _Loaded) -> list[SegmentationResult] | None:
    """Each slice's mask chosen again from its stored cluster map, or None where that would differ from a fresh
    fit's choice (several readouts to vote among, or a retry with one more cluster) and the input must be fitted."""
    try:
        stored = stored_labels(task.outputs[0], loaded.volume)
    except io.ImageReadError:
        return None
    if stored.shape != loaded.slices.shape[:3]:
        return None
    settings, results = task.settings, []
    for labels, image in zip(stored, loaded.prepared):
        if len(settings.counts(image.pixels)) > 1:
            return None
        try:
            choice = choose([labels], image.pixels, task.rule, truth=image.truth,
                            recluster=_needs_fit if settings.reclusters else None)
        except _NeedsFit:
            return None
        results.append(SegmentationResult(
            labels, choice.mask, settings.method, image.seed, 0, 0.0, confidence=choice.confidence,
            foreground=choice.chosen,
        ))
    return results


def _failure(err: Exception) -> tuple[dict, str]:
    """The outcome of a task that raised ``err`` (a ValueError, TypeError or ``io.WriteError`` of one file): no
    fields, the reason on one line."""
    return {}, err.reason if isinstance(err, io.ImageReadError) else " ".join(str(err).split())


def _fit(tasks: list[Task], loaded: list[_Loaded], batch_images: int | None) -> list[list[SegmentationResult]]:
    """``engine.fit_images`` of every slice of ``tasks`` (they share settings and rule) in one call; one list of
    slice results per task."""
    images = [image for one in loaded for image in one.prepared]
    results = iter(fit_images(images, tasks[0].settings, tasks[0].rule, batch_images=batch_images))
    return [[next(results) for _ in one.prepared] for one in loaded]


def run_tasks_together(tasks: list[Task], batch_images: int | None = 1) -> list[Outcome]:
    """Run each task: read it, fit it (its slices and those of the other tasks to fit in one ``fit_images`` call)
    or choose its mask again, and write its files, each atomically. An input that fails does not stop the others;
    a disk that refuses a write (``io.WriteError.disk``: full, read-only) stops the writing, and that error is the
    outcome of each task not written. Outcomes in order (``Outcome``)."""
    outcomes: list = [None] * len(tasks)
    loaded: dict[int, _Loaded] = {}
    for index, task in enumerate(tasks):
        try:
            loaded[index] = _load(task)
        except (ValueError, TypeError) as err:  # io.ImageReadError is a ValueError
            outcomes[index] = _failure(err)
    done = {index: _rechoose(tasks[index], one) for index, one in loaded.items() if tasks[index].action == "rechoose"}
    to_fit = [index for index in loaded if done.get(index) is None]
    if to_fit:
        try:
            done |= dict(zip(to_fit, _fit([tasks[i] for i in to_fit], [loaded[i] for i in to_fit], batch_images)))
        except (ValueError, TypeError) as err:  # a bad input among others: each again on its own, so only it fails
            if len(to_fit) > 1:
                return [outcome or run_tasks_together([task], batch_images)[0] for task, outcome in zip(tasks, outcomes)]
            outcomes[to_fit[0]] = _failure(err)
    stopped: io.WriteError | None = None
    for index, results in done.items():
        if results is None:  # its fit failed
            continue
        try:
            if stopped is not None:
                raise stopped
            outcomes[index] = _write(tasks[index], loaded[index], results, fitted=index in to_fit), None
        except (ValueError, TypeError) as err:
            outcomes[index] = _failure(err)
        except io.WriteError as err:
            if not err.disk:  # this file only (a name too long, a folder in its place)
                outcomes[index] = _failure(err)
                continue
            stopped = err
            outcomes[index] = {}, err
    return outcomes


def _write(task: Task, loaded: _Loaded, results: list[SegmentationResult], *, fitted: bool) -> dict:
    """Write one input's outputs (the cluster map only when ``fitted``; ``write_outputs``) and return its results
    row."""
    slices, volume = loaded.slices, loaded.volume
    mask_stack = np.stack([result.mask for result in results])
    label_stack = np.stack([result.labels for result in results]) if fitted else None
    if label_stack is not None:
        label_stack = label_stack.astype(np.uint8 if label_stack.max() < 256 else np.uint16)
    row = {**task.row, **_fields(task, slices, volume, results, mask_stack, label_stack)}
    write_outputs(task.outputs, slices, volume, label_stack, mask_stack, row)
    return row


def write_outputs(outputs: tuple[Path, Path, Path], slices: np.ndarray, volume: volumes.Volume | None,
                  labels: np.ndarray | None, mask: np.ndarray, row: dict) -> None:
    """Write an input's (D, H, W) cluster map ``labels`` (skipped when None), ``mask`` and its overlay on the
    (D, H, W[, C]) ``slices`` to ``outputs`` (D = 1 for an image), each atomically: the overlay is removed first and
    written last, carrying ``row`` (``overlay_row``), so that it exists only beside the files its row describes."""
    drawn = np.stack([overlay(pixels, one) for pixels, one in zip(slices, mask)])
    note = json.dumps({name: cell(row.get(name)) for name in RESULT_COLUMNS if name not in UNNOTED})
    try:
        outputs[2].unlink(missing_ok=True)
    except OSError as err:
        raise io.WriteError(err.errno, outputs[2]) from err
    for path, array, carried in zip(outputs, (labels, mask, drawn), (None, None, note)):
        if array is None:
            continue
        if volume is None:
            io.write_image(path, array[0], note=carried)
        else:
            volumes.write_volume_like(path, array, volume, note=carried)


def _fields(task: Task, slices: np.ndarray, volume: volumes.Volume | None, results: list[SegmentationResult],
            mask_stack: np.ndarray, label_stack: np.ndarray | None) -> dict:
    """The row's measured fields: of the mask, and of the fit where ``label_stack`` is a new cluster map."""
    fields = {
        "foreground_pixels": int(mask_stack.sum()),
        "confidence": float(np.mean([result.confidence for result in results])),
        "chosen": "/".join(sorted({result.foreground for result in results})),
    }
    if label_stack is not None:
        fields.update(
            method=task.settings.method, image_seed=task.seed, iterations=sum(r.iterations for r in results),
            seconds=sum(r.seconds for r in results), n_labels=int(label_stack.max()), slices=len(slices),
            height=slices.shape[1], width=slices.shape[2], kind="image" if volume is None else volume.kind,
            threads=torch.get_num_threads(),
        )
    return fields
