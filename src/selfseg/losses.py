"""Self-supervised losses, each as a function and a module, and the per-method objectives.

All score tensors are (B, C, H, W) class scores (logits); targets come from the scores themselves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfseg.checks import check_shape
from selfseg.transforms import random_affine_matrix, warp_affine

__all__ = [
    "DFCObjective",
    "InterScaleConsistencyLoss",
    "IntraScaleStabilityLoss",
    "MSFormerObjective",
    "S3NetObjective",
    "SelfLabelCrossEntropy",
    "SpatialConsistencyLoss",
    "TransformConsistencyLoss",
    "inter_scale_consistency_loss",
    "intra_scale_stability_loss",
    "self_label_cross_entropy",
    "spatial_consistency_loss",
    "transform_consistency_loss",
]


_SCORES = ("B", "C", "H", "W")


def self_label_cross_entropy(scores: Tensor) -> Tensor:
    """Cross-entropy of (B, C, H, W) scores against their own per-pixel argmax. Scalar."""
    check_shape("scores", scores, _SCORES)
    return F.cross_entropy(scores, scores.detach().argmax(dim=1))


def spatial_consistency_loss(scores: Tensor) -> Tensor:
    """Mean absolute difference of the responses of vertical and horizontal neighbours. Scalar.

    Differentiable, unlike the released code's Sobel filter on an argmax colour image; zero for a
    spatially constant response map.
    """
    check_shape("scores", scores, _SCORES)
    dy = (scores[:, :, 1:, :] - scores[:, :, :-1, :]).abs().mean()
    dx = (scores[:, :, :, 1:] - scores[:, :, :, :-1]).abs().mean()
    return dy + dx


def transform_consistency_loss(scores_t: Tensor, scores: Tensor, theta: Tensor) -> Tensor:
    """Cross-entropy of the scores of T(x) against the argmax of T applied to the scores of x. Scalar.

    Args:
        scores_t: (B, C, h, w) scores the network gives the transformed image.
        scores: (B, C, H, W) scores of the untransformed image (a constant target: no gradient).
        theta: (B, 2, 3) the transform T, as given to ``warp_affine``.

    Only pixels of T(x) whose source lies inside the image count; zero when none does.
    """
    check_shape("scores_t", scores_t, _SCORES)
    check_shape("scores", scores, _SCORES)
    size = tuple(scores_t.shape[-2:])
    with torch.no_grad():
        target = warp_affine(scores.detach(), theta, size=size).argmax(dim=1)
        ones = torch.ones_like(scores[:, :1])
        valid = warp_affine(ones, theta, size=size, mode="nearest")[:, 0] > 0.5
    per_pixel = F.cross_entropy(scores_t, target, reduction="none")
    return (per_pixel * valid).sum() / valid.sum().clamp_min(1)


def inter_scale_consistency_loss(context_a: Tensor, context_b: Tensor) -> Tensor:
    """Mean over rows of ``1 - cos(row of A, row of B)`` for (B, D, D) context matrices. Scalar.

    Zero when the two branches' global contexts point the same way, row by row (the authors' code
    uses ``CosineEmbeddingLoss`` with target 1, which is this).
    """
    check_shape("context_a", context_a, ("B", "D", "D"))
    check_shape("context_b", context_b, tuple(context_a.shape))
    return (1 - F.cosine_similarity(context_a, context_b, dim=-1)).mean()


def intra_scale_stability_loss(attention: Tensor) -> Tensor:
    """Mean absolute difference between (B, N, N) attention and the identity. Scalar.

    Zero when every patch of the score map attends only to itself in the shifted copy.
    """
    check_shape("attention", attention, ("B", "N", "N"))
    check_shape("attention", attention, ("B", attention.shape[2], attention.shape[2]))  # square
    eye = torch.eye(attention.shape[1], device=attention.device, dtype=attention.dtype)
    return (attention - eye).abs().mean()


class SelfLabelCrossEntropy(nn.Module):
    """Module form of ``self_label_cross_entropy``."""

    def forward(self, scores: Tensor) -> Tensor:
        return self_label_cross_entropy(scores)


class SpatialConsistencyLoss(nn.Module):
    """Module form of ``spatial_consistency_loss``."""

    def forward(self, scores: Tensor) -> Tensor:
        return spatial_consistency_loss(scores)


class TransformConsistencyLoss(nn.Module):
    """Module form of ``transform_consistency_loss``."""

    def forward(self, scores_t: Tensor, scores: Tensor, theta: Tensor) -> Tensor:
        return transform_consistency_loss(scores_t, scores, theta)


class InterScaleConsistencyLoss(nn.Module):
    """Module form of ``inter_scale_consistency_loss``."""

    def forward(self, context_a: Tensor, context_b: Tensor) -> Tensor:
        return inter_scale_consistency_loss(context_a, context_b)


class IntraScaleStabilityLoss(nn.Module):
    """Module form of ``intra_scale_stability_loss``."""

    def forward(self, attention: Tensor) -> Tensor:
        return intra_scale_stability_loss(attention)


class _Objective(nn.Module):
    """An objective for one iteration in two steps, so that a batched fit can draw each model's randomness
    from that model's generator and run the deterministic rest under ``torch.func.vmap``:
    ``forward(model, image, generator) == terms(model, image, draw(height, width, generator))``."""

    def draw(self, height: int, width: int, generator: torch.Generator) -> Tensor | None:
        """The iteration's random draws for an (height, width) image, on the CPU; None: nothing is drawn."""
        return None

    def forward(
        self, model: nn.Module, image: Tensor, generator: torch.Generator
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``image`` (1, C, H, W) -> (scores (1, K, H, W), weighted loss terms)."""
        return self.terms(model, image, self.draw(*image.shape[-2:], generator))


class S3NetObjective(_Objective):
    """The S3-Net training objective for one iteration.

    Draws a random affine T, runs the network on x (main head) and on T(x) (auxiliary head), and
    returns the weighted loss terms ``ce``, ``transform`` and ``spatial``. T(x) is rendered at
    ``transform_resolution`` times the working size: a fixed zoom-out folded into T that makes the
    transformed pass four times cheaper at the default 0.5.
    """

    def __init__(
        self,
        ce_weight: float = 3.5,
        transform_weight: float = 0.2,
        spatial_weight: float = 4.0,
        transform_resolution: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0 < transform_resolution <= 1:
            raise ValueError(f"transform_resolution must be in (0, 1], got {transform_resolution}")
        self.ce_weight = ce_weight
        self.transform_weight = transform_weight
        self.spatial_weight = spatial_weight
        self.transform_resolution = transform_resolution

    def draw(self, height: int, width: int, generator: torch.Generator) -> Tensor:
        """The iteration's random affine T: (1, 2, 3), ``random_affine_matrix`` on the CPU."""
        return random_affine_matrix(1, height, width, generator=generator)

    def terms(self, model: nn.Module, image: Tensor, theta: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``image`` (1, C, H, W) and T from ``draw`` -> (scores (1, K, H, W), weighted loss terms)."""
        height, width = image.shape[-2:]
        theta = theta.to(image.device)
        size_t = (max(2, round(height * self.transform_resolution)), max(2, round(width * self.transform_resolution)))
        image_t = warp_affine(image, theta, size=size_t, padding_mode="reflection")
        scores = model.predict(image)
        scores_t = model.aux_head(model.features(image_t))
        terms = {
            "ce": self.ce_weight * self_label_cross_entropy(scores),
            "transform": self.transform_weight * transform_consistency_loss(scores_t, scores, theta),
            "spatial": self.spatial_weight * spatial_consistency_loss(scores),
        }
        return scores, terms


class MSFormerObjective(_Objective):
    """The MS-Former training objective for one iteration.

    Returns the weighted terms ``ce`` (scores against their argmax), ``inter`` (fine against coarse
    context) and ``intra`` (attention between the score map and its copy shifted by ``shift``
    pixels diagonally, against the identity). The paper shifts by 2 pixels, the released code by 1.
    """

    def __init__(
        self, ce_weight: float = 1.0, inter_weight: float = 2.0, intra_weight: float = 1.2, shift: int = 2
    ) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.inter_weight = inter_weight
        self.intra_weight = intra_weight
        self.shift = shift

    def terms(self, model: nn.Module, image: Tensor, drawn: None) -> tuple[Tensor, dict[str, Tensor]]:
        """``image`` (1, C, H, W) -> (scores (1, K, H, W), weighted loss terms); nothing is drawn."""
        scores, context_fine, context_coarse = model(image)
        terms = {
            "ce": self.ce_weight * self_label_cross_entropy(scores),
            "inter": self.inter_weight * inter_scale_consistency_loss(context_fine, context_coarse),
            "intra": self.intra_weight * intra_scale_stability_loss(model.shift_attention(scores, self.shift)),
        }
        return scores, terms


class DFCObjective(_Objective):
    """The training objective of DFC (Kim & Kanezaki, IEEE TIP 2020) for one iteration.

    Returns the weighted terms ``similarity`` (cross-entropy of the response map against its own
    per-pixel argmax, ``stepsize_sim`` in the authors' ``demo.py``) and ``continuity`` (mean absolute
    vertical plus mean absolute horizontal difference of the response map, their L1 losses against
    zero, ``stepsize_con``). Both weights are 1 in the released code.
    """

    def __init__(self, similarity_weight: float = 1.0, continuity_weight: float = 1.0) -> None:
        super().__init__()
        self.similarity_weight = similarity_weight
        self.continuity_weight = continuity_weight

    def terms(self, model: nn.Module, image: Tensor, drawn: None) -> tuple[Tensor, dict[str, Tensor]]:
        """``image`` (1, C, H, W) -> (scores (1, K, H, W), weighted loss terms); nothing is drawn."""
        scores = model.predict(image)
        terms = {
            "similarity": self.similarity_weight * self_label_cross_entropy(scores),
            "continuity": self.continuity_weight * spatial_consistency_loss(scores),
        }
        return scores, terms
