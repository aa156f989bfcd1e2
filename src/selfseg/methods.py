"""The method table: each network's model, objective and optimiser defaults, and the classical baselines.

A method is a key of ``METHODS`` (a network fitted per image) or of ``BASELINES`` (a clustering without a
network). ``FitSettings`` (``selfseg.settings``) checks a method and its options against this table.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import nn

from selfseg.baselines import kmeans_maps, otsu_labels
from selfseg.checks import look_up_option
from selfseg.losses import DFCObjective, MSFormerObjective, S3NetObjective
from selfseg.models import DFC, MSFormer, S3Net

__all__ = [
    "ALL_METHODS",
    "BASELINES",
    "BASELINE_CLUSTERS",
    "DEFAULT_SIZE",
    "METHODS",
    "PRECISIONS",
    "MethodSpec",
    "check_method",
    "min_labels_of",
    "split_options",
]


@dataclass(frozen=True)
class MethodSpec:
    """How to fit one method: model and objective factories and the optimiser defaults.

    ``model(in_channels=..., **options)`` builds a module with ``predict(image) -> scores``
    ((1, C, H, W) -> (1, K, H, W)); ``objective(**options)`` builds a module with ``draw(h, w, generator)``
    (its random transform, or None) and ``terms(model, image, drawn) -> (scores, {name: weighted loss term})``.
    """

    model: Callable[..., nn.Module]
    objective: Callable[..., nn.Module]
    lr: float
    max_iter: int = 50
    min_labels: int = 3
    min_iter: int = 5


METHODS: dict[str, MethodSpec] = {
    "s3net": MethodSpec(model=functools.partial(S3Net, n_channels=32), objective=S3NetObjective, lr=0.2),
    "msformer": MethodSpec(
        model=functools.partial(MSFormer, n_channels=32, embed_dim=32), objective=MSFormerObjective, lr=0.1
    ),
    "dfc": MethodSpec(model=functools.partial(DFC, n_channels=32), objective=DFCObjective, lr=0.1, max_iter=1000),
}
"""The networks at selfseg's default widths: 32 channels, narrower than the papers' code (S3-Net 64, MS-Former and
DFC 100; ``n_channels=64`` etc. restores them), because at the default working size the narrow networks fit many
times faster at about the same Dice (docs/speed.md, docs/results.md)."""

DEFAULT_SIZE = 96
"""Default working size (longer side, px) of the networks: the masks are smooth, and the readout and the
foreground rule work at the native resolution (docs/speed.md)."""

BASELINES: dict[str, Callable[[np.ndarray, Sequence[int]], list[np.ndarray]]] = {
    "otsu": lambda pixels, counts: [otsu_labels(pixels) for _ in counts],
    "kmeans": lambda pixels, counts: kmeans_maps(pixels, counts),
}
"""Methods without a network: (H, W, C) image, numbers of clusters -> one (H, W) cluster map per number (no seed:
both are deterministic)."""

BASELINE_CLUSTERS = {"otsu": None, "kmeans": 3}
"""The ``min_labels`` of each baseline when none is given: k-means' number of clusters, read out like the networks'
scores (``readout.default_readout_clusters``); None for Otsu, which always splits in two and ignores it."""

ALL_METHODS: tuple[str, ...] = (*METHODS, *BASELINES)

PRECISIONS = ("float32", "bfloat16")
"""Number formats of the network's forward pass (bfloat16 under ``torch.autocast``)."""


def check_method(method: str) -> str:
    """``method`` if it is one of ``ALL_METHODS``; else ValueError naming them."""
    return look_up_option(method, ALL_METHODS, name="method")


def min_labels_of(method: str, min_labels: int | None = None) -> int | None:
    """The ``min_labels`` ``method`` clusters to: ``min_labels`` if given, else a network's ``MethodSpec.min_labels``
    or a baseline's ``BASELINE_CLUSTERS``; None for Otsu, which always splits in two and ignores it."""
    default = METHODS[method].min_labels if method in METHODS else BASELINE_CLUSTERS[check_method(method)]
    return None if default is None else min_labels or default


def split_options(method: str, options: Mapping[str, object]) -> tuple[dict, dict]:
    """``options`` split into the model's and the objective's keyword arguments; TypeError naming the accepted
    ones for any other name (a baseline accepts none)."""
    if method in BASELINES:
        model_keys: set[str] = set()
        objective_keys: set[str] = set()
    else:
        spec = METHODS[method]
        model_keys = set(inspect.signature(spec.model).parameters) - {"in_channels"}
        objective_keys = set(inspect.signature(spec.objective).parameters)
    unknown = set(options) - model_keys - objective_keys
    if unknown:
        accepted = f"accepted: {', '.join(sorted(model_keys | objective_keys))}" if method in METHODS else f"{method} takes none"
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; {accepted}")
    return (
        {k: v for k, v in options.items() if k in model_keys},
        {k: v for k, v in options.items() if k in objective_keys},
    )
