"""One input of a batch: its seed, its output files, and ``run_task``, which fits it (or chooses its mask
again from the stored cluster map) and writes its files. Tasks are picklable, for worker processes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from selfseg import engine, io, volumes
from selfseg.batch_inputs import input_digest
from selfseg.batched import segment_many
from selfseg.confidence import mask_confidence
from selfseg.decoding import decode_reason
from selfseg.foreground import choose_mask
from selfseg.optional import optional_import
from selfseg.visualize import overlay

__all__ = [
    "LABELS_SUFFIX",
    "MASK_SUFFIX",
    "OUTPUT_SUFFIXES",
    "OVERLAY_SUFFIX",
    "VOLUME_OUTPUT_SUFFIXES",
    "Task",
    "fingerprint",
    "image_seed",
    "run_task",
    "run_tasks_together",
    "slice_seed",
]

MASK_SUFFIX = "_mask.png"
"""Name ending of the foreground masks that ``run_batch`` writes and ``evaluate_outputs`` reads."""
LABELS_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.png"
OUTPUT_SUFFIXES = (LABELS_SUFFIX, MASK_SUFFIX, OVERLAY_SUFFIX)
"""The files ``run_batch`` writes for each 2-D image ``<stem>``: labels, mask, overlay."""
VOLUME_OUTPUT_SUFFIXES = ("_labels.nii.gz", "_mask.nii.gz", "_overlay.nii.gz")
"""The files ``run_batch`` writes for each volume ``<stem>``: labels, mask, overlay (NIfTI)."""


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


def fingerprint(path: Path, seed: int) -> tuple[str, int]:
    """(SHA-256 of the input, its ``image_seed``); ImageReadError if it cannot be read."""
    io.stat_input(path)
    try:
        digest = input_digest(path)
        return digest, image_seed(seed, path)
    except OSError as err:
        raise io.ImageReadError(path, f"cannot read file: {decode_reason(err)}") from None


@dataclass(frozen=True)
class Task:
    """One input for ``run_task``."""

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
    """A cluster map written by ``run_task``, as int32 (D, H, W) slices (D = 1 for an image)."""
    if volume is None:
        return io.read_labels(path)[None]
    nib = optional_import("nibabel")
    try:
        data = np.asarray(nib.load(path).dataobj, dtype=np.int32)
    except Exception as err:  # nibabel raises many types
        raise io.ImageReadError(path, f"cannot read label map: {decode_reason(err)}") from None
    return np.moveaxis(data.reshape(*data.shape[:2], -1), volume.axis, 0)


def _read(task: Task) -> tuple[np.ndarray, volumes.Volume | None, np.ndarray | None]:
    """The input's (D, H, W[, C]) slices (D = 1 for an image), its volume or None, and its ground-truth mask."""
    volume = volumes.read_volume(task.path, axis=task.axis) if task.volume else None
    slices = volume.data if volume is not None else io.read_image(task.path)[None]
    truth = None
    if task.truth is not None:
        if volume is not None:
            raise ValueError("foreground='oracle' is for 2-D images, not volumes")
        truth = io.read_mask(task.truth)
    return slices, volume, truth


def _seeds(task: Task, count: int) -> list[int]:
    """The seeds of the ``count`` slices of a task: its ``image_seed``, or a volume's ``slice_seed`` per slice."""
    return [task.seed] if not task.volume else [slice_seed(task.seed, k) for k in range(count)]


def _fit_all(tasks: list[Task], reads: list[tuple], batch_images: int | None) -> list[list[engine.SegmentationResult]]:
    """``batched.segment_many`` of every slice of the refit tasks (they share ``fit`` and ``rule``), up to
    ``batch_images`` networks at once; one list of slice results per task (empty for the others)."""
    refits = [(task, read) for task, read in zip(tasks, reads) if task.refit]
    if not refits:
        return [[] for _ in tasks]
    images = [pixels for _, (slices, _, _) in refits for pixels in slices]
    seeds = [seed for task, (slices, _, _) in refits for seed in _seeds(task, len(slices))]
    truths = [truth for _, (slices, _, truth) in refits for _ in slices]
    results = iter(segment_many(images, seed=seeds, truth=truths, batch_images=batch_images, **tasks[0].fit, **tasks[0].rule))
    return [[next(results) for _ in read[0]] if task.refit else [] for task, read in zip(tasks, reads)]


def _slice_results(task: Task, slices: np.ndarray, volume: volumes.Volume | None, truth: np.ndarray | None,
                   fitted: list[engine.SegmentationResult]) -> dict:
    """Per slice: ``labels`` (refits only), ``masks``, ``chosen``, ``confidence``; summed ``iterations`` and
    ``seconds``: from the slices' fits, or for a kept fit the mask chosen again from the stored cluster map."""
    done: dict = {"labels": [], "masks": [], "chosen": [], "confidence": [], "iterations": 0, "seconds": 0.0}
    if task.refit:
        for result in fitted:
            done["labels"].append(result.labels)
            done["masks"].append(result.mask)
            done["chosen"].append(result.foreground)
            done["confidence"].append(result.confidence)
            done["iterations"] += result.iterations
            done["seconds"] += result.seconds
        return done
    stored = _stored_labels(task.outputs[0], volume)
    for k, pixels in enumerate(slices):
        pixels = engine.as_float_image(pixels)
        mask, how = choose_mask(stored[k], pixels, truth=truth, **task.rule)
        done["masks"].append(mask)
        done["chosen"].append(how)
        done["confidence"].append(mask_confidence(mask, pixels))
    return done


def _failure(err: Exception) -> tuple[dict, str]:
    """The outcome of a task that raised ``err`` (a ValueError or TypeError): no fields, the reason on one line."""
    return {}, err.reason if isinstance(err, io.ImageReadError) else " ".join(str(err).split())


def run_tasks_together(tasks: list[Task], batch_images: int | None = 1) -> list[tuple[dict, str | None]]:
    """``run_task`` of each task, the slices of all of them fitted by one ``batched.segment_many`` call (the
    tasks share ``fit`` and ``rule``); an input that fails does not stop the others. Outcomes in order."""
    reads: list = []
    outcomes: list = [None] * len(tasks)
    for index, task in enumerate(tasks):
        try:
            reads.append(_read(task))
        except (ValueError, TypeError) as err:  # io.ImageReadError is a ValueError
            outcomes[index] = _failure(err)
    ready = [index for index, outcome in enumerate(outcomes) if outcome is None]
    try:
        fitted = _fit_all([tasks[index] for index in ready], reads, batch_images)
    except (ValueError, TypeError) as err:  # a bad input: with others, each again on its own, so that only it fails
        if len(ready) == 1:
            outcomes[ready[0]] = _failure(err)
            return outcomes
        return [outcome or run_tasks_together([task], batch_images)[0] for task, outcome in zip(tasks, outcomes)]
    for index, read, fits in zip(ready, reads, fitted):
        try:
            outcomes[index] = _write(tasks[index], *read, fits), None
        except (ValueError, TypeError) as err:
            outcomes[index] = _failure(err)
    return outcomes


def run_task(task: Task) -> tuple[dict, str | None]:
    """Fit one input (or choose its mask again) and write its outputs, each atomically. Returns (the row's
    measured fields, None) or ({}, the reason it failed)."""
    return run_tasks_together([task])[0]


def _write(task: Task, slices: np.ndarray, volume: volumes.Volume | None, truth: np.ndarray | None,
           fitted: list[engine.SegmentationResult]) -> dict:
    """Write one input's outputs from its slice results, each atomically; the row's measured fields."""
    done = _slice_results(task, slices, volume, truth, fitted)
    mask_stack = np.stack(done["masks"])
    drawn = np.stack([overlay(pixels, mask) for pixels, mask in zip(slices, done["masks"])])
    label_stack = np.stack(done["labels"]) if task.refit else None
    if label_stack is not None:
        label_stack = label_stack.astype(np.uint8 if label_stack.max() < 256 else np.uint16)
    for path, array in zip(task.outputs, (label_stack, mask_stack, drawn)):
        if array is None:
            continue
        if volume is None:
            io.write_image(path, array[0])
        else:
            volumes.write_volume_like(path, array, volume)
    fields = {
        "foreground_pixels": int(mask_stack.sum()),
        "confidence": float(np.mean(done["confidence"])),
        "chosen": "/".join(sorted(set(done["chosen"]))),
    }
    if task.refit:
        fields.update(
            method=task.fit["method"], image_seed=task.seed, iterations=done["iterations"], seconds=done["seconds"],
            n_labels=int(label_stack.max()), slices=len(slices), height=slices.shape[1], width=slices.shape[2],
            kind="image" if volume is None else volume.kind, threads=torch.get_num_threads(),
        )
    return fields
