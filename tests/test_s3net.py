from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from selfseg.models import S3Net

SIZES = [(16, 16), (17, 23), (31, 9)]


pytestmark = pytest.mark.usefixtures("single_thread")


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("n_conv", [1, 2])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes_at_any_size(in_channels: int, n_conv: int, color: bool) -> None:
    torch.manual_seed(0)
    model = S3Net(in_channels, n_channels=6, n_conv=n_conv, color=color)
    assert len(model.blocks) == n_conv
    assert (model.color is not None) == color
    count = _param_count(model)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    for size in SIZES:
        image = torch.rand(2, in_channels, *size)
        scores, aux = model(image)
        assert scores.shape == (2, 6, *size) and aux.shape == (2, 6, *size)
        assert torch.isfinite(scores).all() and torch.isfinite(aux).all()
    # Nothing tied to the image size: no parameter or buffer created or resized by a forward pass.
    assert _param_count(model) == count
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    assert not any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())


def test_parameter_count_is_independent_of_image_size() -> None:
    torch.manual_seed(1)
    counts = set()
    for size in SIZES:
        model = S3Net(3, n_channels=8, n_conv=2, color=True)
        model(torch.rand(1, 3, *size))
        counts.add(_param_count(model))
    assert len(counts) == 1
    # And the count is what the architecture implies (c = 8, in = 3, two blocks, colour branch).
    c, cin = 8, 3
    conv = lambda i, o, k, bias=True: i * o * k * k + (o if bias else 0)  # noqa: E731
    bn = 2 * c
    dw = lambda k: conv(1, c, k)  # noqa: E731  (per-channel weight, c biases)
    block = conv(c, c, 1) + dw(5) + dw(3) + dw(5) + dw(7) + conv(3 * c, c, 1) + conv(c, c, 1) + bn
    expected = (
        conv(cin, c, 3) + bn  # stem
        + 2 * block
        + conv(c, c, 3) + conv(c, 27, 3) + bn  # deformable head: weight/bias + offset_mask conv
        + conv(c, c, 1) + bn  # classifier
        + conv(c, c, 1) + bn  # aux
        + conv(cin, c, 1, bias=False) + conv(c, c, 1) + bn  # colour attention
    )
    assert counts == {expected}


@pytest.mark.parametrize("color", [False, True])
def test_features_head_aux_compose_to_forward(color: bool) -> None:
    torch.manual_seed(2)
    model = S3Net(3, n_channels=6, n_conv=2, color=color)
    image = torch.rand(2, 3, 17, 23)
    model.train()
    model(image)  # populate BN running statistics with non-trivial values
    model.eval()
    scores, aux = model(image)
    features = model.features(image)
    assert features.shape == (2, 6, 17, 23)
    assert_close(model.head(features, image), scores, atol=1e-6, rtol=1e-6)
    assert_close(model.predict(image), scores, atol=1e-6, rtol=1e-6)
    assert_close(model.aux_head(features), aux, atol=1e-6, rtol=1e-6)
    # The documented structure: trunk = blocks(stem(x)), heads on top of it.
    assert_close(features, model.blocks(model.stem(image)), atol=1e-6, rtol=1e-6)
    assert_close(aux, model.aux(features), atol=1e-6, rtol=1e-6)
    # Train mode (batch statistics) composes the same way.
    model.train()
    scores, aux = model(image)
    features = model.features(image)
    assert_close(model.head(features, image), scores, atol=1e-5, rtol=1e-5)
    assert_close(model.aux_head(features), aux, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("color", [False, True])
def test_backward_gives_finite_gradients_everywhere(color: bool) -> None:
    torch.manual_seed(3)
    model = S3Net(3, n_channels=6, n_conv=2, color=color).train()
    image = torch.rand(1, 3, 13, 11)
    scores, aux = model(image)
    # Random weights: a plain sum would be constant after the final BatchNorm and give zero grads.
    loss = (scores * torch.randn_like(scores)).sum() + (aux * torch.randn_like(aux)).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_batch_items_are_independent_in_eval_mode() -> None:
    torch.manual_seed(4)
    model = S3Net(1, n_channels=6, n_conv=1).eval()
    images = torch.rand(3, 1, 12, 10)
    scores, aux = model(images)
    single, single_aux = model(images[1:2])
    assert_close(scores[1:2], single, atol=1e-5, rtol=1e-5)
    assert_close(aux[1:2], single_aux, atol=1e-5, rtol=1e-5)
