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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

import selfseg
from selfseg import io
from selfseg.confidence import mask_confidence
from selfseg.metrics import dice
from selfseg.pixels import as_float_image
from selfseg.runner.manifest import EDITED
from selfseg.study import PRIORS, StudyModel, StudySettings, load_study_model, predict_mask, save_study_model, train_study
from selfseg.visualize import overlay

__all__ = ["MODEL_NAME", "STUDY_COLUMNS", "STUDY_FOLDER", "apply_study_model", "run_study_stage"]

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


def _predict(model: StudyModel, sha: str, items: list[tuple[str, Path, str]], folder: Path, stage: str,
             image_masks: Path | None, progress: bool) -> list[dict]:
    """Write the study mask and overlay of each (stem, input, input SHA-256) into ``folder``; its rows."""
    previous = {row["image"]: row for row in io.read_csv(folder / "results.csv")}
    rows = []
    for stem, path, digest in tqdm(items, desc=f"{stage}: predict", unit="image", file=sys.stderr, disable=not progress):
        old = previous.get(stem)
        files = (folder / f"{stem}_mask.png", folder / f"{stem}_overlay.png")
        if old and old["model_sha256"] == sha and old["input_sha256"] == digest and all(f.exists() for f in files):
            rows.append(old)
            continue
        raw = io.read_image(path)
        pixels = as_float_image(raw)
        mask, _ = predict_mask(model, pixels)
        io.write_image(files[0], mask)
        io.write_image(files[1], overlay(raw, mask))
        before = io.read_mask(image_masks / f"{stem}_mask.png") if image_masks is not None else None
        rows.append({name: str(value) for name, value in {
            "image": stem, "input": str(path), "stage": stage, "foreground_pixels": int(mask.sum()),
            "confidence": f"{mask_confidence(mask, pixels):.3f}",
            "image_stage_foreground_pixels": "" if before is None else int(before.sum()),
            "agreement_with_image_stage": "" if before is None else f"{dice(mask, before):.4f}",
            "model_sha256": sha, "input_sha256": digest, "version": selfseg.__version__,
        }.items()})
        io.write_csv(folder / "results.csv", STUDY_COLUMNS, ([row[c] for c in STUDY_COLUMNS] for row in rows))
    io.write_csv(folder / "results.csv", STUDY_COLUMNS, ([row[c] for c in STUDY_COLUMNS] for row in rows))
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
                      progress: bool = True) -> list[dict]:
    """The masks of the stored study model at ``model_path`` for each (stem, input, input SHA-256), written into
    ``out_dir`` (a forward pass and the prior; no per-image fit); the rows."""
    model = load_study_model(model_path, device=device)
    return _predict(model, _model_sha(model_path), items, out_dir, "study-model", None, progress)

