"""Random affine transforms and warps for the transformation-consistency loss, and the square resize of the study
network's inputs (plain PyTorch).

Matrices follow ``F.affine_grid`` (align_corners=False): a (B, 2, 3) matrix maps normalised output
coordinates to normalised input coordinates, so ``warp_affine(x, theta)(p) = x(theta @ p)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from selfseg.checks import check_shape

__all__ = ["affine_grid", "random_affine_matrix", "resize_square", "warp_affine"]


def resize_square(array: np.ndarray, size: int) -> Tensor:
    """(C, size, size) float32: an (H, W) or (H, W, C) array resized with antialiased bilinear interpolation."""
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    return F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def random_affine_matrix(
    batch: int,
    height: int,
    width: int,
    *,
    generator: torch.Generator | None = None,
    max_rotation: float = 15.0,
    right_angles: bool = True,
    scale: tuple[float, float] = (0.9, 1.1),
    max_translation: float = 0.1,
    flip: float = 0.5,
) -> Tensor:
    """Draw (B, 2, 3) affine matrices for (height, width) images (float32, CPU).

    Each transform is a rotation by ``90 * k`` degrees (k uniform in 0..3 when ``right_angles``) plus
    a uniform angle in [-max_rotation, max_rotation], an isotropic scale drawn uniformly in ``scale``,
    a translation of up to ``max_translation`` of the image size per axis and, with probability
    ``flip``, a horizontal flip. Rotation and scale act in pixel units, so non-square images are not
    sheared.
    """
    def uniform(low: float, high: float) -> Tensor:
        return low + (high - low) * torch.rand(batch, generator=generator)

    angle = uniform(-max_rotation, max_rotation) * (math.pi / 180)
    if right_angles:
        angle = angle + torch.randint(0, 4, (batch,), generator=generator) * (math.pi / 2)
    zoom = uniform(*scale)
    mirror = torch.where(torch.rand(batch, generator=generator) < flip, -1.0, 1.0)
    shift = uniform(-max_translation, max_translation), uniform(-max_translation, max_translation)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # Pixel-space rotation expressed in normalised coordinates: D^-1 R D with D = diag(W, H) / 2.
    aspect = width / height
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = cos * mirror
    theta[:, 0, 1] = -sin / aspect
    theta[:, 1, 0] = sin * aspect * mirror
    theta[:, 1, 1] = cos
    theta[:, 0, 2] = 2 * shift[0]
    theta[:, 1, 2] = 2 * shift[1]
    return theta


def _normalised_coordinates(steps: int, like: Tensor) -> Tensor:
    """Pixel centres of ``steps`` pixels in [-1, 1] coordinates (align_corners=False), as ``F.affine_grid``
    computes them."""
    return torch.linspace(-1, 1, steps, dtype=like.dtype, device=like.device) * (steps - 1) / steps


def affine_grid(theta: Tensor, size: tuple[int, int]) -> Tensor:
    """``F.affine_grid(theta, (B, *, *size), align_corners=False)``, the same numbers, in operations that
    ``torch.func.vmap`` batches (it has no rule for ``affine_grid_generator``). (B, 2, 3) -> (B, H, W, 2).

    >>> theta = torch.tensor([[[0.5, 0.1, 0.2], [-0.3, 0.9, 0.0]]])
    >>> torch.equal(affine_grid(theta, (5, 7)), F.affine_grid(theta, [1, 1, 5, 7], align_corners=False))
    True
    """
    height, width = size
    base = torch.ones(1, height, width, 3, dtype=theta.dtype, device=theta.device)
    base[..., 0] = _normalised_coordinates(width, theta)
    base[..., 1] = _normalised_coordinates(height, theta)[:, None]
    return (base.view(1, height * width, 3) @ theta.transpose(1, 2)).view(theta.shape[0], height, width, 2)


def warp_affine(
    x: Tensor,
    theta: Tensor,
    *,
    size: tuple[int, int] | None = None,
    mode: str = "bilinear",
    padding_mode: str = "zeros",
) -> Tensor:
    """Warp (B, C, H, W) by (B, 2, 3) ``theta``; output (B, C, *size), ``size`` defaulting to (H, W)."""
    check_shape("x", x, ("B", "C", "H", "W"))
    check_shape("theta", theta, (x.shape[0], 2, 3))
    out_size = tuple(x.shape[-2:]) if size is None else tuple(size)
    grid = affine_grid(theta.to(x), out_size)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
