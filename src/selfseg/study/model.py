"""Training and prediction of the study network (see ``selfseg.study``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from selfseg.checks import look_up_option
from selfseg.fitting import resolve_device
from selfseg.foreground import keep_prior
from selfseg.models.unet import UNet
from selfseg.transforms import random_affine_matrix, warp_affine

__all__ = ["PRIORS", "StudyModel", "StudySettings", "predict_mask", "train_study"]

PRIORS = ("lesion", "lungs", "polyp")
"""The target priors a study mask is kept within (``foreground.keep_prior``)."""


@dataclass(frozen=True)
class StudySettings:
    """How the study network is trained, checked once.

    Attributes:
        size: working side in pixels (images are resized to ``size`` x ``size``; a multiple of 8).
        width, depth: the U-Net's first-level channels and poolings.
        epochs, batch, lr: passes over the kept masks, images per step, AdamW's peak learning rate.
        average: the weights kept are the mean of those at the end of each of the last ``average`` epochs (stochastic
            weight averaging; 1: the last weights). It costs nothing and makes the masks depend less on the seed
            (docs/experiments/study-variance.md).
        keep: share of the folder's masks trained on, the most confident first.
        consistency: weight of the transformation-consistency term (off by default: it doubles the cost and has
            not paid yet, docs/experiments/study-stage.md).
        seed: seeds the weights, the batches and the augmentation.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
    """

    size: int = 96
    width: int = 8
    depth: int = 3
    epochs: int = 20
    batch: int = 16
    lr: float = 3e-3
    average: int = 5
    keep: float = 1.0
    consistency: float = 0.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.size < 8 or self.size % 2**self.depth:
            raise ValueError(f"size must be a multiple of {2**self.depth} of at least 8, got {self.size}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        for name in ("width", "depth", "epochs", "batch", "average"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class StudyModel:
    """A trained study network, the settings it was trained with and the prior its masks are kept within."""

    network: UNet
    settings: StudySettings
    prior: str
    fingerprint: str = ""
    """What it learnt from (``runner.study.training_fingerprint``), so that resume can reuse it."""


def _inputs(images: Iterable[np.ndarray], size: int) -> Tensor:
    """(N, 3, size, size): each (H, W, C) image in [0, 1] (grey repeated) resized, each channel standardised."""
    batch = []
    for pixels in images:
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x.expand(1, 3, *x.shape[-2:]), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0]
        batch.append((x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True).clamp_min(1e-3))
    return torch.stack(batch)


def _targets(masks: Iterable[np.ndarray], size: int) -> Tensor:
    """(N, 1, size, size) soft targets of the (H, W) bool masks."""
    return torch.stack([
        F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(size, size), mode="bilinear",
                      antialias=True, align_corners=False)[0]
        for mask in masks
    ])


def _loss(network: UNet, x: Tensor, y: Tensor, w: Tensor, consistency: float, generator: torch.Generator) -> Tensor:
    """Confidence-weighted BCE and soft Dice against the pseudo-masks, plus the transformation consistency."""
    logits = network(x)
    probability = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=(1, 2, 3))
    overlap = 2 * (probability * y).sum(dim=(1, 2, 3)) + 1
    soft_dice = 1 - overlap / (probability.sum(dim=(1, 2, 3)) + y.sum(dim=(1, 2, 3)) + 1)
    loss = ((bce + soft_dice) * w).sum() / w.sum()
    if consistency:
        theta = random_affine_matrix(len(x), *x.shape[-2:], generator=generator).to(x.device)
        moved = torch.sigmoid(network(warp_affine(x, theta)))
        loss = loss + consistency * F.mse_loss(moved, warp_affine(probability, theta))
    return loss


def train_study(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    confidence: Sequence[float],
    *,
    prior: str,
    settings: StudySettings = StudySettings(),  # noqa: B008 (frozen)
    callback: Callable[[int, int, float], None] | None = None,
) -> StudyModel:
    """Train the study network on a folder's per-image masks.

    Args:
        images: (H, W, C) float images in [0, 1] (``pixels.as_float_image``), any sizes.
        masks: their (H, W) bool per-image masks.
        confidence: each mask's ground-truth-free confidence (``confidence.mask_confidence``): the most confident
            ``settings.keep`` of the masks are trained on, each weighted by its confidence.
        prior: the target prior the study masks are kept within (one of ``PRIORS``).
        callback: called after every step with (step, steps, loss).

    Returns:
        The trained ``StudyModel`` (on ``settings.device``, in eval mode).
    """
    look_up_option(prior, PRIORS, name="prior")
    if not (len(images) == len(masks) == len(confidence)) or not images:
        raise ValueError(f"need as many masks and confidences as images, and at least one: {len(images)}, "
                         f"{len(masks)}, {len(confidence)}")
    device = resolve_device(settings.device)
    order = np.argsort(-np.asarray(confidence, dtype=float), kind="stable")
    kept = order[: max(1, round(settings.keep * len(order)))]
    x = _inputs((images[i] for i in kept), settings.size).to(device)  # one full-size image in memory at a time
    y = _targets((masks[i] for i in kept), settings.size).to(device)
    w = torch.tensor([max(float(confidence[i]), 1e-3) for i in kept], device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        network = UNet(3, settings.width, settings.depth).to(device)
    generator = torch.Generator().manual_seed(settings.seed)
    batch = min(settings.batch, len(kept))
    per_epoch = max(1, len(kept) // batch)
    steps = settings.epochs * per_epoch
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps)
    # stochastic weight averaging (Izmailov et al., UAI 2018, arXiv:1803.05407) over the ends of the last epochs of
    # the one-cycle schedule, BatchNorm statistics averaged with the weights
    averaged, first = AveragedModel(network, use_buffers=True), steps - min(settings.average, settings.epochs) * per_epoch
    network.train()
    for step in range(steps):
        if step % per_epoch == 0:
            permutation = torch.randperm(len(kept), generator=generator)
        rows = permutation[(step % per_epoch) * batch : (step % per_epoch + 1) * batch].to(device)
        theta = random_affine_matrix(len(rows), settings.size, settings.size, generator=generator).to(device)
        gain = (0.9 + 0.2 * torch.rand(len(rows), 3, 1, 1, generator=generator)).to(device)  # colour jitter
        loss = _loss(network, warp_affine(x[rows], theta) * gain, warp_affine(y[rows], theta), w[rows],
                     settings.consistency, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step + 1 > first and (step + 1 - first) % per_epoch == 0:
            averaged.update_parameters(network)
        if callback is not None:
            callback(step, steps, float(loss.detach()))
    network.load_state_dict(averaged.module.state_dict())
    return StudyModel(network.eval(), settings, prior)


def predict_mask(model: StudyModel, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The study mask of one (H, W, C) float image: ((H, W) bool mask kept within the model's prior, (H, W) float32
    foreground probability). The probability averages the image and its mirror image."""
    device = next(model.network.parameters()).device
    x = _inputs([image], model.settings.size).to(device)
    with torch.no_grad():
        logits = model.network(torch.cat([x, x.flip(-1)]))
        probability = (torch.sigmoid(logits[:1]) + torch.sigmoid(logits[1:]).flip(-1)) / 2
        probability = F.interpolate(probability, size=image.shape[:2], mode="bilinear", align_corners=False)
    probability = probability[0, 0].cpu().numpy()
    return keep_prior(probability, model.prior), probability
