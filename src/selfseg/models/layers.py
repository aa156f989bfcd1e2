"""Layers shared by the models: I-LKA attention, modulated deformable convolution, colour attention.

Every operation that is more than a stock ``torch.nn`` layer comes as a function (``deform_conv2d``)
and a module (``DeformConv2d``), in plain PyTorch so it runs on any device without compiled ops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from selfseg.checks import check_shape

__all__ = [
    "AttentionBlock",
    "ColorAttention",
    "DeformConv2d",
    "DepthwiseConv2d",
    "InceptionLKA",
    "deform_conv2d",
    "depthwise_conv2d",
]


def depthwise_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, dilation: int = 1) -> Tensor:
    """'Same' depthwise convolution, (B, C, H, W) -> (B, C, H, W); ``weight`` (C, 1, k, k), k odd.

    A dilated kernel only ever mixes pixels of the same phase (row mod d, column mod d), so it is run
    as an undilated kernel on the d*d phase images (``pixel_unshuffle``): the same result, faster on
    CPU, where dilated depthwise kernels are slow.
    """
    check_shape("weight", weight, (x.shape[1], 1, "k", "k"))
    pad = weight.shape[-1] // 2
    if dilation == 1:
        return F.conv2d(x, weight, bias, padding=pad, groups=x.shape[1])
    h, w = x.shape[-2:]
    phases = F.pixel_unshuffle(F.pad(x, (0, -w % dilation, 0, -h % dilation)), dilation)
    n = dilation * dilation
    out = F.conv2d(
        phases,
        weight.repeat_interleave(n, dim=0),
        None if bias is None else bias.repeat_interleave(n),
        padding=pad,
        groups=phases.shape[1],
    )
    return F.pixel_shuffle(out, dilation)[..., :h, :w]


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(C, C, k, padding=dilation * (k // 2), dilation=dilation, groups=C)``, computed by
    ``depthwise_conv2d``. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1) -> None:
        super().__init__(
            channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation, groups=channels
        )

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv2d(x, self.weight, self.bias, dilation=self.dilation[0])


class InceptionLKA(nn.Module):
    """Inception large-kernel attention: ``x * conv1x1(cat(dw3x3(a), dw5x5_d2(a), dw7x7_d3(a)))``.

    ``a = dw5x5(x)``. Shape preserved: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = DepthwiseConv2d(channels, 5)
        self.branches = nn.ModuleList(DepthwiseConv2d(channels, k, d) for k, d in ((3, 1), (5, 2), (7, 3)))
        self.conv1 = nn.Conv2d(3 * channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.conv0(x)
        attn = self.conv1(torch.cat([branch(attn) for branch in self.branches], dim=1))
        return x * attn


class AttentionBlock(nn.Module):
    """Residual I-LKA block: ``x + conv1x1(I-LKA(GELU(conv1x1(x))))``. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.act = nn.GELU()
        self.lka = InceptionLKA(channels)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj_out(self.lka(self.act(self.proj_in(x))))


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mask: Tensor | None = None,
    *,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
) -> Tensor:
    """Modulated deformable convolution (DCNv2) by bilinear sampling, in plain PyTorch.

    Same conventions as ``torchvision.ops.deform_conv2d``: kernel taps in row-major order, offsets as
    (dy, dx) pairs per tap, samples outside the input read as zero.

    Args:
        input: (B, C_in, H, W).
        offset: (B, 2 * kh * kw, H_out, W_out), in pixels.
        weight: (C_out, C_in, kh, kw).
        bias: (C_out,) or None.
        mask: (B, kh * kw, H_out, W_out) modulation scalars, or None for all ones.

    Returns:
        (B, C_out, H_out, W_out).
    """
    check_shape("input", input, ("B", "C_in", "H", "W"))
    check_shape("weight", weight, ("C_out", input.shape[1], "kh", "kw"))
    b, c_in, h, w = input.shape
    c_out, _, kh, kw = weight.shape
    taps = kh * kw
    h_out = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    check_shape("offset", offset, (b, 2 * taps, h_out, w_out))
    if mask is not None:
        check_shape("mask", mask, (b, taps, h_out, w_out))

    kw_args = {"device": input.device, "dtype": input.dtype}
    # Undeformed sampling positions of every tap, in input pixel coordinates: (taps, H_out, W_out).
    rows = torch.arange(kh, **kw_args)[:, None] * dilation + torch.arange(h_out, **kw_args) * stride - padding
    cols = torch.arange(kw, **kw_args)[:, None] * dilation + torch.arange(w_out, **kw_args) * stride - padding
    base_y = rows[:, None, :, None].expand(kh, kw, h_out, w_out).reshape(taps, h_out, w_out)
    base_x = cols[None, :, None, :].expand(kh, kw, h_out, w_out).reshape(taps, h_out, w_out)
    offset = offset.view(b, taps, 2, h_out, w_out)
    y = base_y + offset[:, :, 0]
    x = base_x + offset[:, :, 1]
    # grid_sample with align_corners=False maps pixel coordinate p to (2p + 1) / size - 1.
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    sampled = F.grid_sample(
        input, grid.view(b, taps * h_out, w_out, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    ).view(b, c_in, taps, h_out, w_out)
    if mask is not None:
        sampled = sampled * mask.unsqueeze(1)
    out = torch.matmul(weight.reshape(c_out, c_in * taps), sampled.reshape(b, c_in * taps, h_out * w_out))
    out = out.view(b, c_out, h_out, w_out)
    if bias is not None:
        out = out + bias.view(1, c_out, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """DCNv2 layer whose offsets and modulation masks are predicted from its input.

    A 3x3 convolution predicts ``2 * k * k`` offsets and ``k * k`` mask logits per pixel; it starts at
    zero, so the layer starts as an ordinary convolution with masks 0.5 (sigmoid of 0). Works for any
    batch size and image size. (B, C_in, H, W) -> (B, C_out, H, W) for odd ``kernel_size``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, bias: bool = True) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        taps = kernel_size * kernel_size
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, bias=bias)
        self.weight, self.bias = conv.weight, conv.bias
        self.offset_mask = nn.Conv2d(in_channels, 3 * taps, 3, padding=1)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def forward(self, x: Tensor) -> Tensor:
        taps = self.weight.shape[2] * self.weight.shape[3]
        offset, mask_logits = self.offset_mask(x).split([2 * taps, taps], dim=1)
        return deform_conv2d(
            x, offset, self.weight, self.bias, torch.sigmoid(mask_logits), padding=self.padding
        )


class ColorAttention(nn.Module):
    """Colour-guided channel attention (the optional ``color`` branch of S3-Net).

    Channel affinities from the scores and from a linear embedding of the input colours are added and
    applied to the scores: ``out = BN(conv1x1(A @ scores))``. Each affinity is ``f @ softmax(f^T)``
    with ``f`` the L2-normalised (C, H*W) map and the softmax over channels.

    Shapes: ``scores`` (B, C, H, W), ``image`` (B, C_img, H, W) -> (B, C, H, W).
    """

    def __init__(self, image_channels: int, channels: int) -> None:
        super().__init__()
        self.embed = nn.Conv2d(image_channels, channels, 1, bias=False)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)

    @staticmethod
    def _affinity(features: Tensor) -> Tensor:
        f = F.normalize(features.flatten(2), dim=-1)  # (B, C, N)
        return torch.matmul(f, F.softmax(f.transpose(1, 2), dim=-1))  # (B, C, C)

    def forward(self, scores: Tensor, image: Tensor) -> Tensor:
        attn = self._affinity(scores) + self._affinity(self.embed(image))
        mixed = torch.matmul(attn, scores.flatten(2)).view_as(scores)
        return self.bn(self.proj(mixed))
