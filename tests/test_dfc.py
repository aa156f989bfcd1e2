"""DFC (Kim & Kanezaki, TIP 2020): network shapes and structure, objective terms and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from selfseg.losses import DFCObjective, self_label_cross_entropy, spatial_consistency_loss
from selfseg.models import DFC

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = [(13, 17), (17, 13), (9, 9), (1, 5)]


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("n_conv", [1, 2, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_forward_shapes_at_any_size(in_channels: int, n_conv: int) -> None:
    torch.manual_seed(0)
    model = DFC(in_channels, n_channels=6, n_conv=n_conv)
    count = _param_count(model)
    for size in SIZES:
        image = torch.rand(2, in_channels, *size)
        scores = model(image)
        assert scores.shape == (2, 6, *size)
        assert torch.isfinite(scores).all()
    assert _param_count(model) == count


def test_defaults_are_the_released_code() -> None:
    model = DFC()
    assert model.conv1.in_channels == 3 and model.conv1.out_channels == 100  # nChannel = 100
    assert len(model.conv2) == 1  # nConv = 2
    objective = DFCObjective()
    assert objective.similarity_weight == 1.0 and objective.continuity_weight == 1.0


@pytest.mark.parametrize("n_conv", [1, 2, 3])
def test_layer_structure_and_parameter_count(n_conv: int) -> None:
    c, cin = 6, 3
    model = DFC(cin, n_channels=c, n_conv=n_conv)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == n_conv + 1 and len(bns) == n_conv + 1
    assert [m.kernel_size for m in convs] == [(3, 3)] * n_conv + [(1, 1)]
    assert all(m.stride == (1, 1) and m.bias is not None for m in convs)
    assert [m.padding for m in convs] == [(1, 1)] * n_conv + [(0, 0)]
    assert all(m.num_features == c for m in bns)
    # The layer names of the authors' MyNet, so its state dicts load unchanged.
    names = {k.rsplit(".", 1)[0] for k in model.state_dict()}
    stacked = {f"{prefix}.{i}" for prefix in ("conv2", "bn2") for i in range(n_conv - 1)}
    assert names == {"conv1", "bn1", "conv3", "bn3"} | stacked
    conv = lambda i, o, k: i * o * k * k + o  # noqa: E731
    bn = 2 * c
    expected = conv(cin, c, 3) + bn + (n_conv - 1) * (conv(c, c, 3) + bn) + conv(c, c, 1) + bn
    assert _param_count(model) == expected


def test_n_conv_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DFC(3, n_channels=6, n_conv=0)


def test_forward_is_conv_relu_bn_stack() -> None:
    torch.manual_seed(1)
    model = DFC(3, n_channels=6, n_conv=3).train()
    image = torch.rand(1, 3, 13, 17)
    model(image)  # non-trivial running statistics for the eval-mode check
    for mode in (True, False):
        model.train(mode)
        x = model.bn1(F.relu(model.conv1(image)))
        for i in range(2):
            x = model.bn2[i](F.relu(model.conv2[i](x)))
        expected = model.bn3(model.conv3(x))
        assert_close(model(image), expected)
        assert_close(model.predict(image), model(image))


@pytest.mark.parametrize("weights", [(1.0, 1.0), (0.5, 3.0)])
def test_objective_terms_are_weighted_ce_and_continuity(weights: tuple[float, float]) -> None:
    torch.manual_seed(2)
    model = DFC(3, n_channels=6, n_conv=2).train()
    image = torch.rand(1, 3, 13, 17)
    objective = DFCObjective(similarity_weight=weights[0], continuity_weight=weights[1])
    scores, terms = objective(model, image, torch.Generator().manual_seed(0))
    assert set(terms) == {"similarity", "continuity"}
    assert scores.shape == (1, 6, 13, 17)
    reference = model(image)  # train mode: batch statistics, so the same output again
    assert_close(scores, reference)
    assert_close(terms["similarity"], weights[0] * self_label_cross_entropy(reference))
    assert_close(terms["continuity"], weights[1] * spatial_consistency_loss(reference))
    assert all(t.dim() == 0 for t in terms.values())


def test_objective_matches_the_released_demo_loss() -> None:
    """The loss of demo.py, written its way: (H*W, C) rows, CE against argmax, L1 against zeros."""
    torch.manual_seed(3)
    n_channels, height, width = 6, 13, 17
    model = DFC(3, n_channels=n_channels, n_conv=2).train()
    image = torch.rand(1, 3, height, width)
    _, terms = DFCObjective()(model, image, torch.Generator())
    output = model(image)[0].permute(1, 2, 0).contiguous().view(-1, n_channels)
    output_hp = output.reshape(height, width, n_channels)
    hpy = output_hp[1:, :, :] - output_hp[:-1, :, :]
    hpz = output_hp[:, 1:, :] - output_hp[:, :-1, :]
    lhpy = nn.L1Loss()(hpy, torch.zeros(height - 1, width, n_channels))
    lhpz = nn.L1Loss()(hpz, torch.zeros(height, width - 1, n_channels))
    target = output.argmax(dim=1)
    assert_close(terms["similarity"], nn.CrossEntropyLoss()(output, target))
    assert_close(terms["continuity"], lhpy + lhpz)


def test_continuity_is_zero_for_a_spatially_constant_response() -> None:
    torch.manual_seed(4)
    model = DFC(3, n_channels=6, n_conv=2).train()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()  # each conv gives its bias everywhere: a constant map
    image = torch.rand(1, 3, 13, 17)
    scores, terms = DFCObjective()(model, image, torch.Generator())
    assert (scores == scores[:, :, :1, :1]).all()
    assert terms["continuity"].item() == 0.0
    assert spatial_consistency_loss(torch.randn(1, 6, 1, 1).expand(1, 6, 13, 17)).item() == 0.0


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(5)
    model = DFC(3, n_channels=6, n_conv=3).train()
    image = torch.rand(1, 3, 13, 17)
    _, terms = DFCObjective()(model, image, torch.Generator())
    sum(terms.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_engine_fits_dfc_with_its_defaults() -> None:
    from selfseg.engine import METHODS, segment

    spec = METHODS["dfc"]
    assert (spec.lr, spec.max_iter, spec.min_labels) == (0.1, 1000, 3)
    image = torch.rand(20, 24, 3, generator=torch.Generator().manual_seed(0)).numpy()
    result = segment(image, method="dfc", size=None, max_iter=2, n_channels=6)
    assert result.labels.shape == (20, 24) and result.iterations == 2
    assert set(result.history[0]) == {"similarity", "continuity", "total", "n_labels", "changed"}
