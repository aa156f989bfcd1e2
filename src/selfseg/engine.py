"""Per-image training engine: fit a fresh network to one image, return its clusters and foreground.

``segment`` is the public entry point (NumPy in, NumPy out). It runs four named steps: ``_prepare_input``
(the working-size tensor), ``_fit`` (SGD with the stop rule), ``readout.cluster_maps`` (the clusters at
the native size) and ``_choose`` (the mask). The method table ``METHODS`` says, for each method, how to
build the network and its objective and which optimiser settings it uses.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfseg.baselines import kmeans_labels, otsu_labels
from selfseg.checks import check_shape, look_up_option
from selfseg.confidence import mask_confidence
from selfseg.foreground import check_rule, choose_mask, implausible, most_agreed
from selfseg.io import MIN_SIDE
from selfseg.losses import DFCObjective, MSFormerObjective, S3NetObjective
from selfseg.models import DFC, MSFormer, S3Net
from selfseg.readout import READOUTS, cluster_maps, default_readout_clusters, readout_counts, relabel_by_area

__all__ = [
    "ALL_METHODS",
    "BASELINES",
    "BASELINE_CLUSTERS",
    "DEFAULT_SIZE",
    "METHODS",
    "PRECISIONS",
    "MethodSpec",
    "SegmentationResult",
    "as_float_image",
    "check_method",
    "min_labels_of",
    "segment",
]


@dataclass(frozen=True)
class MethodSpec:
    """How to fit one method: model and objective factories and the optimiser defaults.

    ``model(in_channels=..., **options)`` builds a module with ``predict(image) -> scores``
    ((1, C, H, W) -> (1, K, H, W)); ``objective(**options)`` builds a callable
    ``(model, image, generator) -> (scores, {name: weighted loss term})`` for one iteration.
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
"""The networks at selfseg's default widths: 32 channels (the papers' code: S3-Net 64, MS-Former and DFC 100;
``n_channels=64`` etc. restores them). At the default working size they fit 10 to 20 times faster than the
papers' settings at about the same mean Dice (docs/speed.md; docs/results.md, where chest X-rays lose 0.01)."""

DEFAULT_SIZE = 96
"""Default working size (longer side, px) of the networks: the masks are smooth, and the readout and the
foreground rule work at the native resolution (docs/speed.md measures 96 to 256; docs/results.md the
quality at 96 and 128)."""

BASELINES: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "otsu": lambda pixels, n_clusters, seed: otsu_labels(pixels),
    "kmeans": lambda pixels, n_clusters, seed: kmeans_labels(pixels, n_clusters=n_clusters, seed=seed),
}
"""Methods without a network: (H, W, C) image, number of clusters, seed -> (H, W) cluster map."""

BASELINE_CLUSTERS = {"otsu": None, "kmeans": 3}
"""The ``min_labels`` of each baseline when none is given: k-means' number of clusters, read out like the networks'
scores (``default_readout_clusters``); None for Otsu, which always splits in two and ignores it."""

ALL_METHODS: tuple[str, ...] = (*METHODS, *BASELINES)

PRECISIONS = ("float32", "bfloat16")
"""Number formats of the network's forward pass (bfloat16 under ``torch.autocast``)."""

@dataclass
class SegmentationResult:
    """What ``segment`` returns.

    Attributes:
        labels: (H, W) int32 cluster map at the input's resolution; clusters are numbered 1..n_labels
            by decreasing area.
        mask: (H, W) bool foreground; chosen without ground truth unless ``foreground`` says oracle.
        method, seed: what produced it.
        iterations: optimiser steps run.
        seconds: wall time of the fit, including the final prediction and its readout (not the mask's choice).
        history: per iteration, the weighted loss terms, their ``total`` and ``n_labels``.
    """

    labels: np.ndarray
    mask: np.ndarray
    method: str
    seed: int
    iterations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    confidence: float = 0.0
    """Ground-truth-free confidence of ``mask`` in [0, 1) (``confidence.mask_confidence``): sort by it to
    review the doubtful masks first."""
    foreground: str = "lesion"
    """What chose ``mask``: without ground truth the target prior ("lesion", "lungs") or "point";
    "oracle" or "oracle+crop" for the papers' protocol (with the ground truth: for reproducing their
    figures only)."""

    @property
    def n_labels(self) -> int:
        """Number of clusters in ``labels``."""
        return int(self.labels.max())


def as_float_image(image: np.ndarray) -> np.ndarray:
    """Check and convert an image array to float32 (H, W, C) in [0, 1], C in {1, 3}.

    Accepts (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) (alpha dropped); bool, uint8, uint16 (scaled by
    their range) or float (kept if inside [0, 1], else min-max scaled).
    """
    image = np.asarray(image)
    check_shape("image", image, ("H", "W"), ("H", "W", 1), ("H", "W", 3), ("H", "W", 4))
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[0] < MIN_SIDE or image.shape[1] < MIN_SIDE:
        raise ValueError(f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {image.shape[0]}x{image.shape[1]}")
    image = image[:, :, :3]
    if image.dtype == bool:
        return image.astype(np.float32)
    if image.dtype in (np.uint8, np.uint16):
        return image.astype(np.float32) / np.iinfo(image.dtype).max
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image must be bool, uint8, uint16 or float, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    image = image.astype(np.float32)
    low, high = float(image.min()), float(image.max())
    if low < 0 or high > 1:
        image = (image - low) / max(high - low, 1e-12)
    return image


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name as given."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.cache
def _keep_freed_memory() -> None:
    """Let glibc reuse freed large blocks instead of unmapping them (a no-op elsewhere).

    Every iteration allocates and frees the same few hundred MB; with glibc's defaults each block is
    mmap'ed and page-faulted afresh, which costs about a third of a CPU iteration.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)


MIN_WORKING_SIDE = 8
"""Shortest working side in pixels: thinner images are stretched to it (the networks need context)."""


def _working_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Scale (height, width) so that the longer side is ``size`` (None: native), each side >= MIN_WORKING_SIDE."""
    scale = 1.0 if size is None else size / max(height, width)
    return max(MIN_WORKING_SIDE, round(height * scale)), max(MIN_WORKING_SIDE, round(width * scale))


def _split_options(spec: MethodSpec, options: dict) -> tuple[dict, dict]:
    """Split ``options`` between the model and the objective factories; reject unknown names."""
    model_keys = set(inspect.signature(spec.model).parameters) - {"in_channels"}
    objective_keys = set(inspect.signature(spec.objective).parameters)
    unknown = set(options) - model_keys - objective_keys
    if unknown:
        accepted = ", ".join(sorted(model_keys | objective_keys))
        raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))}; accepted: {accepted}")
    return (
        {k: v for k, v in options.items() if k in model_keys},
        {k: v for k, v in options.items() if k in objective_keys},
    )


def _segment_baseline(
    pixels: np.ndarray, method: str, *, seed: int, counts: tuple[int, ...] | None, min_labels: int | None, rule: dict,
    **options,
) -> SegmentationResult:
    """``segment`` for a method of ``BASELINES``: cluster at native resolution, same foreground step. k-means
    clusters once per count of ``counts`` (None: ``default_readout_clusters``) and keeps the map whose mask the
    others agree with most, as the networks' kmeans readout does, so that both are compared like for like."""
    if options:
        raise TypeError(f"unknown option(s) {', '.join(sorted(options))}; {method} takes none")
    start = time.perf_counter()
    fewest = min_labels_of(method, min_labels)
    counts = (2,) if fewest is None else counts or default_readout_clusters(pixels, fewest)  # Otsu: always two
    def recluster(k: int) -> np.ndarray:
        return relabel_by_area(BASELINES[method](pixels, k, seed))

    maps = [recluster(k) for k in counts]
    seconds = time.perf_counter() - start
    labels, mask, chosen = _choose(maps, pixels, rule, recluster if fewest is not None else None)
    confidence = mask_confidence(mask, pixels)
    return SegmentationResult(labels, mask, method, seed, 0, seconds, confidence=confidence, foreground=chosen)


def min_labels_of(method: str, min_labels: int | None = None) -> int | None:
    """The ``min_labels`` ``method`` clusters to: ``min_labels`` if given, else a network's ``MethodSpec.min_labels``
    or a baseline's ``BASELINE_CLUSTERS``; None for Otsu, which always splits in two and ignores it."""
    default = METHODS[method].min_labels if method in METHODS else BASELINE_CLUSTERS[check_method(method)]
    return None if default is None else min_labels or default


def check_method(method: str) -> str:
    """``method`` if it is one of ``ALL_METHODS``; else ValueError naming them (the engine's and the runner's check)."""
    return look_up_option(method, ALL_METHODS, name="method")


@dataclass(frozen=True)
class _Training:
    """Optimiser settings and stop rule of one fit: ``segment``'s arguments, the method's defaults filled in."""

    max_iter: int
    min_labels: int
    min_iter: int
    tol: float
    patience: int
    lr: float
    precision: str

    def stop(self, iteration: int, history: list[dict[str, float]]) -> bool:
        """After at least ``min_iter`` steps: at most ``min_labels`` clusters, or ``patience`` stable iterations."""
        recent = [h["changed"] for h in history[-self.patience :]]
        stable = len(recent) == self.patience and max(recent) < self.tol
        return iteration >= self.min_iter and (history[-1]["n_labels"] <= self.min_labels or stable)


def _autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bfloat16 autocast for ``precision="bfloat16"``, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _prepare_input(pixels: np.ndarray, size: int | None, device: torch.device) -> Tensor:
    """(H, W, C) image in [0, 1] -> (1, C, h, w) channels-last tensor at the working size (``_working_size``)."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(device)
    work = _working_size(*pixels.shape[:2], size)
    if work != pixels.shape[:2]:
        x = F.interpolate(x, size=work, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    return x.contiguous(memory_format=torch.channels_last)


def _build_model(spec: MethodSpec, x: Tensor, seed: int, options: dict) -> nn.Module:
    """The method's network for input ``x``, its weights drawn from ``seed`` (the global RNG left as it was)."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        model = spec.model(in_channels=x.shape[1], **options)
    return model.to(x.device, memory_format=torch.channels_last).train()


def _iteration_stats(current: Tensor, previous: Tensor, n_classes: int) -> tuple[Tensor, Tensor]:
    """Bookkeeping of one iteration of N fits: (N, h, w) argmax maps now and before (-1: no iteration yet)
    -> (clusters in use (N,), fraction of pixels that changed cluster (N,), 1 on the first iteration)."""
    used = torch.zeros(current.shape[0], n_classes, dtype=torch.bool, device=current.device)
    used.scatter_(1, current.flatten(1), True)
    return used.sum(dim=1), (current != previous).flatten(1).float().mean(dim=1)


def _records(terms: dict[str, Tensor], total: Tensor, n_labels: Tensor, changed: Tensor) -> list[dict[str, float]]:
    """One iteration's ``history`` record of each of N fits, from (N,) tensors, with one host sync."""
    columns = [value.detach().float() for value in (*terms.values(), total, n_labels, changed)]
    names = [*terms, "total", "n_labels", "changed"]
    records = [dict(zip(names, row)) for row in torch.stack(columns, dim=1).tolist()]
    for record in records:
        record["n_labels"] = int(record["n_labels"])
    return records


MOMENTUM = 0.9
"""Momentum of every fit's SGD (no dampening, no weight decay)."""


def _fit(
    model: nn.Module,
    objective: nn.Module,
    x: Tensor,
    training: _Training,
    *,
    seed: int,
    callback: Callable[[int, dict[str, float]], None] | None,
) -> list[dict[str, float]]:
    """SGD (``MOMENTUM``) on ``objective`` until ``training.stop``; one record per iteration."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=training.lr, momentum=MOMENTUM)
    history: list[dict[str, float]] = []
    previous = torch.full((1, *x.shape[-2:]), -1, dtype=torch.long, device=x.device)
    for iteration in range(training.max_iter):
        optimizer.zero_grad(set_to_none=True)
        with _autocast(x.device, training.precision):
            scores, terms = objective(model, x, generator)
            total = sum(terms.values())
        total.backward()
        optimizer.step()
        current = scores.detach().argmax(dim=1)
        stats = _iteration_stats(current, previous, scores.shape[1])
        (record,) = _records({name: value[None] for name, value in terms.items()}, total[None], *stats)
        previous = current
        history.append(record)
        if callback is not None:
            callback(iteration, record)
        if training.stop(iteration, history):
            break
    return history


def _choose(
    maps: list[np.ndarray], pixels: np.ndarray, rule: dict, recluster: Callable[[int], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """(labels, mask, what chose it) of the cluster map whose mask the others' masks agree with most. If that
    mask is ``implausible``, ``recluster`` (a count -> a cluster map, as the maps were made) gives one map with
    one cluster more than the most the maps have, and its mask is kept if the same prior finds a plausible one."""
    choices = [choose_mask(labels, pixels, **rule) for labels in maps]
    best = most_agreed([mask for mask, _ in choices])
    labels, (mask, chosen) = maps[best], choices[best]
    if recluster is not None and implausible(mask, chosen, labels, pixels):
        more = recluster(max(int(m.max()) for m in maps) + 1)
        other, named = choose_mask(more, pixels, **rule)
        if named == chosen and other.any() and not implausible(other, named, more, pixels):
            return more, other, named
    return labels, mask, chosen


@dataclass(frozen=True)
class _Setup:
    """What every image of a ``segment`` call with a network is fitted and read out with: checked arguments."""

    method: str
    training: _Training
    model_options: dict
    objective_options: dict
    readout: str
    counts: tuple[int, ...] | None  # None: default_readout_clusters of each image
    size: int | None
    device: torch.device

    @property
    def spec(self) -> MethodSpec:
        """The method's entry of ``METHODS``."""
        return METHODS[self.method]

    def objective(self) -> nn.Module:
        """A new objective module of the method, with the call's options."""
        return self.spec.objective(**self.objective_options)


def _check_arguments(
    method: str, *, readout: str, precision: str, readout_clusters: int | Sequence[int] | None, min_labels: int | None
) -> tuple[int, ...] | None:
    """``segment``'s checks that hold for any method; the readout's cluster counts (None: each image's default)."""
    check_method(method)
    look_up_option(readout, READOUTS, name="readout")
    look_up_option(precision, PRECISIONS, name="precision")
    counts = None if readout_clusters is None else readout_counts(readout_clusters)
    if min_labels is not None and min_labels < 1:
        raise ValueError(f"min_labels must be at least 1, got {min_labels}")
    return counts


def _check_image(image: np.ndarray, rule: dict) -> np.ndarray:
    """The image as ``as_float_image`` converts it, after checking the foreground ``rule`` against it."""
    pixels = as_float_image(image)
    check_rule(**rule, shape=pixels.shape)
    return pixels


def _network_setup(
    method: str,
    options: dict,
    *,
    size: int | None,
    device: str | torch.device,
    readout: str,
    counts: tuple[int, ...] | None,
    max_iter: int | None,
    min_labels: int | None,
    min_iter: int | None,
    lr: float | None,
    **stop: float | int | str,
) -> _Setup:
    """The ``_Setup`` of a network ``method``: its defaults filled in, ``options`` split, ``max_iter`` checked.
    ``stop``: ``tol``, ``patience`` and ``precision`` as ``_Training`` takes them."""
    spec = METHODS[method]
    model_options, objective_options = _split_options(spec, options)
    training = _Training(
        max_iter=spec.max_iter if max_iter is None else max_iter,
        min_labels=spec.min_labels if min_labels is None else min_labels,
        min_iter=spec.min_iter if min_iter is None else min_iter,
        lr=spec.lr if lr is None else lr,
        **stop,
    )
    if training.max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {training.max_iter}")
    dev = resolve_device(device)
    if dev.type == "cpu":
        _keep_freed_memory()
    return _Setup(method, training, model_options, objective_options, readout, counts, size, dev)


def _finish(
    model: nn.Module, x: Tensor, pixels: np.ndarray, setup: _Setup, *, seed: int, rule: dict,
    history: list[dict[str, float]], start: float,
) -> SegmentationResult:
    """The result of a fitted ``model`` on its working input ``x`` ((1, C, h, w)) and image ``pixels``:
    the final prediction, the readout at the native size, the mask; ``seconds`` counted from ``start``."""
    with torch.no_grad(), _autocast(x.device, setup.training.precision):
        scores = model.predict(x).float()

    def read_out(counts: Sequence[int]) -> list[np.ndarray]:
        with torch.no_grad(), _autocast(x.device, setup.training.precision):
            return cluster_maps(scores, x, pixels.shape[:2], readout=setup.readout, counts=counts, seed=seed)

    maps = read_out(setup.counts or default_readout_clusters(pixels, setup.training.min_labels))
    seconds = time.perf_counter() - start
    recluster = (lambda k: read_out((k,))[0]) if setup.readout == "kmeans" else None  # argmax has no count to raise
    labels, mask, chosen = _choose(maps, pixels, rule, recluster)
    return SegmentationResult(
        labels=labels,
        mask=mask,
        method=setup.method,
        seed=seed,
        iterations=len(history),
        seconds=seconds,
        history=history,
        confidence=mask_confidence(mask, pixels),
        foreground=chosen,
    )


def segment(
    image: np.ndarray,
    method: str = "s3net",
    *,
    seed: int = 0,
    size: int | None = DEFAULT_SIZE,
    max_iter: int | None = None,
    min_labels: int | None = None,
    min_iter: int | None = None,
    tol: float = 0.1,
    patience: int = 2,
    lr: float | None = None,
    device: str | torch.device = "auto",
    precision: str = "float32",
    readout: str = "kmeans",
    readout_clusters: int | Sequence[int] | None = None,
    foreground: str = "auto",
    target: str = "auto",
    point: tuple[int, int] | None = None,
    truth: np.ndarray | None = None,
    oracle_crop: bool = False,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    **options,
) -> SegmentationResult:
    """Fit a fresh network to ``image`` and return its clusters and foreground mask.

    Args:
        image: (H, W) or (H, W, C) array; see ``as_float_image``.
        method: a key of ``METHODS`` (networks: ``s3net``, ``msformer``, ``dfc``) or ``BASELINES`` (``otsu``;
            ``kmeans`` of the colours, with the cluster counts of the networks' kmeans readout, ``readout_clusters``,
            and ``min_labels`` 3 by default; they ignore the training options).
        seed: seeds the weights and the random transforms; on CPU equal seeds give equal results.
        size: longer side of the working resolution (``DEFAULT_SIZE``; None: native); sides shorter than
            ``MIN_WORKING_SIDE`` are stretched to it. The clusters are read out at the native size.
        max_iter, min_labels, min_iter, lr: override the method's defaults. Training stops once at
            most ``min_labels`` clusters remain in a prediction made after at least ``min_iter``
            optimiser steps, or after ``max_iter`` steps.
        tol, patience: also stop (after ``min_iter`` steps) once fewer than ``tol`` of the pixels
            changed cluster in each of the last ``patience`` iterations (0 disables this rule).
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        precision: "float32", or "bfloat16" to run the network under ``torch.autocast`` (on CPUs
            with AVX512-BF16, MS-Former runs about 1.7 times faster; S3-Net's depthwise and
            deformable convolutions get slower, so keep it at float32).
        readout: how the fitted network's scores become clusters (``readout.cluster_maps``): "kmeans"
            (``readout.kmeans_readout`` with ``readout_clusters`` clusters: k-means of the score vectors
            and the pixel colours) or "argmax" (the papers' per-pixel argmax). Baselines ignore it.
        readout_clusters: clusters of the "kmeans" readout, or several counts: one readout each, a mask
            chosen from each, and the readout whose mask agrees most with the others' is kept
            (``foreground.most_agreed``). None: ``readout.default_readout_clusters``, ``min_labels`` on grey
            images and ``min_labels`` to ``min_labels + 2`` on colour ones. The ``kmeans`` baseline clusters the
            colours with the same counts; Otsu ignores them.
        foreground, target, point, truth, oracle_crop: how the mask is chosen from the clusters
            (``foreground.choose_mask``). "auto" needs no ground truth: ``target`` "lesion", "lungs"
            or "auto" picks the prior, ``point=(x, y)`` takes the region under that pixel instead.
            "oracle" is the papers' protocol and needs ``truth``, the (H, W) ground-truth mask;
            ``oracle_crop`` adds the released code's dilated-truth crop. Oracle results are labelled
            so (``SegmentationResult.foreground``) and are not segmentations a user without ground
            truth can obtain.
        callback: called after every iteration with (iteration, record of ``history``).
        **options: passed to the method's model (e.g. ``n_channels``, 32 by default, ``color``) or objective
            (e.g. ``ce_weight``).

    Returns:
        SegmentationResult with ``labels`` and ``mask`` at the input's resolution.

    Raises:
        ValueError: a bad image or argument (the message names it and, for a choice, the valid ones).
        TypeError: an option that neither the model nor the objective takes, or an unsupported dtype.

    A dark disc on a bright background, fitted for three steps:

    >>> import numpy as np
    >>> yy, xx = np.mgrid[:48, :64]
    >>> image = np.where((yy - 24) ** 2 + (xx - 32) ** 2 < 15**2, 0.2, 0.9)
    >>> result = segment(image, size=32, max_iter=3, n_channels=8, device="cpu")
    >>> result.labels.shape, result.mask.dtype, result.iterations
    ((48, 64), dtype('bool'), 3)
    >>> bool(result.mask[24, 32]), bool(result.mask[0, 0])
    (True, False)
    """
    counts = _check_arguments(method, readout=readout, precision=precision, readout_clusters=readout_clusters,
                              min_labels=min_labels)
    rule = dict(foreground=foreground, target=target, point=point, truth=truth, oracle_crop=oracle_crop)
    pixels = _check_image(image, rule)
    if method in BASELINES:
        return _segment_baseline(pixels, method, seed=seed, counts=counts, min_labels=min_labels, rule=rule, **options)
    setup = _network_setup(
        method, options, size=size, device=device, readout=readout, counts=counts, max_iter=max_iter,
        min_labels=min_labels, min_iter=min_iter, tol=tol, patience=patience, lr=lr, precision=precision,
    )
    start = time.perf_counter()
    x = _prepare_input(pixels, size, setup.device)
    model = _build_model(setup.spec, x, seed, setup.model_options)
    history = _fit(model, setup.objective(), x, setup.training, seed=seed, callback=callback)
    return _finish(model, x, pixels, setup, seed=seed, rule=rule, history=history, start=start)
