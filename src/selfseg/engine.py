"""Per-image training engine: fit a fresh network to one image, return its clusters and foreground.

``segment`` is the public entry point (NumPy in, NumPy out). The method table ``METHODS`` says, for
each method, how to build the network and its objective and which optimiser settings it uses.
"""

from __future__ import annotations

import ctypes
import functools
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfseg.baselines import kmeans_labels, otsu_labels
from selfseg.foreground import check_rule, choose_mask, is_grey, most_agreed
from selfseg.losses import DFCObjective, MSFormerObjective, S3NetObjective
from selfseg.models import DFC, MSFormer, S3Net

__all__ = [
    "ALL_METHODS",
    "BASELINES",
    "DEFAULT_SIZE",
    "METHODS",
    "READOUTS",
    "MethodSpec",
    "SegmentationResult",
    "as_float_image",
    "default_readout_clusters",
    "kmeans_readout",
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
``n_channels=64`` etc. restores them). At the 128-px working size they fit 10 to 20 times faster than the
papers' settings at about the same mean Dice (docs/speed.md; docs/results.md, where chest X-rays lose 0.01)."""

DEFAULT_SIZE = 128
"""Default working size (longer side, px) of the networks: the masks are smooth, and the readout and the
foreground rule work at the native resolution (docs/speed.md measures 96 to 256)."""

BASELINES: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "otsu": lambda pixels, n_clusters, seed: otsu_labels(pixels),
    "kmeans": lambda pixels, n_clusters, seed: kmeans_labels(pixels, n_clusters=n_clusters, seed=seed),
}
"""Methods without a network: (H, W, C) image, number of clusters, seed -> (H, W) cluster map."""

ALL_METHODS: tuple[str, ...] = (*METHODS, *BASELINES)

READOUTS = ("kmeans", "argmax")
"""How a fitted network's scores become clusters: ``kmeans_readout`` (the default), or the papers' per-pixel argmax."""

COLOUR_WEIGHT = 3.0
"""Weight of the standardised pixel colour against the unit-length score vector in ``kmeans_readout``."""


@dataclass
class SegmentationResult:
    """What ``segment`` returns.

    Attributes:
        labels: (H, W) int32 cluster map at the input's resolution; clusters are numbered 1..n_labels
            by decreasing area.
        mask: (H, W) bool foreground; chosen without ground truth unless ``foreground`` says oracle.
        method, seed: what produced it.
        iterations: optimiser steps run.
        seconds: wall time of the fit, including the final prediction.
        history: per iteration, the weighted loss terms, their ``total`` and ``n_labels``.
    """

    labels: np.ndarray
    mask: np.ndarray
    method: str
    seed: int
    iterations: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
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
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {image.shape[0]}x{image.shape[1]}")
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


MIN_SIDE = 8
"""Shortest working side in pixels: thinner images are stretched to it (the networks need context)."""


def _working_size(height: int, width: int, size: int | None) -> tuple[int, int]:
    """Scale (height, width) so that the longer side is ``size`` (None: native), each side >= MIN_SIDE."""
    scale = 1.0 if size is None else size / max(height, width)
    return max(MIN_SIDE, round(height * scale)), max(MIN_SIDE, round(width * scale))


def _upsampled_argmax(scores: Tensor, height: int, width: int, rows_per_strip: int = 256) -> Tensor:
    """Argmax over classes of (1, C, h, w) scores upsampled bilinearly to (height, width). (height, width) int64.

    Equal to ``F.interpolate(scores, (height, width), mode="bilinear").argmax(1)``, computed in strips
    of rows so that large images never hold the full-resolution score volume.
    """
    if scores.shape[-2:] == (height, width):
        return scores[0].argmax(dim=0)
    xs = (torch.arange(width, device=scores.device, dtype=scores.dtype) * 2 + 1) / width - 1
    out = torch.empty(height, width, dtype=torch.long, device=scores.device)
    for top in range(0, height, rows_per_strip):
        rows = torch.arange(top, min(top + rows_per_strip, height), device=scores.device, dtype=scores.dtype)
        ys = (rows * 2 + 1) / height - 1
        grid = torch.stack(torch.broadcast_tensors(xs[None, :], ys[:, None]), dim=-1)[None]
        strip = F.grid_sample(scores, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out[top : top + len(rows)] = strip[0].argmax(dim=0)
    return out


def kmeans_readout(scores: Tensor, image: Tensor, *, n_clusters: int, seed: int) -> Tensor:
    """Clusters of a fitted network by k-means instead of argmax. (1, K, h, w) scores, (1, C, h, w) image
    -> (1, n_clusters, h, w) one-hot cluster scores (for ``_upsampled_argmax``).

    Each pixel is described by its L2-normalised score vector joined with its colour, standardised to
    unit variance and weighted by ``COLOUR_WEIGHT``; ``baselines.kmeans_labels`` (k-means++ start,
    seeded) groups them into ``n_clusters``. The argmax of a network that has merged regions of
    different brightness into one dominant cluster (lungs and body on chest X-rays) cannot separate
    them again; its score vectors, with the colour, still do.
    """
    if scores.dim() != 4 or scores.shape[0] != 1:
        raise ValueError(f"scores must have shape (1, K, h, w), got {tuple(scores.shape)}")
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"image must have shape (1, C, {scores.shape[2]}, {scores.shape[3]}), got {tuple(image.shape)}")
    normed = F.normalize(scores.float(), dim=1)[0]
    colour = image.float()[0]
    colour = COLOUR_WEIGHT * (colour - colour.mean(dim=(1, 2), keepdim=True)) / colour.std().clamp_min(1e-6)
    features = torch.cat([normed, colour]).permute(1, 2, 0).cpu().numpy()
    labels = torch.from_numpy(kmeans_labels(features, n_clusters=n_clusters, seed=seed)).long() - 1
    return F.one_hot(labels, n_clusters).permute(2, 0, 1)[None].float().to(scores.device)


def default_readout_clusters(image: np.ndarray, min_labels: int) -> tuple[int, ...]:
    """Cluster counts of ``kmeans_readout`` when none are given: ``(min_labels,)`` on grey images
    (``foreground.is_grey``: CT and X-rays, whose outside, body and lungs are three tones), ``min_labels``
    to ``min_labels + 2`` on colour ones (dermoscopy: skin, a lesion's rim and core, shading or hair;
    ``segment`` keeps the readout whose mask the others agree with most). Measured in docs/results.md."""
    return (min_labels,) if is_grey(image) else (min_labels, min_labels + 1, min_labels + 2)


def readout_counts(readout_clusters: int | Sequence[int]) -> tuple[int, ...]:
    """``readout_clusters`` as a tuple of cluster counts; ValueError unless it holds at least one, each >= 1."""
    counts = (readout_clusters,) if isinstance(readout_clusters, (int, np.integer)) else tuple(readout_clusters)
    if not counts or any(int(k) != k or k < 1 for k in counts):
        raise ValueError(f"readout_clusters must be a count >= 1 or a non-empty sequence of them, got {readout_clusters!r}")
    return tuple(int(k) for k in counts)


def _relabel_by_area(labels: np.ndarray) -> np.ndarray:
    """Renumber non-negative integer cluster ids to 1..n by decreasing area (ties: lower id first). int32."""
    counts = np.bincount(labels.ravel())  # ids are small: a count per id instead of np.unique's sort
    ids = np.flatnonzero(counts)
    rank = np.zeros(len(counts), dtype=np.int32)
    rank[ids[np.argsort(-counts[ids], kind="stable")]] = np.arange(1, len(ids) + 1)
    return rank[labels]


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
    pixels: np.ndarray, method: str, *, seed: int, n_clusters: int, rule: dict, **options
) -> SegmentationResult:
    """``segment`` for a method of ``BASELINES``: cluster at native resolution, same foreground step."""
    if options:
        raise TypeError(f"unknown option(s) {', '.join(sorted(options))}; {method} takes none")
    start = time.perf_counter()
    labels = _relabel_by_area(BASELINES[method](pixels, n_clusters, seed))
    seconds = time.perf_counter() - start
    mask, chosen = choose_mask(labels, pixels, **rule)
    return SegmentationResult(labels, mask, method, seed, 0, seconds, foreground=chosen)


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
        method: a key of ``METHODS`` (networks: ``s3net``, ``msformer``, ``dfc``) or ``BASELINES`` (``otsu``, ``kmeans`` with
            ``min_labels`` clusters, default 3; they ignore the training options).
        seed: seeds the weights and the random transforms; on CPU equal seeds give equal results.
        size: longer side of the working resolution (``DEFAULT_SIZE``, 128; None: native); sides shorter than
            ``MIN_SIDE`` are stretched to it. Scores are resized to the native size before the argmax.
        max_iter, min_labels, min_iter, lr: override the method's defaults. Training stops once at
            most ``min_labels`` clusters remain in a prediction made after at least ``min_iter``
            optimiser steps, or after ``max_iter`` steps.
        tol, patience: also stop (after ``min_iter`` steps) once fewer than ``tol`` of the pixels
            changed cluster in each of the last ``patience`` iterations (0 disables this rule).
        device: "auto" (CUDA when present), "cpu", "cuda", ...
        precision: "float32", or "bfloat16" to run the network under ``torch.autocast`` (on CPUs
            with AVX512-BF16, MS-Former runs about 1.7 times faster; S3-Net's depthwise and
            deformable convolutions get slower, so keep it at float32).
        readout: how the fitted network's scores become clusters: "kmeans" (``kmeans_readout`` with
            ``readout_clusters`` clusters: k-means of the score vectors and the pixel colours; the
            default since selfseg 0.5) or "argmax" (the papers' per-pixel argmax). Baselines ignore it.
        readout_clusters: clusters of the "kmeans" readout, or several counts: one readout each, a mask
            chosen from each, and the readout whose mask agrees most with the others' is kept
            (``foreground.most_agreed``). None: ``default_readout_clusters``, ``min_labels`` on grey
            images and ``min_labels`` to ``min_labels + 2`` on colour ones.
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
    """
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    if readout_clusters is not None:
        readout_clusters = readout_counts(readout_clusters)
    if min_labels is not None and min_labels < 1:
        raise ValueError(f"min_labels must be at least 1, got {min_labels}")
    pixels = as_float_image(image)
    rule = dict(foreground=foreground, target=target, point=point, truth=truth, oracle_crop=oracle_crop)
    check_rule(**rule, shape=pixels.shape)
    if method in BASELINES:
        return _segment_baseline(pixels, method, seed=seed, n_clusters=min_labels or 3, rule=rule, **options)
    spec = METHODS[method]
    model_options, objective_options = _split_options(spec, options)
    max_iter = spec.max_iter if max_iter is None else max_iter
    min_labels = spec.min_labels if min_labels is None else min_labels
    min_iter = spec.min_iter if min_iter is None else min_iter
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    height, width = pixels.shape[:2]
    dev = resolve_device(device)
    if dev.type == "cpu":
        _keep_freed_memory()

    start = time.perf_counter()
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].to(dev)
    work = _working_size(height, width, size)
    if work != (height, width):
        x = F.interpolate(x, size=work, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
    x = x.contiguous(memory_format=torch.channels_last)

    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        model = spec.model(in_channels=x.shape[1], **model_options)
    model = model.to(dev, memory_format=torch.channels_last).train()
    objective = spec.objective(**objective_options)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=spec.lr if lr is None else lr, momentum=0.9)
    autocast = functools.partial(torch.autocast, dev.type, dtype=torch.bfloat16, enabled=precision == "bfloat16")

    history: list[dict[str, float]] = []
    previous = None
    for iteration in range(max_iter):
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            scores, terms = objective(model, x, generator)
            total = sum(terms.values())
        total.backward()
        optimizer.step()
        current = scores.detach().argmax(dim=1)
        n_labels = int(torch.unique(current).numel())
        changed = 1.0 if previous is None else float((current != previous).float().mean())
        previous = current
        record = {name: float(value.detach()) for name, value in terms.items()}
        record.update(total=float(total.detach()), n_labels=n_labels, changed=changed)
        history.append(record)
        if callback is not None:
            callback(iteration, record)
        recent = [h["changed"] for h in history[-patience:]]
        stable = len(recent) == patience and max(recent) < tol
        if iteration >= min_iter and (n_labels <= min_labels or stable):
            break

    with torch.no_grad(), autocast():
        scores = model.predict(x).float()
        if readout == "kmeans":
            counts = readout_clusters or default_readout_clusters(pixels, min_labels)
            readouts = [kmeans_readout(scores, x, n_clusters=k, seed=seed) for k in counts]
        else:
            readouts = [scores]
        maps = [_relabel_by_area(_upsampled_argmax(r.contiguous(), height, width).cpu().numpy()) for r in readouts]
    seconds = time.perf_counter() - start
    choices = [choose_mask(labels, pixels, **rule) for labels in maps]
    best = most_agreed([mask for mask, _ in choices])
    labels, (mask, chosen) = maps[best], choices[best]
    return SegmentationResult(
        labels=labels,
        mask=mask,
        method=method,
        seed=seed,
        iterations=len(history),
        seconds=seconds,
        history=history,
        foreground=chosen,
    )
