"""DFC (Kim & Kanezaki, IEEE TIP 2020): unsupervised segmentation by differentiable feature clustering.

W. Kim, A. Kanezaki, M. Tanaka, "Unsupervised Learning of Image Segmentation Based on Differentiable
Feature Clustering", IEEE Transactions on Image Processing 29, 2020, arXiv:2007.09990; released code:
github.com/kanezaki/pytorch-unsupervised-segmentation-tip (``demo.py``, class ``MyNet``). The layer
names here (``conv1``/``bn1``, ``conv2``/``bn2`` lists, ``conv3``/``bn3``) are those of ``MyNet``, so
its state dicts load as they are. The loss is ``selfseg.losses.DFCObjective``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DFC"]


class DFC(nn.Module):
    """Fully convolutional per-image clustering network. (B, in_channels, H, W) -> (B, n_channels, H, W).

    conv 3x3 (in_channels -> n_channels), ReLU, BN; then ``n_conv - 1`` times conv 3x3
    (n_channels -> n_channels), ReLU, BN; then conv 1x1 (n_channels -> n_channels), BN: the response
    map, whose per-pixel argmax is the cluster label. Stride 1 and same padding throughout, so any
    height and width are kept.

    Args:
        in_channels: image channels (1 for grey, 3 for colour).
        n_channels: feature width and number of candidate clusters (``nChannel``, 100 in the code).
        n_conv: number of 3x3 convolutions (``nConv``, 2 in the code); at least 1.
    """

    def __init__(self, in_channels: int = 3, n_channels: int = 100, n_conv: int = 2) -> None:
        super().__init__()
        if n_conv < 1:
            raise ValueError(f"n_conv must be at least 1, got {n_conv}")
        self.conv1 = nn.Conv2d(in_channels, n_channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(n_channels)
        self.conv2 = nn.ModuleList(
            nn.Conv2d(n_channels, n_channels, kernel_size=3, padding=1) for _ in range(n_conv - 1)
        )
        self.bn2 = nn.ModuleList(nn.BatchNorm2d(n_channels) for _ in range(n_conv - 1))
        self.conv3 = nn.Conv2d(n_channels, n_channels, kernel_size=1)
        self.bn3 = nn.BatchNorm2d(n_channels)

    def forward(self, image: Tensor) -> Tensor:
        """Response map: (B, in_channels, H, W) -> (B, n_channels, H, W) class scores."""
        x = self.bn1(F.relu(self.conv1(image)))
        for conv, bn in zip(self.conv2, self.bn2):
            x = bn(F.relu(conv(x)))
        return self.bn3(self.conv3(x))

    def predict(self, image: Tensor) -> Tensor:
        """Same as ``forward``: (B, in_channels, H, W) -> (B, n_channels, H, W)."""
        return self(image)
