from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from selfseg.transforms import affine_grid, random_affine_matrix, warp_affine

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
ROT90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])
NO_JITTER = {"max_rotation": 0.0, "scale": (1.0, 1.0), "max_translation": 0.0, "flip": 0.0}


pytestmark = pytest.mark.usefixtures("single_thread")


def _theta(m: torch.Tensor, batch: int) -> torch.Tensor:
    return m.expand(batch, 2, 3).clone()


@pytest.mark.parametrize("size", [(8, 8), (7, 13), (2, 3)])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_identity_warp_is_identity(size: tuple[int, int], mode: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    assert_close(warp_affine(x, _theta(IDENTITY, 2), mode=mode), x, atol=1e-6, rtol=1e-6)


def test_rot90_theta_is_torch_rot90() -> None:
    torch.manual_seed(1)
    x = torch.randn(2, 3, 9, 9)
    assert_close(warp_affine(x, _theta(ROT90, 2)), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=1e-5)
    x = torch.randn(1, 2, 10, 10)
    assert_close(warp_affine(x, _theta(ROT90, 1)), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=1e-5)


def test_horizontal_flip_theta_is_flip() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 1, 5, 7)
    flip = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert_close(warp_affine(x, _theta(flip, 2)), x.flip(-1), atol=1e-6, rtol=1e-6)


def test_size_argument_sets_output_size() -> None:
    torch.manual_seed(3)
    x = torch.randn(2, 3, 8, 12)
    out = warp_affine(x, _theta(IDENTITY, 2), size=(4, 6))
    assert out.shape == (2, 3, 4, 6)
    # Identity at half resolution, align_corners=False: each output pixel is the mean of a 2x2 block.
    assert_close(out, torch.nn.functional.avg_pool2d(x, 2), atol=1e-6, rtol=1e-6)
    assert warp_affine(x, _theta(IDENTITY, 2), size=(5, 3)).shape == (2, 3, 5, 3)


def test_warp_shape_errors() -> None:
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="x must have shape"):
        warp_affine(x[0], _theta(IDENTITY, 2))
    with pytest.raises(ValueError, match="theta must have shape"):
        warp_affine(x, _theta(IDENTITY, 1))
    with pytest.raises(ValueError, match="theta must have shape"):
        warp_affine(x, torch.eye(3).expand(2, 3, 3))


def test_random_affine_is_reproducible_and_varies() -> None:
    a = random_affine_matrix(4, 16, 24, generator=torch.Generator().manual_seed(5))
    b = random_affine_matrix(4, 16, 24, generator=torch.Generator().manual_seed(5))
    assert a.shape == (4, 2, 3) and a.dtype == torch.float32
    assert_close(a, b, atol=0, rtol=0)
    g = torch.Generator().manual_seed(5)
    first, second = random_affine_matrix(4, 16, 24, generator=g), random_affine_matrix(4, 16, 24, generator=g)
    assert_close(first, a, atol=0, rtol=0)
    assert not torch.allclose(first, second)
    assert not torch.allclose(a[0], a[1])  # matrices of one batch differ too
    c = random_affine_matrix(4, 16, 24, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(a, c)


def test_random_affine_without_jitter_is_identity() -> None:
    theta = random_affine_matrix(5, 10, 30, generator=torch.Generator().manual_seed(0), right_angles=False, **NO_JITTER)
    assert_close(theta, _theta(IDENTITY, 5), atol=1e-7, rtol=0)


def test_random_affine_determinant_and_translation_bounds() -> None:
    g = torch.Generator().manual_seed(7)
    theta = random_affine_matrix(256, 20, 40, generator=g, scale=(0.8, 1.25), max_translation=0.2)
    det = torch.linalg.det(theta[:, :, :2].double()).abs()
    assert (det >= 1 / 1.25**2 - 1e-5).all() and (det <= 1 / 0.8**2 + 1e-5).all()
    assert det.max() - det.min() > 0.3  # the scale is actually drawn
    assert (theta[:, :, 2].abs() <= 2 * 0.2 + 1e-6).all()
    assert theta[:, :, 2].abs().max() > 0.2
    # Flips: orientation-reversing (det < 0) roughly half the time at flip=0.5, never at flip=0.
    signs = torch.linalg.det(theta[:, :, :2].double()).sign()
    assert 64 < (signs < 0).sum() < 192
    theta0 = random_affine_matrix(64, 20, 40, generator=g, flip=0.0)
    assert (torch.linalg.det(theta0[:, :, :2].double()) > 0).all()


@pytest.mark.parametrize(("height", "width"), [(20, 40), (31, 9), (16, 16)])
def test_random_affine_is_a_pixel_space_similarity(height: int, width: int) -> None:
    # No shear for non-square images: in pixel units, the linear part is a scaled orthogonal matrix.
    g = torch.Generator().manual_seed(8)
    theta = random_affine_matrix(64, height, width, generator=g, max_rotation=30.0).double()
    d = torch.diag(torch.tensor([width / 2, height / 2], dtype=torch.float64))
    linear = d @ theta[:, :, :2] @ torch.linalg.inv(d)
    gram = linear @ linear.transpose(1, 2)
    scale2 = gram[:, 0, 0]
    assert_close(gram, scale2[:, None, None] * torch.eye(2, dtype=torch.float64), atol=1e-6, rtol=1e-6)


def test_right_angle_rotation_maps_centred_square_onto_itself_on_non_square_image() -> None:
    height, width = 20, 40
    blob = torch.zeros(1, 1, height, width)
    blob[..., 6:14, 16:24] = 1.0  # centred 8x8 square
    g = torch.Generator().manual_seed(9)
    theta = random_affine_matrix(16, height, width, generator=g, right_angles=True, **NO_JITTER)
    quarter_turns = set()
    for t in theta:
        # Every draw is a pure rotation by a multiple of 90 degrees (no jitter).
        angle = math.degrees(math.atan2(float(t[1, 0]) / (width / height), float(t[0, 0])))
        k = round(angle / 90) % 4
        quarter_turns.add(k)
        assert abs(angle - 90 * round(angle / 90)) < 1e-4
        out = warp_affine(blob, t[None])
        assert_close(out, blob, atol=1e-5, rtol=0)
    assert 1 in quarter_turns and 3 in quarter_turns  # the 90 and 270 degree draws were exercised


def test_right_angle_rotation_rotates_content_on_non_square_image() -> None:
    # An off-centre square moves where a 90-degree pixel-space rotation about the centre sends it.
    height, width = 20, 40
    blob = torch.zeros(1, 1, height, width)
    blob[..., 2:6, 18:22] = 1.0  # 4x4 square above the centre
    a = math.pi / 2
    aspect = width / height
    theta = torch.tensor([[[math.cos(a), -math.sin(a) / aspect, 0.0], [math.sin(a) * aspect, math.cos(a), 0.0]]])
    out = warp_affine(blob, theta)
    # out(p) = blob(R p) with R = [[0, -1], [1, 0]] on centre-relative pixel coordinates (u, v):
    # (u_in, v_in) = (-v_out, u_out), so the square above the centre (v_in in -7.5..-4.5,
    # u_in in -1.5..1.5) lands left of it (u_out in -7.5..-4.5, v_out in -1.5..1.5).
    expected = torch.zeros_like(blob)
    expected[..., 8:12, 12:16] = 1.0
    assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 24, 32), (3, 13, 7), (2, 1, 5)])
def test_affine_grid_equals_torch_and_runs_under_vmap(batch: int, height: int, width: int) -> None:
    theta = random_affine_matrix(batch, height, width, generator=torch.Generator().manual_seed(batch))
    expected = F.affine_grid(theta, [batch, 1, height, width], align_corners=False)
    assert torch.equal(affine_grid(theta, (height, width)), expected)
    batched = torch.func.vmap(lambda one: affine_grid(one[None], (height, width))[0])(theta)
    assert torch.equal(batched, expected)
