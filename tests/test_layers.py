from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from selfseg.models.layers import (
    AttentionBlock,
    ColorAttention,
    DeformConv2d,
    DepthwiseConv2d,
    InceptionLKA,
    deform_conv2d,
    depthwise_conv2d,
)

DW_CASES = [(3, 1), (5, 2), (7, 3)]
DW_SIZES = [(13, 17), (8, 8), (2, 2), (2, 5), (7, 4), (10, 11)]
TOL64 = {"atol": 1e-10, "rtol": 1e-10}


pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------- depthwise convolution


@pytest.mark.parametrize("size", DW_SIZES)
@pytest.mark.parametrize(("k", "d"), DW_CASES)
def test_depthwise_conv2d_matches_dilated_conv2d(k: int, d: int, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    c = 3
    x = torch.randn(2, c, *size, dtype=torch.float64)
    weight = torch.randn(c, 1, k, k, dtype=torch.float64)
    bias = torch.randn(c, dtype=torch.float64)
    ref = F.conv2d(x, weight, bias, dilation=d, padding=d * (k // 2), groups=c)
    out = depthwise_conv2d(x, weight, bias, dilation=d)
    assert out.shape == x.shape
    assert_close(out, ref, **TOL64)
    assert_close(depthwise_conv2d(x, weight, dilation=d), ref - bias.view(1, c, 1, 1), **TOL64)


@pytest.mark.parametrize("size", [(13, 17), (8, 8), (2, 3), (7, 4)])
@pytest.mark.parametrize(("k", "d"), DW_CASES)
def test_depthwise_conv2d_gradients_match(k: int, d: int, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    c = 2
    x = torch.randn(2, c, *size, dtype=torch.float64)
    weight = torch.randn(c, 1, k, k, dtype=torch.float64)
    bias = torch.randn(c, dtype=torch.float64)
    upstream = torch.randn(2, c, *size, dtype=torch.float64)

    def grads(fn):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
        (fn(*leaves) * upstream).sum().backward()
        return [t.grad for t in leaves]

    got = grads(lambda a, w, b: depthwise_conv2d(a, w, b, dilation=d))
    want = grads(lambda a, w, b: F.conv2d(a, w, b, dilation=d, padding=d * (k // 2), groups=c))
    for g, r in zip(got, want):
        assert g is not None
        assert_close(g, r, **TOL64)
    assert got[1].abs().sum() > 0


def test_depthwise_conv2d_rejects_bad_weight() -> None:
    x = torch.randn(1, 3, 5, 5)
    with pytest.raises(ValueError, match="weight must have shape"):
        depthwise_conv2d(x, torch.randn(4, 1, 3, 3))
    with pytest.raises(ValueError, match="weight must have shape"):
        depthwise_conv2d(x, torch.randn(3, 2, 3, 3))


@pytest.mark.parametrize(("k", "d"), DW_CASES)
def test_depthwise_module_is_a_drop_in_conv2d(k: int, d: int) -> None:
    torch.manual_seed(2)
    module = DepthwiseConv2d(4, k, d)
    ref = nn.Conv2d(4, 4, k, padding=d * (k // 2), dilation=d, groups=4)
    assert list(module.state_dict()) == list(ref.state_dict())
    for key, value in ref.state_dict().items():
        assert module.state_dict()[key].shape == value.shape
    ref.load_state_dict(module.state_dict())
    x = torch.randn(2, 4, 11, 9)
    assert_close(module(x), ref(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- I-LKA blocks


def _inception_lka_reference(m: InceptionLKA, x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]

    def dw(conv: nn.Conv2d, t: torch.Tensor) -> torch.Tensor:
        k, d = conv.kernel_size[0], conv.dilation[0]
        return F.conv2d(t, conv.weight, conv.bias, padding=d * (k // 2), dilation=d, groups=c)

    attn = dw(m.conv0, x)
    attn = m.conv1(torch.cat([dw(b, attn) for b in m.branches], dim=1))
    return x * attn


@pytest.mark.parametrize("size", [(8, 8), (13, 17), (9, 4), (3, 2)])
def test_inception_lka_shape_and_value(size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    m = InceptionLKA(4)
    x = torch.randn(2, 4, *size)
    out = m(x)
    assert out.shape == x.shape
    assert_close(out, _inception_lka_reference(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(8, 8), (13, 17), (9, 4), (3, 2)])
def test_attention_block_shape_and_value(size: tuple[int, int]) -> None:
    torch.manual_seed(4)
    m = AttentionBlock(4)
    x = torch.randn(2, 4, *size)
    out = m(x)
    assert out.shape == x.shape
    ref = x + m.proj_out(_inception_lka_reference(m.lka, F.gelu(m.proj_in(x))))
    assert_close(out, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- deformable convolution


def _zero_offset(b: int, taps: int, h: int, w: int) -> torch.Tensor:
    return torch.zeros(b, 2 * taps, h, w, dtype=torch.float64)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "k"),
    [(1, 1, 1, 3), (1, 0, 1, 3), (1, 0, 2, 3), (1, 2, 2, 3), (2, 1, 1, 3), (1, 2, 1, 5), (1, 1, 1, 2)],
)
def test_deform_conv2d_zero_offset_is_conv2d(stride: int, padding: int, dilation: int, k: int) -> None:
    torch.manual_seed(5)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    weight = torch.randn(4, 3, k, k, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    ref = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation)
    offset = _zero_offset(2, k * k, *ref.shape[-2:])
    out = deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation)
    assert_close(out, ref, atol=1e-9, rtol=1e-9)
    mask = torch.ones(2, k * k, *ref.shape[-2:], dtype=torch.float64)
    out = deform_conv2d(x, offset, weight, bias, mask, stride=stride, padding=padding, dilation=dilation)
    assert_close(out, ref, atol=1e-9, rtol=1e-9)


def _shifted_conv_reference(x, weight, bias, dy: int, dx: int) -> torch.Tensor:
    """3x3 conv, padding 1, of x sampled at (i + dy, j + dx) with zeros outside the image."""
    h, w = x.shape[-2:]
    p = 1 + max(abs(dy), abs(dx))
    xp = F.pad(x, (p, p, p, p))
    window = xp[:, :, p - 1 + dy : p - 1 + dy + h + 2, p - 1 + dx : p - 1 + dx + w + 2]
    return F.conv2d(window, weight, bias)


@pytest.mark.parametrize(("dy", "dx"), [(1, 0), (0, -2), (-1, 2), (2, 1)])
def test_deform_conv2d_integer_offset_is_shifted_conv(dy: int, dx: int) -> None:
    torch.manual_seed(6)
    x = torch.randn(2, 3, 8, 11, dtype=torch.float64)
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    offset = torch.empty(2, 9, 2, 8, 11, dtype=torch.float64)
    offset[:, :, 0], offset[:, :, 1] = dy, dx
    out = deform_conv2d(x, offset.reshape(2, 18, 8, 11), weight, bias, padding=1)
    ref = _shifted_conv_reference(x, weight, bias, dy, dx)
    assert_close(out, ref, atol=1e-9, rtol=1e-9)
    # Interior pixels (no padding reached): plain conv of the rolled image.
    rolled = torch.roll(x, shifts=(-dy, -dx), dims=(2, 3))
    interior = F.conv2d(rolled, weight, bias, padding=1)
    r0, r1 = 1 + max(0, -dy), 8 - 1 - max(0, dy)
    c0, c1 = 1 + max(0, -dx), 11 - 1 - max(0, dx)
    assert_close(out[..., r0:r1, c0:c1], interior[..., r0:r1, c0:c1], atol=1e-9, rtol=1e-9)


def test_deform_conv2d_per_tap_offset_moves_only_that_tap() -> None:
    # Tap order is row-major and each tap's pair is (dy, dx): moving the centre tap (index 4) by
    # dx=+1 equals moving the centre weight one column right.
    torch.manual_seed(7)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 18, 6, 7, dtype=torch.float64)
    offset[:, 2 * 4 + 1] = 1.0
    out = deform_conv2d(x, offset, weight, padding=1)
    moved = weight.clone()
    moved[:, :, 1, 2] += moved[:, :, 1, 1]
    moved[:, :, 1, 1] = 0
    # Interior columns only: the centre tap's sample never crosses the right border there.
    assert_close(out[..., :-1], F.conv2d(x, moved, padding=1)[..., :-1], atol=1e-9, rtol=1e-9)


def test_deform_conv2d_fractional_offset_interpolates() -> None:
    torch.manual_seed(8)
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    offset = torch.zeros(1, 18, 6, 6, dtype=torch.float64)
    offset[:, 0::2] = 0.25  # dy = 0.25 for every tap: linear blend of shifts 0 and 1
    out = deform_conv2d(x, offset, weight, padding=1)
    ref = 0.75 * _shifted_conv_reference(x, weight, None, 0, 0) + 0.25 * _shifted_conv_reference(x, weight, None, 1, 0)
    assert_close(out, ref, atol=1e-9, rtol=1e-9)


def _torchvision_bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's ``bilinear_interpolate`` of the CPU deform_conv2d kernel, on one (C, H, W) image."""
    height, width = img.shape[-2:]
    if y <= -1 or y >= height or x <= -1 or x >= width:
        return img.new_zeros(img.shape[0])
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    out = img.new_zeros(img.shape[0])
    for yy, xx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                        (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        if 0 <= yy < height and 0 <= xx < width:
            out = out + wgt * img[:, yy, xx]
    return out


def _naive_deform_conv2d(x, offset, weight, bias, mask, stride, padding, dilation):
    b, _, _, _ = x.shape
    c_out, c_in, kh, kw = weight.shape
    h_out, w_out = offset.shape[-2:]
    out = x.new_zeros(b, c_out, h_out, w_out)
    for n in range(b):
        for i in range(h_out):
            for j in range(w_out):
                acc = x.new_zeros(c_out)
                for ki in range(kh):
                    for kj in range(kw):
                        t = ki * kw + kj
                        y = i * stride - padding + ki * dilation + float(offset[n, 2 * t, i, j])
                        xx = j * stride - padding + kj * dilation + float(offset[n, 2 * t + 1, i, j])
                        v = _torchvision_bilinear(x[n], y, xx) * float(mask[n, t, i, j])
                        acc = acc + weight[:, :, ki, kj] @ v
                out[n, :, i, j] = acc + bias
    return out


@pytest.mark.parametrize(("stride", "padding", "dilation"), [(1, 1, 1), (2, 1, 1), (1, 2, 2), (1, 0, 1)])
def test_deform_conv2d_matches_naive_torchvision_semantics(stride: int, padding: int, dilation: int) -> None:
    # Random fractional offsets up to +-2.5 px, so many samples fall in the border zone (-1, 0),
    # (H - 1, H) and fully outside: all must follow torchvision's zero-outside bilinear rule.
    torch.manual_seed(14)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    bias = torch.randn(3, dtype=torch.float64)
    h_out = (5 + 2 * padding - dilation * 2 - 1) // stride + 1
    w_out = (6 + 2 * padding - dilation * 2 - 1) // stride + 1
    offset = 5 * torch.rand(2, 18, h_out, w_out, dtype=torch.float64) - 2.5
    mask = torch.rand(2, 9, h_out, w_out, dtype=torch.float64)
    out = deform_conv2d(x, offset, weight, bias, mask, stride=stride, padding=padding, dilation=dilation)
    ref = _naive_deform_conv2d(x, offset, weight, bias, mask, stride, padding, dilation)
    assert out.shape == ref.shape
    assert_close(out, ref, atol=1e-9, rtol=1e-9)


def test_deform_conv2d_mask_half_halves_output() -> None:
    torch.manual_seed(9)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    offset = 0.3 * torch.randn(2, 18, 7, 5, dtype=torch.float64)
    mask = torch.full((2, 9, 7, 5), 0.5, dtype=torch.float64)
    full = deform_conv2d(x, offset, weight, padding=1)
    assert_close(deform_conv2d(x, offset, weight, mask=mask, padding=1), 0.5 * full, atol=1e-10, rtol=1e-10)
    # A mask zeroing one tap equals a weight with that tap removed (zero offsets).
    mask = torch.ones(2, 9, 7, 5, dtype=torch.float64)
    mask[:, 3] = 0
    w3 = weight.clone()
    w3[:, :, 1, 0] = 0
    out = deform_conv2d(x, torch.zeros_like(offset), weight, mask=mask, padding=1)
    assert_close(out, F.conv2d(x, w3, padding=1), atol=1e-9, rtol=1e-9)


def test_deform_conv2d_gradients_reach_all_inputs() -> None:
    torch.manual_seed(10)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    offset = (0.3 + 0.4 * torch.rand(1, 18, 5, 4, dtype=torch.float64)).requires_grad_(True)
    mask = torch.rand(1, 9, 5, 4, dtype=torch.float64).requires_grad_(True)
    weight = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    out = deform_conv2d(x, offset, weight, bias, mask, padding=1)
    (out * torch.randn_like(out)).sum().backward()
    for t in (x, offset, mask, weight, bias):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # And the gradients are the right ones (offsets stay strictly inside their bilinear cells).
    assert torch.autograd.gradcheck(
        lambda a, o, m, w, b: deform_conv2d(a, o, w, b, m, padding=1),
        (x.detach().requires_grad_(), offset.detach().requires_grad_(), mask.detach().requires_grad_(),
         weight.detach().requires_grad_(), bias.detach().requires_grad_()),
        eps=1e-6,
        atol=1e-5,
    )


def test_deform_conv2d_shape_errors() -> None:
    x = torch.randn(2, 3, 6, 5)
    w = torch.randn(4, 3, 3, 3)
    off = torch.zeros(2, 18, 6, 5)
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv2d(x, torch.zeros(2, 18, 4, 3), w, padding=1)  # size for padding 0
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv2d(x, torch.zeros(2, 9, 6, 5), w, padding=1)
    with pytest.raises(ValueError, match="offset must have shape"):
        deform_conv2d(x, torch.zeros(1, 18, 6, 5), w, padding=1)
    with pytest.raises(ValueError, match="mask must have shape"):
        deform_conv2d(x, off, w, mask=torch.ones(2, 18, 6, 5), padding=1)
    with pytest.raises(ValueError, match="weight must have shape"):
        deform_conv2d(x, off, torch.randn(4, 2, 3, 3), padding=1)
    with pytest.raises(ValueError, match="input must have shape"):
        deform_conv2d(x[0], off, w, padding=1)


@pytest.mark.parametrize(("batch", "size"), [(1, (8, 8)), (3, (11, 7)), (2, (1, 5))])
def test_deform_conv_module_starts_as_half_conv(batch: int, size: tuple[int, int]) -> None:
    torch.manual_seed(11)
    m = DeformConv2d(3, 4, 3)
    x = torch.randn(batch, 3, *size)
    out = m(x)
    assert out.shape == (batch, 4, *size)
    ref = 0.5 * F.conv2d(x, m.weight, None, padding=1) + m.bias.view(1, 4, 1, 1)
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    out_nb = DeformConv2d(3, 4, 5, bias=False)
    assert out_nb.bias is None
    assert out_nb(x).shape == (batch, 4, *size)
    names = {n for n, _ in m.named_parameters()}
    assert names == {"weight", "bias", "offset_mask.weight", "offset_mask.bias"}


def test_deform_conv_module_offset_predictor_gets_gradient() -> None:
    torch.manual_seed(12)
    m = DeformConv2d(3, 4, 3)
    x = torch.randn(2, 3, 9, 6)
    out = m(x)
    (out * torch.randn_like(out)).sum().backward()
    for p in (m.weight, m.bias, m.offset_mask.weight, m.offset_mask.bias):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # Both the offset part and the mask part of the predictor are trained.
    g = m.offset_mask.weight.grad
    assert g[:18].abs().sum() > 0 and g[18:].abs().sum() > 0


# --------------------------------------------------------------------------- colour attention


@pytest.mark.parametrize(("image_channels", "size"), [(1, (6, 6)), (3, (5, 9))])
def test_color_attention_shape_and_value(image_channels: int, size: tuple[int, int]) -> None:
    torch.manual_seed(13)
    m = ColorAttention(image_channels, 4).eval()
    scores = torch.randn(2, 4, *size)
    image = torch.rand(2, image_channels, *size)
    out = m(scores, image)
    assert out.shape == scores.shape

    def affinity(f: torch.Tensor) -> torch.Tensor:
        f = f.flatten(2)
        f = f / f.norm(dim=-1, keepdim=True)
        return f @ torch.softmax(f.transpose(1, 2), dim=-1)

    attn = affinity(scores) + affinity(m.embed(image))
    assert attn.shape == (2, 4, 4)
    ref = m.bn(m.proj((attn @ scores.flatten(2)).view_as(scores)))
    assert_close(out, ref, atol=1e-5, rtol=1e-5)
    m.train()
    (m(scores, image) * torch.randn_like(scores)).sum().backward()
    assert m.embed.weight.grad is not None and m.embed.weight.grad.abs().sum() > 0
