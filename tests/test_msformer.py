"""MS-Former: shapes at any size, efficient attention, Mix-FFN, coarse branch, patch tokens, engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from selfseg.engine import segment
from selfseg.losses import MSFormerObjective
from selfseg.models import MSFormer
from selfseg.models.msformer import EfficientAttention, EfficientTransformerBlock, MixFFN

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"n_channels": 6, "embed_dim": 8, "n_layers": 1, "patch_size": 4}


def _model(in_channels: int = 3, seed: int = 0, **overrides) -> MSFormer:
    torch.manual_seed(seed)
    return MSFormer(in_channels=in_channels, **{**SMALL, **overrides})


def _image(batch: int, channels: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("batch", [1, 2])
def test_shapes_at_odd_and_non_square_sizes(in_channels: int, batch: int) -> None:
    model = _model(in_channels).eval()
    with torch.no_grad():
        for height, width in [(9, 9), (16, 16), (17, 23), (33, 12), (5, 7)]:
            x = _image(batch, in_channels, height, width, seed=height * 100 + width)
            scores, context_fine, context_coarse = model(x)
            assert scores.shape == (batch, 6, height, width)
            assert context_fine.shape == (batch, 8, 8)
            assert context_coarse.shape == (batch, 8, 8)
            for tensor in (scores, context_fine, context_coarse):
                assert torch.isfinite(tensor).all()
            assert_close(model.predict(x), scores, atol=0, rtol=0)


def test_shapes_in_train_mode_and_two_layers() -> None:
    model = _model(n_layers=2).train()
    x = _image(1, 3, 17, 23)
    scores, context_fine, context_coarse = model(x)
    assert scores.shape == (1, 6, 17, 23)
    assert context_fine.shape == context_coarse.shape == (1, 8, 8)
    assert_close(model.predict(x), scores)


def test_eval_mode_samples_are_independent_in_a_batch() -> None:
    model = _model().eval()
    x = _image(2, 3, 11, 14, seed=1)
    with torch.no_grad():
        together = model(x)
        alone = [model(x[i : i + 1]) for i in range(2)]
    for k in range(3):
        assert_close(together[k], torch.cat([a[k] for a in alone]), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- efficient attention


def _attention_reference(attn: EfficientAttention, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnc,dc->bnd", x, layer.weight) + layer.bias

    keys = linear(attn.keys, tokens)
    queries = linear(attn.queries, tokens)
    values = linear(attn.values, tokens)
    keys = keys.exp() / keys.exp().sum(dim=1, keepdim=True)  # over positions n
    queries = queries.exp() / queries.exp().sum(dim=2, keepdim=True)  # over channels
    context = torch.einsum("bni,bnj->bij", keys, values)
    out = linear(attn.reprojection, torch.einsum("bni,bij->bnj", queries, context))
    return out, context


def test_efficient_attention_matches_reference() -> None:
    torch.manual_seed(3)
    attn = EfficientAttention(5)
    tokens = torch.randn(2, 13, 5)
    with torch.no_grad():
        out, context = attn(tokens)
        ref_out, ref_context = _attention_reference(attn, tokens)
    assert out.shape == (2, 13, 5) and context.shape == (2, 5, 5)
    assert_close(context, ref_context, atol=1e-5, rtol=1e-5)
    assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


def test_efficient_attention_context_rows_are_averages_of_values() -> None:
    # Keys are softmax-normalised over positions: each context row is a convex combination of the
    # value vectors. With all tokens equal, every row is exactly that token's value vector, and the
    # output is reprojection(value) whatever the queries (which sum to one over channels).
    torch.manual_seed(4)
    attn = EfficientAttention(6)
    token = torch.randn(6)
    tokens = token.expand(1, 9, 6).contiguous()
    with torch.no_grad():
        out, context = attn(tokens)
        value = attn.values(token)
    assert_close(context[0], value.expand(6, 6), atol=1e-5, rtol=1e-5)
    assert_close(out[0], attn.reprojection(value).expand(9, 6), atol=1e-5, rtol=1e-5)
    # Convex combination: each context row lies between the per-channel min and max of the values.
    tokens = torch.randn(1, 9, 6)
    with torch.no_grad():
        _, context = attn(tokens)
        values = attn.values(tokens)[0]
    assert (context[0] <= values.max(0).values + 1e-5).all()
    assert (context[0] >= values.min(0).values - 1e-5).all()


def test_efficient_attention_is_permutation_equivariant() -> None:
    torch.manual_seed(5)
    attn = EfficientAttention(4)
    tokens = torch.randn(2, 11, 4)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        out, context = attn(tokens)
        out_p, context_p = attn(tokens[:, perm])
    assert_close(context_p, context, atol=1e-5, rtol=1e-5)  # the global context ignores the order
    assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- Mix-FFN and block


def _mixffn_reference(ffn: MixFFN, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    hidden = tokens @ ffn.fc1.weight.T + ffn.fc1.bias
    b, _, c = hidden.shape
    grid = torch.empty(b, c, height, width)
    for r in range(height):
        for col in range(width):
            grid[:, :, r, col] = hidden[:, r * width + col, :]  # row-major token order
    conv = F.conv2d(grid, ffn.dwconv.weight, ffn.dwconv.bias, padding=1, groups=c)
    mixed = torch.stack([conv[:, :, n // width, n % width] for n in range(height * width)], dim=1)
    normed = F.layer_norm(mixed + hidden, (c,), ffn.norm.weight, ffn.norm.bias, ffn.norm.eps)
    return F.gelu(normed) @ ffn.fc2.weight.T + ffn.fc2.bias


def test_mixffn_matches_reference() -> None:
    torch.manual_seed(7)
    ffn = MixFFN(4, 8)
    with torch.no_grad():  # non-trivial LayerNorm affine
        ffn.norm.weight.uniform_(0.5, 1.5)
        ffn.norm.bias.uniform_(-0.5, 0.5)
    height, width = 3, 5  # non-square: a transposed grid would differ
    tokens = torch.randn(2, height * width, 4)
    with torch.no_grad():
        out = ffn(tokens, height, width)
        ref = _mixffn_reference(ffn, tokens, height, width)
    assert out.shape == (2, 15, 4)
    assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_transformer_block_matches_composition() -> None:
    torch.manual_seed(8)
    block = EfficientTransformerBlock(4).eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 4, 3, 5)
    with torch.no_grad():
        out, context = block(x)
        tokens = torch.stack([x[:, :, n // 5, n % 5] for n in range(15)], dim=1)
        attended, ref_context = _attention_reference(block.attn, block.norm1(tokens))
        tokens = tokens + attended
        tokens = tokens + _mixffn_reference(block.mlp, block.norm2(tokens), 3, 5)
        grid = torch.stack([torch.stack([tokens[:, r * 5 + c] for c in range(5)], dim=-1) for r in range(3)], dim=-2)
        bn = block.bn
        ref = F.batch_norm(grid, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    assert_close(context, ref_context, atol=1e-5, rtol=1e-5)
    assert_close(out, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- coarse branch


@pytest.mark.parametrize(("height", "width"), [(17, 23), (16, 16), (5, 7)])
def test_coarse_branch_is_upsampled_and_cropped(height: int, width: int) -> None:
    model = _model(seed=9).eval()
    x = _image(1, 3, height, width, seed=10)
    with torch.no_grad():
        scores, _, _ = model(x)
        fine, _ = model.branch(model.embed_fine(x), model.blocks_fine)
        coarse, _ = model.branch(model.embed_coarse(x), model.blocks_coarse)
        ch, cw = math.ceil(height / 2), math.ceil(width / 2)
        assert coarse.shape == (1, 8, ch, cw)
        assert fine.shape == (1, 8, height, width)
        # Pixel shuffle by hand: output (c, 2y + i, 2x + j) is channel c * 4 + i * 2 + j of up(coarse[y, x]).
        lifted = coarse.permute(0, 2, 3, 1) @ model.up.weight.T  # (1, ch, cw, 4D)
        up = torch.empty(1, 8, 2 * ch, 2 * cw)
        for c in range(8):
            for i in range(2):
                for j in range(2):
                    up[0, c, i::2, j::2] = lifted[0, :, :, c * 4 + i * 2 + j]
        up = up[..., :height, :width]  # cropped at the bottom and right
        features = torch.cat([up, fine], dim=1).permute(0, 2, 3, 1)
        ref = (features @ model.classifier.weight.T).permute(0, 3, 1, 2)
    assert scores.shape == (1, 6, height, width)
    assert_close(scores, ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- intra-scale attention


@pytest.mark.parametrize(
    ("height", "width", "shift", "patch"),
    [(17, 23, 1, 4), (17, 23, 2, 4), (9, 9, 3, 4), (5, 7, 4, 4), (33, 12, 2, 4), (16, 16, 2, 16), (20, 24, 2, 5)],
)
def test_shift_attention_shape_and_rows(height: int, width: int, shift: int, patch: int) -> None:
    model = _model(patch_size=patch).eval()
    scores = torch.randn(2, 6, height, width, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        attention = model.shift_attention(scores, shift)
    n = math.ceil((height - shift) / patch) * math.ceil((width - shift) / patch)
    assert attention.shape == (2, n, n)
    assert (attention >= 0).all()
    assert_close(attention.sum(-1), torch.ones(2, n), atol=1e-5, rtol=1e-5)


def test_shift_attention_matches_reference() -> None:
    model = _model(patch_size=4).eval()
    with torch.no_grad():
        model.score_norm.running_mean.uniform_(-1, 1)
        model.score_norm.running_var.uniform_(0.5, 2)
    scores = torch.randn(1, 6, 13, 10, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        attention = model.shift_attention(scores, 2)
        normed = model.score_norm(scores)
        queries = model.patch_tokens(normed[..., 2:, 2:])
        keys = model.patch_tokens(normed[..., :-2, :-2])
        ref = torch.softmax(queries @ keys.transpose(1, 2) / math.sqrt(8), dim=-1)
    assert_close(attention, ref, atol=1e-6, rtol=1e-5)


def test_shift_attention_rejects_bad_shift() -> None:
    model = _model().eval()
    scores = torch.randn(1, 6, 9, 12)
    for shift in (0, -1, 9, 12):
        with pytest.raises(ValueError, match="shift"):
            model.shift_attention(scores, shift)
    assert model.shift_attention(scores, 8).shape == (1, 1, 1)


def _patch_reference(maps: torch.Tensor, p: int) -> torch.Tensor:
    """Explicit 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)' with replicate padding (clamped indices)."""
    b, c, height, width = maps.shape
    rows, cols = math.ceil(height / p), math.ceil(width / p)
    out = torch.empty(b, rows * cols, p * p * c)
    for r in range(rows):
        for q in range(cols):
            k = 0
            for i in range(p):
                for j in range(p):
                    for ch in range(c):
                        out[:, r * cols + q, k] = maps[:, ch, min(r * p + i, height - 1), min(q * p + j, width - 1)]
                        k += 1
    return out


def _identity_embed(model: MSFormer) -> None:
    with torch.no_grad():
        model.patch_embed.weight.copy_(torch.eye(model.patch_embed.weight.shape[0]))
        model.patch_embed.bias.zero_()


@pytest.mark.parametrize(("height", "width"), [(4, 6), (5, 7)])
def test_patch_tokens_order_one_channel(height: int, width: int) -> None:
    model = MSFormer(in_channels=1, n_channels=1, embed_dim=4, n_layers=1, patch_size=2)
    _identity_embed(model)
    # Each value encodes its pixel position: 100 * row + col.
    maps = (100 * torch.arange(height).view(-1, 1) + torch.arange(width)).float().view(1, 1, height, width)
    with torch.no_grad():
        tokens = model.patch_tokens(maps)
    assert_close(tokens, _patch_reference(maps, 2), atol=0, rtol=0)
    # Token 1 is the second patch of the first row of patches, pixels in row-major order.
    assert tokens[0, 1].tolist() == [2.0, 3.0, 102.0, 103.0]


def test_patch_tokens_order_channels_last() -> None:
    # Two channels: the flattening order is (p1, p2, c), channel fastest.
    model = MSFormer(in_channels=1, n_channels=2, embed_dim=8, n_layers=1, patch_size=2)
    _identity_embed(model)
    height, width = 4, 5
    position = (100 * torch.arange(height).view(-1, 1) + torch.arange(width)).float()
    maps = torch.stack([position, position + 0.5]).unsqueeze(0)  # channel 1 = channel 0 + 0.5
    with torch.no_grad():
        tokens = model.patch_tokens(maps)
    assert tokens.shape == (1, 2 * 3, 8)
    assert_close(tokens, _patch_reference(maps, 2), atol=0, rtol=0)
    assert tokens[0, 0].tolist() == [0.0, 0.5, 1.0, 1.5, 100.0, 100.5, 101.0, 101.5]
    # Last patch of the first row: column 4 replicated into the padding column.
    assert tokens[0, 2].tolist() == [4.0, 4.5, 4.0, 4.5, 104.0, 104.5, 104.0, 104.5]


# --------------------------------------------------------------------------- parameters and gradients


def test_parameters_do_not_depend_on_image_size() -> None:
    model = _model().eval()
    shapes = {name: p.shape for name, p in model.named_parameters()}
    count = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        for height, width in [(9, 9), (33, 29), (12, 31)]:
            assert model(_image(1, 3, height, width))[0].shape == (1, 6, height, width)
            assert model.shift_attention(torch.randn(1, 6, height, width), 2).shape[0] == 1
    assert {name: p.shape for name, p in model.named_parameters()} == shapes
    assert sum(p.numel() for p in model.parameters()) == count
    # Two models built alike have the same parameters, whatever they were run on.
    assert sum(p.numel() for p in _model(seed=1).parameters()) == count
    assert not any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in model.parameters())


@pytest.mark.parametrize("n_layers", [1, 2])
def test_every_parameter_gets_a_finite_gradient(n_layers: int) -> None:
    model = _model(n_layers=n_layers, seed=13).train()
    x = _image(1, 3, 17, 14, seed=14)
    _, terms = MSFormerObjective()(model, x, torch.Generator().manual_seed(0))
    sum(terms.values()).backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    for name, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), name
    nonzero = [name for name, p in model.named_parameters() if p.grad.abs().sum() > 0]
    assert len(nonzero) == len(list(model.parameters())), set(dict(model.named_parameters())) - set(nonzero)


# --------------------------------------------------------------------------- engine


def test_engine_msformer_on_a_large_odd_image() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((333, 217, 3)).astype(np.float32)
    result = segment(
        image, method="msformer", size=None, max_iter=1, n_channels=6, embed_dim=8, n_layers=1, patch_size=16,
        device="cpu",
    )
    assert result.labels.shape == (333, 217)
    assert result.mask.shape == (333, 217)
    assert result.iterations == 1
    assert set(result.history[0]) >= {"ce", "inter", "intra", "total"}
    assert 1 <= result.n_labels <= 6


def test_engine_msformer_is_deterministic() -> None:
    yy, xx = np.mgrid[:24, :20]
    image = np.stack([yy / 23, xx / 19, ((yy - 12) ** 2 + (xx - 10) ** 2 < 30).astype(float)], -1).astype(np.float32)
    options = {"method": "msformer", "size": None, "max_iter": 2, "min_iter": 5, "device": "cpu", **SMALL}
    first = segment(image, seed=3, **options)
    second = segment(image, seed=3, **options)
    assert first.iterations == second.iterations == 2
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.mask, second.mask)
    assert first.history == second.history
    for record in first.history:
        assert all(math.isfinite(v) for v in record.values())


@pytest.mark.parametrize(("shape", "size"), [((1000, 5), 256), ((2, 9), None), ((2, 2), None)])
def test_engine_msformer_on_thin_and_tiny_images(shape: tuple[int, int], size: int | None) -> None:
    image = np.random.default_rng(1).random(shape).astype(np.float32)
    result = segment(image, method="msformer", size=size, max_iter=1, device="cpu", **SMALL)
    assert result.labels.shape == shape
