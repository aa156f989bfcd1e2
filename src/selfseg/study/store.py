"""A study model on disk: ``torch.save`` of plain data only (tensors, numbers, strings), read back with
``torch.load(weights_only=True)``, which runs no code. The file holds the format name, the selfseg version, the
settings, the prior, the weights and a SHA-256 of the weights: a foreign or altered file is refused in one line."""

from __future__ import annotations

import hashlib
import io as stdio
import os
from dataclasses import asdict
from pathlib import Path

import torch

import selfseg
from selfseg import io
from selfseg.fitting import resolve_device
from selfseg.study.model import PRIORS, StudyModel, StudySettings, ensemble, member_network

__all__ = ["FORMAT", "StudyModelError", "load_study_model", "save_study_model"]

FORMAT = "selfseg-study-model/1"
"""The format name a stored study model carries."""


class StudyModelError(ValueError):
    """A file that is not a study model selfseg can use; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{path}: not a usable selfseg study model: {reason}")


def _digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the weights' names, shapes, types and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_study_model(model: StudyModel, path: str | os.PathLike) -> Path:
    """Write ``model`` to ``path`` atomically (no half file, whatever fails; an ``io.WriteError`` naming the file
    and the cause where the disk refuses it); returns the path."""
    state = {name: tensor.detach().cpu() for name, tensor in model.network.state_dict().items()}
    payload = {
        "format": FORMAT, "version": selfseg.__version__, "settings": asdict(model.settings), "prior": model.prior,
        "fingerprint": model.fingerprint, "state": state, "sha256": _digest(state),
    }
    buffer = stdio.BytesIO()
    torch.save(payload, buffer)  # writing to the file itself, torch reports a full disk without its cause
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Path(path)


def load_study_model(path: str | os.PathLike, *, device: str = "auto") -> StudyModel:
    """The study model stored at ``path``, on ``device``. StudyModelError for a file that cannot be read, was not
    written by ``save_study_model``, or whose weights were altered."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # torch raises many types for foreign or broken files
        raise StudyModelError(path, f"cannot be read safely ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise StudyModelError(path, f"no {FORMAT!r} format tag")
    state, prior = payload.get("state"), payload.get("prior")
    if not isinstance(state, dict) or _digest(state) != payload.get("sha256"):
        raise StudyModelError(path, "its weights do not match their checksum (altered file)")
    if prior not in PRIORS:
        raise StudyModelError(path, f"unknown prior {prior!r}")
    try:
        # files of selfseg 0.11 carry no "network": theirs is the U-Net; files without "members", one network
        settings = StudySettings(**{"network": "unet", "members": 1, **payload["settings"], "device": device})
        network = ensemble([member_network(settings) for _ in range(settings.members)])
        network.load_state_dict(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise StudyModelError(path, f"settings or weights do not fit this version ({type(err).__name__})") from None
    fingerprint = str(payload.get("fingerprint", ""))
    return StudyModel(network.to(resolve_device(device)).eval(), settings, prior, fingerprint)
