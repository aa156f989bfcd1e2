"""S3-Net (Karimijafarbigloo et al., ICCV 2023 workshop): I-LKA blocks and a deformable head.

S. Karimijafarbigloo, R. Azad, A. Kazerouni, Y. Velichko, U. Bagci, D. Merhof, "Self-supervised Semantic
Segmentation: Consistency over Transformation", ICCV 2023 workshops (CVAMD), arXiv:2309.00143.

The trunk (``features``) is shared by the main head (``head``: deformable conv, BN, 1x1 conv, BN, and
the optional colour attention) and the auxiliary head (``aux_head``: 1x1 conv, BN) that the
transformation-consistency loss trains on the transformed image.
"""

from __future__ import annotations

from torch import Tensor, nn

from selfseg.models.layers import AttentionBlock, ColorAttention, DeformConv2d

__all__ = ["S3Net"]


class S3Net(nn.Module):
    """Per-image clustering network. (B, in_channels, H, W) -> (B, n_channels, H, W) class scores.

    Args:
        in_channels: image channels (1 for grey, 3 for colour).
        n_channels: feature width and number of candidate clusters (64 in the paper's code).
        n_conv: number of I-LKA attention blocks (2).
        color: add the colour-attention branch of the authors' code.
    """

    def __init__(self, in_channels: int = 3, n_channels: int = 64, n_conv: int = 2, color: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, n_channels, 3, padding=1), nn.BatchNorm2d(n_channels))
        self.blocks = nn.Sequential(
            *(nn.Sequential(AttentionBlock(n_channels), nn.BatchNorm2d(n_channels)) for _ in range(n_conv))
        )
        self.deform = nn.Sequential(DeformConv2d(n_channels, n_channels, 3), nn.BatchNorm2d(n_channels))
        self.classifier = nn.Sequential(nn.Conv2d(n_channels, n_channels, 1), nn.BatchNorm2d(n_channels))
        self.aux = nn.Sequential(nn.Conv2d(n_channels, n_channels, 1), nn.BatchNorm2d(n_channels))
        self.color = ColorAttention(in_channels, n_channels) if color else None

    def features(self, image: Tensor) -> Tensor:
        """Trunk: (B, in_channels, H, W) -> (B, n_channels, H, W)."""
        return self.blocks(self.stem(image))

    def head(self, features: Tensor, image: Tensor) -> Tensor:
        """Main head: trunk features (B, C, H, W) and the image -> class scores (B, C, H, W)."""
        scores = self.classifier(self.deform(features))
        return scores if self.color is None else self.color(scores, image)

    def aux_head(self, features: Tensor) -> Tensor:
        """Auxiliary head of the transformation branch: (B, C, H, W) -> (B, C, H, W)."""
        return self.aux(features)

    def predict(self, image: Tensor) -> Tensor:
        """Class scores of the main head: (B, in_channels, H, W) -> (B, n_channels, H, W)."""
        return self.head(self.features(image), image)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Return main and auxiliary scores, each (B, n_channels, H, W)."""
        features = self.features(image)
        return self.head(features, image), self.aux_head(features)
