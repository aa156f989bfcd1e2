"""The study stage of a batch: after the per-image masks of a folder exist, one network learns the folder from
them (``selfseg.study``) and gives every image its study mask, in ``DIR/study/``.

``DIR/study/`` holds ``study_model.pt`` (the trained model), ``<stem>_mask.png`` and ``<stem>_overlay.png`` per
image and its own ``results.csv`` (``STUDY_COLUMNS``), so ``selfseg evaluate DIR/study`` scores the study masks and
the report shows both runs. The model is trained again only when the per-image masks it learnt from, or the
settings, change (``training_fingerprint``); an image's study mask is written again only when the model changed.
``apply_study_model`` gives new images the masks of a stored model (``--study-model``), without per-image fits.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

import selfseg
from selfseg import io
from selfseg.confidence import mask_confidence
from selfseg.fitting import torch_threads
from selfseg.foreground import keep_prior
from selfseg.metrics import dice
from selfseg.pixels import as_float_image
from selfseg.runner.manifest import EDITED, PacedSave
from selfseg.study import (
    PRIORS,
    StudyModel,
    StudySettings,
    load_study_model,
    predict_probability,
    save_study_model,
    train_study,
)
from selfseg.visualize import overlay

__all__ = ["MODEL_NAME", "STUDY_COLUMNS", "STUDY_FOLDER", "apply_study_model", "run_study_stage"]

_WRITERS = 2
"""Threads that write study masks while the network runs on the next image."""
STUDY_FOLDER = "study"
MODEL_NAME = "study_model.pt"
STUDY_COLUMNS = (
    "image", "input", "stage", "foreground_pixels", "confidence", "image_stage_foreground_pixels",
    "agreement_with_image_stage", "model_sha256", "input_sha256", "version",
)
"""Columns of ``DIR/study/results.csv``: ``stage`` is "study" (trained on this folder) or "study-model" (a stored
model); the ``image_stage_*`` columns keep what the per-image stage gave (``agreement``: Dice between the two
masks, empty without a per-image mask)."""


def training_fingerprint(rows: Sequence[dict], out_dir: Path, settings: StudySettings) -> str:
    """SHA-256 of what a study model learns from: each input's bytes (its ``input_sha256``), its per-image mask
    file and confidence, and the settings."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for row in sorted(rows, key=lambda r: r["image"]):
        digest.update(f"{row['image']}\0{row['input_sha256']}\0{row['confidence']}\0".encode())
        digest.update(hashlib.sha256((out_dir / f"{row['image']}_mask.png").read_bytes()).digest())
    return digest.hexdigest()


class _Loaded(Sequence):
    """Files read when an item is asked for, so that a folder's full-size images are never all in memory at once
    (``train_study`` shrinks each to the working size as it goes)."""

    def __init__(self, paths: list, read: Callable[[object], np.ndarray]) -> None:
        self.paths, self.read = paths, read

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return self.read(self.paths[index])


def _model_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train(rows: list[dict], out_dir: Path, settings: StudySettings, progress: bool) -> tuple[StudyModel, Path]:
    """The folder's study model: the stored one if it learnt from these masks with these settings, else a new one
    (saved atomically)."""
    folder = out_dir / STUDY_FOLDER
    path, fingerprint = folder / MODEL_NAME, training_fingerprint(rows, out_dir, settings)
    if path.exists():
        try:
            model = load_study_model(path, device=settings.device)
            if model.fingerprint == fingerprint:
                return model, path
        except ValueError:  # a broken or foreign file: trained again
            pass
    images = _Loaded([row["input"] for row in rows], lambda path: as_float_image(io.read_image(path)))
    masks = _Loaded([out_dir / f"{row['image']}_mask.png" for row in rows], io.read_mask)
    prior = Counter(row["chosen"] for row in rows if row["chosen"] in PRIORS).most_common(1) or Counter(
        row["target"] for row in rows if row["target"] in PRIORS).most_common(1)  # every mask mended by hand
    with tqdm(desc="study: train", unit="step", file=sys.stderr, disable=not progress) as bar:
        def step(done: int, total: int, loss: float) -> None:
            bar.total = total
            bar.update()
            bar.set_postfix_str(f"loss {loss:.3f}")

        weights = [1.0 if row["chosen"] == EDITED else float(row["confidence"]) for row in rows]  # a hand's: sure
        model = train_study(images, masks, weights,
                            prior=prior[0][0] if prior else "lesion", settings=settings, callback=step)
    model.fingerprint = fingerprint
    return model, save_study_model(model, path)


def _outputs(model: StudyModel, sha: str, item: tuple[str, Path, str], raw: np.ndarray, pixels: np.ndarray,
             probability: np.ndarray, folder: Path, stage: str, image_masks: Path | None) -> dict:
    """Keep ``probability`` within the model's prior and write the image's study mask and overlay; its row. ``raw``:
    the image as read, ``pixels``: as float."""
    stem, path, digest = item
    mask = keep_prior(probability, model.prior)
    io.write_image(folder / f"{stem}_mask.png", mask)
    io.write_image(folder / f"{stem}_overlay.png", overlay(raw, mask))
    before = io.read_mask(image_masks / f"{stem}_mask.png") if image_masks is not None else None
    return {name: str(value) for name, value in {
        "image": stem, "input": str(path), "stage": stage, "foreground_pixels": int(mask.sum()),
        "confidence": f"{mask_confidence(mask, pixels):.3f}",
        "image_stage_foreground_pixels": "" if before is None else int(before.sum()),
        "agreement_with_image_stage": "" if before is None else f"{dice(mask, before):.4f}",
        "model_sha256": sha, "input_sha256": digest, "version": selfseg.__version__,
    }.items()}


def _predict(model: StudyModel, sha: str, items: list[tuple[str, Path, str]], folder: Path, stage: str,
             image_masks: Path | None, progress: bool, on_failure: Callable[[Path, str], None] | None = None) -> list[dict]:
    """Write the study mask and overlay of each (stem, input, input SHA-256) into ``folder``; its rows. An input that
    cannot be read is passed to ``on_failure`` (path, reason) and skipped; without ``on_failure`` it raises.

    The network runs in this thread with one torch thread, one image after the other (its rounding does not depend
    on the number of cores); ``_WRITERS`` threads keep the probabilities within the prior and write the files
    meanwhile (on a CPU a second torch thread would only contend with them; docs/speed.md).
    ``results.csv`` gains each image's row once its files are on disk, in input order, and is written at most about
    once a second (``PacedSave``; a killed run's last rows are predicted again on resume)."""
    previous = {row["image"]: row for row in io.read_csv(folder / "results.csv")}
    rows: list[dict] = []
    in_flight: deque[dict | Future] = deque()
    write_rows = PacedSave(lambda: io.write_csv(folder / "results.csv", STUDY_COLUMNS,
                                                ([row[c] for c in STUDY_COLUMNS] for row in rows)))

    def settle(limit: int) -> None:
        while len(in_flight) > limit:
            done = in_flight.popleft()
            if isinstance(done, dict):  # kept from the former run
                rows.append(done)
            else:
                rows.append(done.result())
                write_rows()

    with ThreadPoolExecutor(max_workers=_WRITERS) as writer, torch_threads(1):
        try:
            for item in tqdm(items, desc=f"{stage}: predict", unit="image", file=sys.stderr, disable=not progress):
                stem, path, digest = item
                old = previous.get(stem)
                files = (folder / f"{stem}_mask.png", folder / f"{stem}_overlay.png")
                if old and old["model_sha256"] == sha and old["input_sha256"] == digest and all(f.exists() for f in files):
                    in_flight.append(old)
                    continue
                try:
                    raw = io.read_image(path)
                except io.ImageReadError as err:
                    if on_failure is None:
                        raise
                    on_failure(path, err.reason)
                    continue
                pixels = as_float_image(raw)
                probability = predict_probability(model, pixels)
                in_flight.append(writer.submit(_outputs, model, sha, item, raw, pixels, probability, folder, stage,
                                               image_masks))
                settle(_WRITERS)  # each writer busy with one image while the next runs the network
        finally:  # every image whose files were written gets its row, whatever failed; then the failure is raised
            failed = None
            while in_flight:
                try:
                    settle(len(in_flight) - 1)
                except Exception as err:  # raised below, after the others' rows
                    failed = failed or err
            try:  # the rows since the last write; the table is written even when no image was predicted
                write_rows.write_now()
            except OSError as err:
                failed = failed or err
            if failed is not None:
                raise failed
    return rows


def run_study_stage(out_dir: Path, rows: list[dict], settings: StudySettings, *, progress: bool = True) -> list[dict]:
    """Train (or reuse) the study model of ``out_dir`` on the per-image ``rows`` (2-D images, their files complete)
    and write every image's study mask into ``out_dir/study``; the study rows. ValueError without images."""
    if not rows:
        raise ValueError("the study stage needs the per-image masks of at least one 2-D image")
    model, path = _train(rows, out_dir, settings, progress)
    items = [(row["image"], Path(row["input"]), row["input_sha256"]) for row in rows]
    return _predict(model, _model_sha(path), items, out_dir / STUDY_FOLDER, "study", out_dir, progress)


def apply_study_model(model_path: Path, items: list[tuple[str, Path, str]], out_dir: Path, *, device: str = "auto",
                      progress: bool = True, on_failure: Callable[[Path, str], None] | None = None) -> list[dict]:
    """The masks of the stored study model at ``model_path`` for each (stem, input, input SHA-256), written into
    ``out_dir`` (a forward pass and the prior; no per-image fit); the rows. An unreadable input goes to
    ``on_failure`` (path, reason) and the others go on; without ``on_failure`` it raises ``io.ImageReadError``."""
    model = load_study_model(model_path, device=device)
    return _predict(model, _model_sha(model_path), items, out_dir, "study-model", None, progress, on_failure)

