"""Training and prediction of the study network (see ``selfseg.study``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from selfseg.checks import look_up_option
from selfseg.fitting import resolve_device
from selfseg.foreground import keep_prior
from selfseg.models.efficientnet_lite import FeatureDecoder
from selfseg.models.unet import UNet
from selfseg.study.features import encode, pretrained_encoder, scaled_inputs
from selfseg.transforms import random_affine_matrix, resize_square, warp_affine

__all__ = ["NETWORKS", "PRIORS", "StudyModel", "StudySettings", "ensemble", "member_network", "predict_mask",
           "predict_probability", "train_study"]

PRIORS = ("lesion", "lungs", "polyp")
"""The target priors a study mask is kept within (``foreground.keep_prior``)."""
NETWORKS = ("pretrained", "unet")
"""The study networks: "pretrained", a small decoder on EfficientNet-Lite0's frozen ImageNet features
(``selfseg.study.features``); "unet", a small U-Net trained from scratch (``models.unet.UNet``)."""
_DEFAULTS = {"pretrained": (224, 16, 3), "unet": (96, 8, 1)}
"""Each network's working size, width and members when the settings leave them out."""


@dataclass(frozen=True)
class StudySettings:
    """How the study network is trained, checked once.

    Attributes:
        network: one of ``NETWORKS``. "pretrained" scores higher on every study folder
            (docs/experiments/pretrained-encoder.md); "unet" needs no pretrained weights and is the one with the
            ``consistency`` term.
        size: working side in pixels (images are resized to ``size`` x ``size``); None: the network's own (224 for
            "pretrained", a multiple of 16; 96 for "unet", a multiple of ``2**depth``).
        width: the decoder's channels ("pretrained") or the U-Net's first-level channels; None: 16 and 8.
        depth: the U-Net's poolings.
        epochs, batch, lr: passes over the kept masks, images per step, AdamW's peak learning rate.
        average: the weights kept are the mean of those at the end of each of the last ``average`` epochs (stochastic
            weight averaging; 1: the last weights). It costs nothing and makes the masks depend less on the seed
            (docs/experiments/study-variance.md).
        members: networks trained, each with its own seed (``seed + 1000 k``), on the same inputs; their probabilities
            are averaged (an ensemble). None: 3 for "pretrained" (narrow decoders, whose averaged mask depends less on
            the seed than one wider decoder's does, docs/experiments/study-ensemble.md), 1 for "unet".
        keep: share of the folder's masks trained on, the most confident first.
        consistency: weight of the transformation-consistency term (off by default: it doubles the cost and has
            not paid yet, docs/experiments/study-stage.md).
        seed: seeds the weights, the batches and the augmentation.
        device: "auto" (CUDA when present), "cpu", "cuda", ...
    """

    network: str = "pretrained"
    size: int | None = None
    width: int | None = None
    depth: int = 3
    epochs: int = 20
    batch: int = 16
    lr: float = 3e-3
    average: int = 5
    members: int | None = None
    keep: float = 1.0
    consistency: float = 0.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        look_up_option(self.network, NETWORKS, name="network")
        for name, default in zip(("size", "width", "members"), _DEFAULTS[self.network], strict=True):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)  # frozen: resolved once here
        multiple = 16 if self.network == "pretrained" else 2**self.depth
        if self.size < multiple or self.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} for the {self.network} network, got {self.size}")
        if self.consistency and self.network != "unet":
            raise ValueError(f"the consistency term needs network='unet', got {self.network!r}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        for name in ("width", "depth", "epochs", "batch", "average", "members"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class StudyModel:
    """A trained study network, the settings it was trained with and the prior its masks are kept within."""

    network: UNet | FeatureDecoder | nn.ModuleList
    """The network, or an ``nn.ModuleList`` of ``settings.members`` networks."""
    settings: StudySettings
    prior: str
    fingerprint: str = ""
    """What it learnt from (``runner.study.training_fingerprint``), so that resume can reuse it."""


def member_network(settings: StudySettings) -> UNet | FeatureDecoder:
    """A new, untrained network of one member of the study network ``settings`` describe."""
    if settings.network == "unet":
        return UNet(3, settings.width, settings.depth)
    return FeatureDecoder(settings.width)


def ensemble(members: list[nn.Module]) -> nn.Module:
    """What ``StudyModel.network`` holds for these member networks: the one network, or an ``nn.ModuleList``."""
    return members[0] if len(members) == 1 else nn.ModuleList(members)


def _inputs(images: Iterable[np.ndarray], size: int) -> Tensor:
    """(N, 3, size, size): each (H, W, C) image in [0, 1] (grey repeated) resized, each channel standardised."""
    batch = []
    for pixels in images:
        x = resize_square(pixels, size).expand(3, size, size)
        batch.append((x - x.mean(dim=(1, 2), keepdim=True)) / x.std(dim=(1, 2), keepdim=True).clamp_min(1e-3))
    return torch.stack(batch)


def _targets(masks: Iterable[np.ndarray], size: int, stride: int) -> Tensor:
    """(N, 1, size / stride, size / stride) soft targets of the (H, W) bool masks: each resized to size x size, then
    averaged over stride x stride blocks (the share of each block that is foreground)."""
    targets = torch.stack([resize_square(mask, size) for mask in masks])
    return F.avg_pool2d(targets, stride) if stride > 1 else targets


def _loss(logits: Tensor, y: Tensor, w: Tensor) -> Tensor:
    """Confidence-weighted BCE and soft Dice of (B, 1, S, S) logits against the pseudo-masks."""
    probability = torch.sigmoid(logits)
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=(1, 2, 3))
    overlap = 2 * (probability * y).sum(dim=(1, 2, 3)) + 1
    soft_dice = 1 - overlap / (probability.sum(dim=(1, 2, 3)) + y.sum(dim=(1, 2, 3)) + 1)
    return ((bce + soft_dice) * w).sum() / w.sum()


Step = Callable[[Tensor, Tensor, Tensor, torch.Generator], Tensor]
"""(rows of the kept masks, their targets, their weights, the generator) -> the loss on that batch."""


def _unet_step(x: Tensor, settings: StudySettings, device: torch.device) -> tuple[nn.Module, Step]:
    """A new U-Net and its loss on a batch of the (N, 3, S, S) inputs ``x`` (``_inputs``): random affine and colour
    augmentation, plus the transformation consistency (``settings.consistency``): the prediction on a transformed
    image must be the transformed prediction."""
    network = member_network(settings).to(device)

    def step(rows: Tensor, y: Tensor, w: Tensor, generator: torch.Generator) -> Tensor:
        theta = random_affine_matrix(len(rows), settings.size, settings.size, generator=generator).to(device)
        gain = (0.9 + 0.2 * torch.rand(len(rows), 3, 1, 1, generator=generator)).to(device)  # colour jitter
        moved = warp_affine(x[rows], theta) * gain
        logits = network(moved)
        loss = _loss(logits, warp_affine(y, theta), w)
        if settings.consistency:
            again = random_affine_matrix(len(rows), settings.size, settings.size, generator=generator).to(device)
            loss = loss + settings.consistency * F.mse_loss(torch.sigmoid(network(warp_affine(moved, again))),
                                                             warp_affine(torch.sigmoid(logits), again))
        return loss

    return network, step


def _decoder_step(features: list[Tensor], settings: StudySettings,
                  device: torch.device) -> tuple[nn.Module, Step]:
    """A new decoder and its loss on a batch of the stored ``features`` (``encode``), each image or its mirror image
    at random. The loss is taken on the decoder's own logits, at ``FeatureDecoder.stride``, against targets averaged
    to that stride: it trains faster than a loss on logits upsampled to the working size, with the same masks
    (docs/experiments/study-loss-size.md)."""
    decoder = member_network(settings).to(device)

    def step(rows: Tensor, y: Tensor, w: Tensor, generator: torch.Generator) -> Tensor:
        mirrored = torch.randint(0, 2, (len(rows),), generator=generator).to(device)
        logits = decoder([level[rows, mirrored].float() for level in features])
        return _loss(logits, torch.where(mirrored[:, None, None, None].bool(), y.flip(-1), y), w)

    return decoder, step


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
    if settings.network == "unet":
        build, inputs, stride = _unet_step, _inputs((images[i] for i in kept), settings.size).to(device), 1
    else:
        build, inputs = _decoder_step, encode((images[i] for i in kept), settings.size, device)
        stride = FeatureDecoder.stride
    y = _targets((masks[i] for i in kept), settings.size, stride).to(device)
    w = torch.tensor([max(float(confidence[i]), 1e-3) for i in kept], device=device)
    members = []
    for member in range(settings.members):  # each its own seed; the inputs are prepared once
        seed = settings.seed + 1000 * member
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            network, loss_of = build(inputs, settings, device)
        members.append(_train_member(network, loss_of, y, w, settings, seed, callback, member))
    return StudyModel(ensemble(members).eval(), settings, prior)


def _train_member(network: nn.Module, loss_of: Step, y: Tensor, w: Tensor, settings: StudySettings, seed: int,
                  callback: Callable[[int, int, float], None] | None, member: int) -> nn.Module:
    """Train one network on the kept masks' targets ``y`` and weights ``w``; its weights averaged over the last
    epochs. ``callback`` counts the steps of all members."""
    generator = torch.Generator().manual_seed(seed)
    batch = min(settings.batch, len(y))
    per_epoch = max(1, len(y) // batch)
    steps = settings.epochs * per_epoch
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps)
    # stochastic weight averaging (Izmailov et al., UAI 2018, arXiv:1803.05407) over the ends of the last epochs of
    # the one-cycle schedule, BatchNorm statistics averaged with the weights
    averaged, first = AveragedModel(network, use_buffers=True), steps - min(settings.average, settings.epochs) * per_epoch
    network.train()
    for step in range(steps):
        if step % per_epoch == 0:
            permutation = torch.randperm(len(y), generator=generator)
        rows = permutation[(step % per_epoch) * batch : (step % per_epoch + 1) * batch].to(y.device)
        loss = loss_of(rows, y[rows], w[rows], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step + 1 > first and (step + 1 - first) % per_epoch == 0:
            averaged.update_parameters(network)
        if callback is not None:
            callback(member * steps + step, settings.members * steps, float(loss.detach()))
    network.load_state_dict(averaged.module.state_dict())
    return network


def predict_probability(model: StudyModel, image: np.ndarray) -> np.ndarray:
    """(H, W) float32 foreground probability of the study network for one (H, W, C) float image: the mean over the
    image and its mirror image, and over the members of an ensemble (``StudySettings.members``)."""
    device, size = next(model.network.parameters()).device, model.settings.size
    members = model.network if isinstance(model.network, nn.ModuleList) else [model.network]
    with torch.no_grad():
        if model.settings.network == "unet":
            x = _inputs([image], size).to(device)
            logits = torch.stack([network(torch.cat([x, x.flip(-1)])) for network in members])
        else:
            features = pretrained_encoder(device).features(scaled_inputs(image, size).to(device))
            logits = torch.stack([network(features) for network in members])  # at the decoder's stride
        probability = torch.sigmoid(logits).mean(dim=0)  # (2, 1, s, s): the members' mean, the image and its mirror
        probability = (probability[:1] + probability[1:].flip(-1)) / 2
        probability = F.interpolate(probability, size=image.shape[:2], mode="bilinear", align_corners=False)
    return probability[0, 0].cpu().numpy()


def predict_mask(model: StudyModel, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The study mask of one (H, W, C) float image: ((H, W) bool mask kept within the model's prior
    (``foreground.keep_prior``), (H, W) float32 foreground probability, ``predict_probability``)."""
    probability = predict_probability(model, image)
    return keep_prior(probability, model.prior), probability
