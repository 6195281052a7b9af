"""Shapes, gradients, bidirectionality, the frozen/trainable partition and the lr multiplier."""

import dataclasses

import pytest
import torch

from vljepa.config import get_preset, replace
from vljepa.losses import info_nce
from vljepa.model import build_model, check_partition, param_groups


def _batch(cfg, batch=4):
    torch.manual_seed(1)
    tokens = torch.randn(batch, 8, cfg.x_encoder.hidden_size)
    texts = ["a red circle moves left", "two blue squares move up", "a small cross grows", "three stars"][:batch]
    return tokens, texts


def test_predictor_and_y_encoder_shapes_and_gradients(tiny_model, tiny_cfg):
    tokens, texts = _batch(tiny_cfg)
    predicted = tiny_model.predict(tokens, ["describe the video"] * 4)
    target = tiny_model.encode_text(texts)
    assert predicted.shape == target.shape == (4, tiny_cfg.shared_dim)
    info_nce(predicted, target).backward()
    for name, param in tiny_model.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
            assert param.grad.abs().sum() > 0, f"{name} got a zero gradient"


def _first_position_moves_when_last_token_changes(predictor, tokens) -> bool:
    """Does perturbing the *last* input token change the *first* position's output?"""
    captured = {}
    handle = predictor.norm.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o.detach()))
    try:
        predictor(tokens)
        first = captured["h"][0, 0].clone()
        changed = tokens.clone()
        changed[0, -1] += 5.0
        predictor(changed)
    finally:
        handle.remove()
    return not torch.allclose(first, captured["h"][0, 0], atol=1e-6)


def test_predictor_is_bidirectional(tiny_model, tiny_cfg):
    """Changing a *later* token changes an *earlier* position's output (no causal mask)."""
    tokens, _ = _batch(tiny_cfg, 1)
    assert _first_position_moves_when_last_token_changes(tiny_model.predictor, tokens)


def test_causal_ablation_is_causal(tiny_cfg):
    cfg = replace(tiny_cfg, **{"predictor.attention": "causal"})
    tokens, _ = _batch(tiny_cfg, 1)
    assert not _first_position_moves_when_last_token_changes(build_model(cfg).predictor, tokens)


def test_padding_does_not_change_prediction(tiny_model, tiny_cfg):
    """Pad query tokens are masked as keys and excluded from the mean pool."""
    tokens, _ = _batch(tiny_cfg, 2)
    alone = tiny_model.predict(tokens[:1], ["ab"])
    padded = tiny_model.predict(tokens[:2], ["ab", "a much longer query"])[:1]
    torch.testing.assert_close(alone, padded, rtol=1e-5, atol=1e-5)


def test_frozen_parts_get_no_gradient_and_do_not_change(tiny_cfg):
    cfg = replace(tiny_cfg, **{"y_encoder.lr_multiplier": 0.0})
    model = build_model(cfg)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    assert "predictor.embed_tokens.weight" in frozen
    assert any(n.startswith("y_encoder.backbone.") for n in frozen)
    optimizer = torch.optim.AdamW(param_groups(model, lr=1e-2, weight_decay=0.1))
    tokens, texts = _batch(tiny_cfg)
    info_nce(model.predict(tokens, ["what is it"] * 4), model.encode_text(texts)).backward()
    optimizer.step()
    for name, param in model.named_parameters():
        if name in frozen:
            assert param.grad is None, name
            assert torch.equal(param.detach(), frozen[name]), f"frozen {name} changed"
    assert model.y_encoder.proj.weight.grad is not None  # the head still trains


def test_y_encoder_param_group_has_lr_multiplier(tiny_model, tiny_cfg):
    groups = param_groups(tiny_model, lr=1e-3, weight_decay=0.05)
    by_name = {g["name"]: g for g in groups}
    assert by_name["y_encoder"]["lr"] == pytest.approx(1e-3 * 0.05)
    assert by_name["predictor"]["lr"] == pytest.approx(1e-3)
    assert by_name["predictor_no_decay"]["weight_decay"] == 0.0
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in tiny_model.parameters() if p.requires_grad}
    assert grouped == trainable  # every trainable parameter is in exactly one group
    assert sum(len(g["params"]) for g in groups) == len(trainable)
    y_backbone = {id(p) for p in tiny_model.y_encoder.backbone.parameters()}
    for g in groups:
        in_y = {id(p) for p in g["params"]} & y_backbone
        assert not in_y or g["name"].startswith("y_encoder")


def test_partition_check_catches_a_wrong_freeze(tiny_model):
    tiny_model.predictor.layers[0].mlp.up_proj.weight.requires_grad_(False)
    with pytest.raises(AssertionError, match="unexpectedly frozen"):
        check_partition(tiny_model)


def _llama_layer(hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int) -> int:
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o: heads; k, v: kv_heads; no biases
    return attention + 3 * hidden * intermediate + 2 * hidden  # gate/up/down + 2 RMSNorms


def test_paper_preset_builds_on_meta_with_paper_sizes():
    """The counts the code gives equal the architectures' sizes worked out from their shapes."""
    from vljepa.params import parameter_counts

    paper = get_preset("paper")
    counts = parameter_counts(paper)
    # Predictor: 8 Llama-3.2-1B layers (H 2048, MLP 8192, 32 heads / 8 KV of 64) + final norm, the visual
    # projection from ViT-L's 1024 and the projection to the 1536-d space; the 128256-row token table is frozen.
    lm = paper.predictor.lm
    assert (lm.hidden_size, lm.intermediate_size, lm.num_attention_heads, lm.num_key_value_heads, lm.head_dim,
            lm.vocab_size, paper.predictor.num_layers, paper.shared_dim) == (2048, 8192, 32, 8, 64, 128256, 8, 1536)
    trainable = 8 * _llama_layer(2048, 8192, 32, 8, 64) + 2048 + (1024 * 2048 + 2048) + (2048 * 1536 + 1536)
    assert counts["predictor"] == {"trainable": trainable, "total": trainable + 128256 * 2048}
    assert counts["predictor"] == {"trainable": 491_820_544, "total": 754_488_832}  # the paper's "~490M trainable"
    # X-encoder: V-JEPA 2 ViT-L/16, tubelets of 2 frames (Conv3d 3->1024, 2x16x16), 24 pre-norm blocks
    # (qkv and MLP 4x with biases, 2 LayerNorms), a final LayerNorm; RoPE has no parameters. All frozen.
    block = 2 * 2048 + (1024 * 3072 + 3072) + (1024 * 1024 + 1024) + (1024 * 4096 + 4096) + (4096 * 1024 + 1024)
    vit_l = (3 * 2 * 16 * 16 * 1024 + 1024) + 24 * block + 2048
    assert counts["x_encoder"] == {"total": vit_l, "trainable": 0} == {"total": 303_885_312, "trainable": 0}
    # Y-encoder: EmbeddingGemma-300M's Gemma 3 (H 768, 24 layers, 3 heads / 1 KV of 256, MLP 1152, per-head q/k
    # norms and 4 RMSNorms per layer, 262144-row table) + the 768 -> 1536 projection; all trainable (lr x0.05).
    gemma_layer = 768 * 256 * (2 * 3 + 2 * 1) + 2 * 256 + 3 * 768 * 1152 + 4 * 768
    gemma = 262144 * 768 + 24 * gemma_layer + 768
    y_total = gemma + 768 * 1536 + 1536
    assert counts["y_encoder"] == {"total": y_total, "trainable": y_total} == {"total": 304_044_288,
                                                                            "trainable": 304_044_288}
    assert gemma == 302_863_104  # EmbeddingGemma-300M's transformer (308M with its sentence-transformers Dense layers)


def test_config_round_trip_and_typos_fail(tiny_cfg):
    from vljepa.config import VLJepaConfig

    assert VLJepaConfig.from_json(tiny_cfg.to_json()) == tiny_cfg
    data = tiny_cfg.to_dict()
    data["train"]["learnig_rate"] = 1.0
    with pytest.raises(TypeError, match="learnig_rate"):
        VLJepaConfig.from_dict(data)
    with pytest.raises(TypeError):
        dataclasses.replace(tiny_cfg.train, lr_mult=2)
