"""selfseg: label-free, per-image medical image segmentation.

``segment`` fits a fresh network to one image and returns its clusters and foreground mask;
``segment_many`` does so for many arrays, fitting several networks in one pass; ``run_batch`` for many
files into an output folder. Names are imported on first use, so
``import selfseg`` does not load torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selfseg.batched import segment_many
    from selfseg.engine import SegmentationResult, segment
    from selfseg.foreground import select_foreground
    from selfseg.io import ImageReadError, read_image
    from selfseg.runner import run_batch

try:
    __version__ = version("selfseg")
except PackageNotFoundError:
    __version__ = "0+unknown"

_EXPORTS = {
    "segment": "selfseg.engine",
    "segment_many": "selfseg.batched",
    "SegmentationResult": "selfseg.engine",
    "ImageReadError": "selfseg.io",
    "read_image": "selfseg.io",
    "select_foreground": "selfseg.foreground",
    "run_batch": "selfseg.runner",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'selfseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
