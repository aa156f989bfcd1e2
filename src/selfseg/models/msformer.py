"""MS-Former (Karimijafarbigloo et al., MIDL 2023): a dual-branch efficient-attention transformer.

S. Karimijafarbigloo, R. Azad, A. Kazerouni, D. Merhof, "MS-Former: Multi-Scale Self-Guided Transformer for
Medical Image Segmentation", Medical Imaging with Deep Learning 2023, PMLR 227,
https://openreview.net/forum?id=pp2raGSU3Wx.

Two overlapping patch embeddings (3x3 convolutions with stride 1 and 2) feed two stacks of
efficient-attention transformer blocks; the coarse branch is upsampled by two (linear + pixel
shuffle), cropped to the fine branch and concatenated with it; a linear map gives the class scores.
Any image size works: the coarse grid is ``ceil(H / 2) x ceil(W / 2)`` and its upsampled copy is
cropped to ``H x W``; the intra-scale attention pads the shifted score maps to whole patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EfficientAttention", "EfficientTransformerBlock", "MSFormer", "MixFFN"]


def _to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major; a view when ``x`` is channels_last."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def _to_grid(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) -> (B, C, H, W) in channels_last memory format (a view of contiguous tokens)."""
    return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)


class EfficientAttention(nn.Module):
    """Efficient attention (Shen et al. 2021), one head, on tokens (B, N, C) -> (B, N, C).

    Keys are softmax-normalised over positions, queries over channels; the global context
    ``softmax_N(K)^T V`` is a (C, C) matrix, returned with the output: (out, context (B, C, C)).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.keys = nn.Linear(dim, dim)
        self.queries = nn.Linear(dim, dim)
        self.values = nn.Linear(dim, dim)
        self.reprojection = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        keys = F.softmax(self.keys(tokens), dim=1)  # over positions
        queries = F.softmax(self.queries(tokens), dim=2)  # over channels
        context = keys.transpose(1, 2) @ self.values(tokens)  # (B, C_k, C_v)
        return self.reprojection(queries @ context), context


class MixFFN(nn.Module):
    """Mix-FFN with the skip of the authors' code: ``fc2(GELU(LN(dw3x3(fc1(x)) + fc1(x))))``.

    Tokens (B, N, C) of an (H, W) grid -> (B, N, C).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, tokens: Tensor, height: int, width: int) -> Tensor:
        hidden = self.fc1(tokens)
        mixed = self.dwconv(_to_grid(hidden, height, width))
        return self.fc2(self.act(self.norm(_to_tokens(mixed) + hidden)))


class EfficientTransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN(x))`` then ``+ MixFFN(LN(.))``, followed by BN.

    Maps (B, C, H, W) -> ((B, C, H, W), context (B, C, C)).
    """

    def __init__(self, dim: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, mlp_ratio * dim)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h, w = x.shape[-2:]
        tokens = _to_tokens(x)
        attended, context = self.attn(self.norm1(tokens))
        tokens = tokens + attended
        tokens = tokens + self.mlp(self.norm2(tokens), h, w)
        return self.bn(_to_grid(tokens, h, w)), context


class MSFormer(nn.Module):
    """Per-image clustering transformer. (B, in_channels, H, W) -> (B, n_channels, H, W) class scores.

    Args:
        in_channels: image channels (1 for grey, 3 for colour).
        n_channels: number of candidate clusters (100 in the authors' code).
        embed_dim: token width of both branches (100).
        n_layers: transformer blocks per branch (2).
        patch_size: side of the patches that the intra-scale attention embeds as tokens (32).
    """

    def __init__(
        self,
        in_channels: int = 3,
        n_channels: int = 100,
        embed_dim: int = 100,
        n_layers: int = 2,
        patch_size: int = 32,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.embed_fine = nn.Sequential(nn.Conv2d(in_channels, embed_dim, 3, 1, 1), nn.BatchNorm2d(embed_dim))
        self.embed_coarse = nn.Sequential(nn.Conv2d(in_channels, embed_dim, 3, 2, 1), nn.BatchNorm2d(embed_dim))
        self.blocks_fine = nn.ModuleList(EfficientTransformerBlock(embed_dim) for _ in range(n_layers))
        self.blocks_coarse = nn.ModuleList(EfficientTransformerBlock(embed_dim) for _ in range(n_layers))
        self.up = nn.Linear(embed_dim, 4 * embed_dim, bias=False)
        self.classifier = nn.Linear(2 * embed_dim, n_channels, bias=False)
        self.score_norm = nn.BatchNorm2d(n_channels)
        self.patch_embed = nn.Linear(n_channels * patch_size * patch_size, embed_dim)

    @staticmethod
    def branch(x: Tensor, blocks: nn.ModuleList) -> tuple[Tensor, Tensor]:
        context = x.new_zeros(0)
        for block in blocks:
            x, context = block(x)
        return x, context

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Return scores (B, n_channels, H, W) and the last fine and coarse contexts (B, D, D)."""
        h, w = image.shape[-2:]
        fine, context_fine = self.branch(self.embed_fine(image), self.blocks_fine)
        coarse, context_coarse = self.branch(self.embed_coarse(image), self.blocks_coarse)
        up = self.up(coarse.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, 4D, ceil(H/2), ceil(W/2))
        up = F.pixel_shuffle(up, 2)[..., :h, :w]
        joined = torch.cat([up, fine], dim=1).permute(0, 2, 3, 1)  # (B, H, W, 2D)
        return self.classifier(joined).permute(0, 3, 1, 2), context_fine, context_coarse

    def predict(self, image: Tensor) -> Tensor:
        """Class scores only: (B, in_channels, H, W) -> (B, n_channels, H, W)."""
        return self.forward(image)[0]

    def shift_attention(self, scores: Tensor, shift: int = 2) -> Tensor:
        """Attention between patches of the score map and of a copy shifted diagonally by ``shift``.

        The batch-normalised scores and their shifted copy are cut into ``patch_size`` patches
        (replicate-padded to whole patches), each embedded as a token by one shared linear map;
        returns ``softmax(Q K^T / sqrt(D))``, (B, N, N) with N the number of patches.
        """
        if not 0 < shift < min(scores.shape[-2:]):
            raise ValueError(f"shift must be in [1, {min(scores.shape[-2:]) - 1}], got {shift}")
        normed = self.score_norm(scores)
        queries = self.patch_tokens(normed[..., shift:, shift:])
        keys = self.patch_tokens(normed[..., :-shift, :-shift])
        return F.softmax(queries @ keys.transpose(1, 2) / queries.shape[-1] ** 0.5, dim=-1)

    def patch_tokens(self, maps: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D): replicate-pad to whole patches, flatten each, embed linearly."""
        p = self.patch_size
        h, w = maps.shape[-2:]
        maps = F.pad(maps, (0, -w % p, 0, -h % p), mode="replicate")
        b, c, hp, wp = maps.shape
        patches = maps.reshape(b, c, hp // p, p, wp // p, p).permute(0, 2, 4, 3, 5, 1)
        return self.patch_embed(patches.reshape(b, (hp // p) * (wp // p), p * p * c))
