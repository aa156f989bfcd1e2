from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from selfseg.losses import (
    S3NetObjective,
    SelfLabelCrossEntropy,
    SpatialConsistencyLoss,
    TransformConsistencyLoss,
    self_label_cross_entropy,
    spatial_consistency_loss,
    transform_consistency_loss,
)
from selfseg.models import S3Net
from selfseg.transforms import random_affine_matrix, warp_affine

IDENTITY = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
ROT90 = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])


pytestmark = pytest.mark.usefixtures("single_thread")


def _one_hot_scores(labels: torch.Tensor, classes: int, margin: float = 100.0) -> torch.Tensor:
    """(B, H, W) labels -> (B, C, H, W) large-margin logits."""
    return margin * F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def _labels(batch: int, h: int, w: int, classes: int, seed: int) -> torch.Tensor:
    return torch.randint(0, classes, (batch, h, w), generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- self-label cross-entropy


def test_self_label_ce_values() -> None:
    scores = _one_hot_scores(_labels(2, 5, 7, 4, seed=0), 4)
    assert self_label_cross_entropy(scores).item() < 1e-6
    constant = torch.zeros(2, 6, 5, 7)
    assert_close(self_label_cross_entropy(constant), torch.tensor(math.log(6)))
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 4, 3)
    ref = F.cross_entropy(logits, logits.argmax(1))
    assert_close(self_label_cross_entropy(logits), ref)


def test_self_label_ce_has_gradient() -> None:
    torch.manual_seed(2)
    logits = torch.randn(1, 4, 6, 5, requires_grad=True)
    self_label_cross_entropy(logits).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # Gradient of CE against the argmax: softmax - one_hot(argmax), averaged over pixels.
    expected = (logits.softmax(1) - F.one_hot(logits.argmax(1), 4).permute(0, 3, 1, 2)) / 30
    assert_close(logits.grad, expected.detach())


# --------------------------------------------------------------------------- spatial consistency


def test_spatial_consistency_values() -> None:
    assert spatial_consistency_loss(torch.full((2, 3, 6, 5), 4.2)).item() == 0.0
    constant_per_channel = torch.arange(3.0).view(1, 3, 1, 1).expand(2, 3, 6, 5)
    assert spatial_consistency_loss(constant_per_channel).item() == 0.0
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]])
    # vertical |4-1|, |8-2| -> mean 4.5; horizontal |2-1|, |8-4| -> mean 2.5
    assert_close(spatial_consistency_loss(x), torch.tensor(7.0))
    two = torch.cat([x, -2 * x], dim=1)  # second channel doubles every difference
    assert_close(spatial_consistency_loss(two), torch.tensor((7.0 + 14.0) / 2))


def test_spatial_consistency_has_gradient() -> None:
    x = torch.tensor([[[[1.0, 2.0], [4.0, 8.0]]]], requires_grad=True)
    spatial_consistency_loss(x).backward()
    # d/dx of (|x10-x00| + |x11-x01|)/2 + (|x01-x00| + |x11-x10|)/2
    assert_close(x.grad, torch.tensor([[[[-1.0, 0.0], [0.0, 1.0]]]]))


# --------------------------------------------------------------------------- transform consistency


def test_transform_consistency_zero_under_identity() -> None:
    scores = _one_hot_scores(_labels(2, 9, 11, 5, seed=3), 5)
    theta = IDENTITY.expand(2, 2, 3)
    assert transform_consistency_loss(scores.clone(), scores, theta).item() < 1e-6


def test_transform_consistency_zero_under_exact_rotation() -> None:
    # The key property: the target is T applied to the scores, so the correctly rotated scores of
    # T(x) score zero.
    scores = _one_hot_scores(_labels(2, 10, 10, 5, seed=4), 5)
    theta = ROT90.expand(2, 2, 3)
    scores_t = torch.rot90(scores, 1, dims=(2, 3))
    assert transform_consistency_loss(scores_t, scores, theta).item() < 1e-6
    # ... and a 90-degree matrix drawn by random_affine_matrix (cos ~ 1e-8, not exactly 0) works too.
    theta_k = random_affine_matrix(
        64, 10, 10, generator=torch.Generator().manual_seed(0),
        max_rotation=0.0, scale=(1.0, 1.0), max_translation=0.0, flip=0.0,
    )
    index = int(((theta_k[:, 1, 0] - 1).abs() < 1e-5).nonzero()[0])
    assert transform_consistency_loss(scores_t, scores, theta_k[index : index + 1].expand(2, 2, 3)).item() < 1e-6


def test_transform_consistency_large_when_not_rotated() -> None:
    labels = _labels(1, 10, 10, 5, seed=5)
    assert not torch.equal(labels, torch.rot90(labels, 1, dims=(1, 2)))
    scores = _one_hot_scores(labels, 5)
    loss = transform_consistency_loss(scores.clone(), scores, ROT90)
    assert loss.item() > 1
    # Exactly: 100 per mismatched pixel, averaged over all (valid) pixels.
    mismatch = (labels != torch.rot90(labels, 1, dims=(1, 2))).float().mean()
    assert_close(loss, 100 * mismatch, atol=1e-3, rtol=1e-5)


def test_transform_consistency_at_lower_resolution() -> None:
    # Identity T rendered at half size: the target is the argmax of the 2x2 block means.
    block_labels = _labels(1, 4, 6, 3, seed=6)
    labels = block_labels.repeat_interleave(2, 1).repeat_interleave(2, 2)
    scores = _one_hot_scores(labels, 3)
    scores_t = _one_hot_scores(block_labels, 3)
    assert transform_consistency_loss(scores_t, scores, IDENTITY).item() < 1e-6
    wrong = _one_hot_scores((block_labels + 1) % 3, 3)
    assert_close(transform_consistency_loss(wrong, scores, IDENTITY), torch.tensor(100.0))


def test_transform_consistency_target_carries_no_gradient() -> None:
    torch.manual_seed(7)
    scores = torch.randn(1, 4, 8, 8, requires_grad=True)
    scores_t = torch.randn(1, 4, 8, 8, requires_grad=True)
    loss = transform_consistency_loss(scores_t, scores, ROT90)
    loss.backward()
    assert scores.grad is None
    assert scores_t.grad is not None and scores_t.grad.abs().sum() > 0
    # Equal to plain CE against the rotated argmax.
    target = torch.rot90(scores.detach(), 1, dims=(2, 3)).argmax(1)
    assert_close(loss, F.cross_entropy(scores_t, target))


def test_transform_consistency_ignores_pixels_from_outside() -> None:
    # Shift by +1.5 normalised units along x on a 16-wide image: output column j reads input column
    # j + 12, so only columns 0..3 have a source inside the image.
    torch.manual_seed(8)
    scores = torch.randn(2, 4, 6, 16)
    theta = torch.tensor([[[1.0, 0.0, 1.5], [0.0, 1.0, 0.0]]]).expand(2, 2, 3)
    scores_t = torch.randn(2, 4, 6, 16)
    loss = transform_consistency_loss(scores_t, scores, theta)
    expected = F.cross_entropy(scores_t[..., :4], scores[..., 12:].argmax(1))
    assert_close(loss, expected)
    garbage = scores_t.clone()
    garbage[..., 4:] = 1e3 * torch.randn(2, 4, 6, 12)
    assert_close(transform_consistency_loss(garbage, scores, theta), loss)
    # No valid pixel at all: zero, not NaN.
    far = torch.tensor([[[1.0, 0.0, 5.0], [0.0, 1.0, 0.0]]]).expand(2, 2, 3)
    assert transform_consistency_loss(scores_t, scores, far).item() == 0.0


def test_module_forms_equal_functions() -> None:
    torch.manual_seed(9)
    scores = torch.randn(2, 4, 7, 6)
    scores_t = torch.randn(2, 4, 5, 3)
    theta = random_affine_matrix(2, 7, 6, generator=torch.Generator().manual_seed(1))
    assert_close(SelfLabelCrossEntropy()(scores), self_label_cross_entropy(scores), atol=0, rtol=0)
    assert_close(SpatialConsistencyLoss()(scores), spatial_consistency_loss(scores), atol=0, rtol=0)
    assert_close(
        TransformConsistencyLoss()(scores_t, scores, theta),
        transform_consistency_loss(scores_t, scores, theta),
        atol=0,
        rtol=0,
    )


def test_wrong_rank_raises() -> None:
    x = torch.randn(4, 5, 6)
    with pytest.raises(ValueError, match="scores must have shape"):
        self_label_cross_entropy(x)
    with pytest.raises(ValueError, match="scores must have shape"):
        spatial_consistency_loss(x)
    with pytest.raises(ValueError, match="scores_t must have shape"):
        transform_consistency_loss(x, torch.randn(1, 4, 5, 6), IDENTITY)
    with pytest.raises(ValueError, match="scores must have shape"):
        transform_consistency_loss(torch.randn(1, 4, 5, 6), x, IDENTITY)
    with pytest.raises(ValueError):
        S3NetObjective()(S3Net(3, n_channels=4, n_conv=1), torch.rand(3, 8, 8), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="transform_resolution"):
        S3NetObjective(transform_resolution=0.0)
    with pytest.raises(ValueError, match="transform_resolution"):
        S3NetObjective(transform_resolution=1.5)


# --------------------------------------------------------------------------- S3-Net objective


def test_s3net_objective_terms_and_gradients() -> None:
    torch.manual_seed(10)
    model = S3Net(n_channels=8).train()
    image = torch.rand(1, 3, 24, 20)
    objective = S3NetObjective()
    scores, terms = objective(model, image, torch.Generator().manual_seed(11))
    assert scores.shape == (1, 8, 24, 20)
    assert set(terms) == {"ce", "transform", "spatial"}
    for name, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert terms["ce"].item() > 0 and terms["spatial"].item() > 0

    # The terms are the documented weighted losses (same generator -> same T; BN in train mode is
    # a pure function of the batch).
    theta = random_affine_matrix(1, 24, 20, generator=torch.Generator().manual_seed(11))
    image_t = warp_affine(image, theta, size=(12, 10), padding_mode="reflection")
    with torch.no_grad():
        ref_scores = model.head(model.features(image), image)
        ref_scores_t = model.aux_head(model.features(image_t))
    assert_close(scores.detach(), ref_scores, atol=1e-5, rtol=1e-5)
    assert_close(terms["ce"].detach(), 3.5 * self_label_cross_entropy(ref_scores), atol=1e-5, rtol=1e-5)
    assert_close(terms["spatial"].detach(), 4.0 * spatial_consistency_loss(ref_scores), atol=1e-5, rtol=1e-5)
    assert_close(
        terms["transform"].detach(),
        0.2 * transform_consistency_loss(ref_scores_t, ref_scores, theta),
        atol=1e-5,
        rtol=1e-5,
    )

    sum(terms.values()).backward()
    for param in (
        model.aux[0].weight,
        model.aux[0].bias,
        model.deform[0].weight,
        model.deform[0].offset_mask.weight,
        model.classifier[0].weight,
        model.stem[0].weight,
    ):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0


def test_s3net_objective_transform_term_trains_only_through_aux_branch() -> None:
    torch.manual_seed(12)
    model = S3Net(n_channels=8).train()
    image = torch.rand(1, 3, 24, 20)
    _, terms = S3NetObjective()(model, image, torch.Generator().manual_seed(13))
    terms["transform"].backward()
    assert model.aux[0].weight.grad is not None and model.aux[0].weight.grad.abs().sum() > 0
    # The target (main-head scores) is a constant for this term: no gradient into the main head.
    assert model.classifier[0].weight.grad is None
    assert model.deform[0].weight.grad is None


# --------------------------------------------------------------------------- MS-Former losses

from selfseg.losses import (  # noqa: E402
    InterScaleConsistencyLoss,
    IntraScaleStabilityLoss,
    MSFormerObjective,
    inter_scale_consistency_loss,
    intra_scale_stability_loss,
)
from selfseg.models import MSFormer  # noqa: E402

ZERO = torch.tensor(0.0)


def test_inter_scale_consistency_values() -> None:
    torch.manual_seed(20)
    a = torch.randn(2, 5, 5)
    assert_close(inter_scale_consistency_loss(a, a.clone()), ZERO, atol=1e-6, rtol=0)
    # Cosine per row: any positive scale per row leaves it at zero.
    scale = torch.rand(2, 5, 1) * 10 + 0.1
    assert_close(inter_scale_consistency_loss(a, scale * a), ZERO, atol=1e-6, rtol=0)
    assert_close(inter_scale_consistency_loss(a, -a), torch.tensor(2.0), atol=1e-6, rtol=0)
    eye = torch.eye(4).expand(3, 4, 4)
    rolled = torch.roll(eye, 1, dims=2)  # each row orthogonal to the same row of eye
    assert_close(inter_scale_consistency_loss(eye, rolled), torch.tensor(1.0), atol=1e-6, rtol=0)
    # Mean over rows: half the rows equal, half opposite -> (0 + 2) / 2.
    half = a.clone()
    half[:, :2] *= -1
    half[:, 2:] *= 3
    assert_close(inter_scale_consistency_loss(a[:, 1:], half[:, 1:]), torch.tensor(0.5), atol=1e-6, rtol=0)
    # Equal to the reference formula on random input.
    b = torch.randn(2, 5, 5)
    ref = (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean()
    assert_close(inter_scale_consistency_loss(a, b), ref)


def test_inter_scale_consistency_has_gradient_and_checks_shapes() -> None:
    torch.manual_seed(21)
    a = torch.randn(1, 4, 4, requires_grad=True)
    b = torch.randn(1, 4, 4, requires_grad=True)
    inter_scale_consistency_loss(a, b).backward()
    for t in (a, b):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"context_b must have shape \(1, 4, 4\), got \(1, 5, 5\)"):
        inter_scale_consistency_loss(torch.randn(1, 4, 4), torch.randn(1, 5, 5))
    with pytest.raises(ValueError, match=r"context_a must have shape \(B, D, D\), got \(4, 4\)"):
        inter_scale_consistency_loss(torch.randn(4, 4), torch.randn(4, 4))


def test_intra_scale_stability_values() -> None:
    eye = torch.eye(5).expand(2, 5, 5)
    assert_close(intra_scale_stability_loss(eye), ZERO, atol=1e-6, rtol=0)
    uniform = torch.full((1, 4, 4), 0.25)
    # (4 * 3/4 + 12 * 1/4) / 16
    assert_close(intra_scale_stability_loss(uniform), torch.tensor(0.375))
    torch.manual_seed(22)
    attention = torch.randn(3, 6, 6).softmax(-1)
    assert_close(intra_scale_stability_loss(attention), (attention - torch.eye(6)).abs().mean())


def test_intra_scale_stability_has_gradient_and_checks_shapes() -> None:
    logits = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(23), requires_grad=True)
    intra_scale_stability_loss(logits.softmax(-1)).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="attention must"):
        intra_scale_stability_loss(torch.rand(1, 4, 5))
    with pytest.raises(ValueError, match="attention must"):
        intra_scale_stability_loss(torch.rand(4, 4))


def test_msformer_module_forms_equal_functions() -> None:
    torch.manual_seed(24)
    a, b = torch.randn(2, 2, 6, 6)
    attention = torch.randn(2, 7, 7).softmax(-1)
    assert_close(InterScaleConsistencyLoss()(a, b), inter_scale_consistency_loss(a, b), atol=0, rtol=0)
    assert_close(IntraScaleStabilityLoss()(attention), intra_scale_stability_loss(attention), atol=0, rtol=0)


def _tiny_msformer(seed: int) -> MSFormer:
    torch.manual_seed(seed)
    return MSFormer(in_channels=3, n_channels=6, embed_dim=8, n_layers=1, patch_size=4).train()


@pytest.mark.parametrize(("weights", "shift"), [({}, 2), ({"ce_weight": 0.5, "inter_weight": 3.0, "intra_weight": 0.7}, 1)])
def test_msformer_objective_terms(weights: dict, shift: int) -> None:
    model = _tiny_msformer(25)
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(26))
    objective = MSFormerObjective(**weights, shift=shift)
    scores, terms = objective(model, image, torch.Generator().manual_seed(0))
    assert scores.shape == (1, 6, 24, 20)
    assert set(terms) == {"ce", "inter", "intra"}
    for name, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value.item() > 0, name
    # Recompute by hand in train mode: BN uses the batch statistics, so the same input gives the
    # same values (only the running statistics move).
    with torch.no_grad():
        ref_scores, context_fine, context_coarse = model(image)
        attention = model.shift_attention(ref_scores, shift)
    w = {"ce_weight": 1.0, "inter_weight": 2.0, "intra_weight": 1.2, **weights}
    assert_close(scores.detach(), ref_scores, atol=1e-5, rtol=1e-5)
    assert_close(terms["ce"].detach(), w["ce_weight"] * self_label_cross_entropy(ref_scores), atol=1e-5, rtol=1e-5)
    assert_close(
        terms["inter"].detach(),
        w["inter_weight"] * inter_scale_consistency_loss(context_fine, context_coarse),
        atol=1e-5,
        rtol=1e-5,
    )
    assert_close(
        terms["intra"].detach(), w["intra_weight"] * intra_scale_stability_loss(attention), atol=1e-5, rtol=1e-5
    )


def test_msformer_objective_uses_shift() -> None:
    model = _tiny_msformer(27)
    image = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(28))
    generator = torch.Generator().manual_seed(0)
    _, one = MSFormerObjective(shift=1)(model, image, generator)
    _, two = MSFormerObjective(shift=2)(model, image, generator)
    assert_close(one["ce"], two["ce"], atol=1e-6, rtol=1e-6)
    assert_close(one["inter"], two["inter"], atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        scores = model(image)[0]
        intra = {s: 1.2 * intra_scale_stability_loss(model.shift_attention(scores, s)) for s in (1, 2)}
    assert_close(one["intra"].detach(), intra[1], atol=1e-7, rtol=1e-6)
    assert_close(two["intra"].detach(), intra[2], atol=1e-7, rtol=1e-6)
    # The two shifts differ by far more than the float noise (about 7e-4 relative here).
    assert abs(one["intra"].item() - two["intra"].item()) > 2e-5
    with pytest.raises(ValueError, match="shift"):
        MSFormerObjective(shift=20)(model, image, generator)
