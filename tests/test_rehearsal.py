"""The rehearsal preset: the paper's architectures at tiny width, loaded by the real loading code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vljepa.config import get_preset
from vljepa.recipes import stage_config


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The preset with its snapshots written under a fresh cache dir (what a new machine does)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLJEPA_CACHE", str(cache))
        cfg = get_preset("rehearsal")
    return cfg


def test_rehearsal_keeps_the_paper_architectures_and_shrinks_widths(rehearsal):
    paper = get_preset("paper")
    assert (rehearsal.x_encoder.name, rehearsal.x_encoder.num_frames, rehearsal.x_encoder.tubelet_size,
            rehearsal.x_encoder.patch_size, rehearsal.x_encoder.pool_grid) == ("vjepa2", 16, 2, 16, None)
    assert rehearsal.predictor.lm.rope_scaling == paper.predictor.lm.rope_scaling
    assert rehearsal.y_encoder.name == "embeddinggemma" and rehearsal.shared_dim == paper.shared_dim == 1536
    assert stage_config(rehearsal, "pretrain", "image").x_encoder.num_frames == 1
    llama = json.loads(Path(rehearsal.predictor.lm.path, "config.json").read_text())
    rope = llama.get("rope_parameters") or llama["rope_scaling"]  # transformers 5 writes rope_parameters
    assert llama["tie_word_embeddings"] is True and rope["rope_type"] == "llama3"
    gemma = json.loads(Path(rehearsal.y_encoder.path, "config.json").read_text())
    assert gemma["model_type"] == "gemma3_text" and gemma["use_bidirectional_attention"] is True


def test_snapshots_load_through_the_real_code_and_match_their_reference_implementations(rehearsal):
    """V-JEPA 2 as transformers computes it; the y-encoder as sentence-transformers computes it
    (Gemma 3 bidirectional, mean pooling over the prompt too, Dense, Dense, Normalize)."""
    from sentence_transformers import SentenceTransformer
    from transformers import VJEPA2Model

    from vljepa.encoders.registry import build_x_encoder
    from vljepa.model import build_model

    cfg = stage_config(rehearsal, "pretrain", "video")
    encoder = build_x_encoder(cfg.x_encoder)
    pixels = torch.randn(2, 16, 3, 32, 32)
    with torch.no_grad():
        expected = VJEPA2Model.from_pretrained(cfg.x_encoder.weights).eval().get_vision_features(pixels)
    assert encoder.num_tokens == 8 * 4
    torch.testing.assert_close(encoder.encode(pixels), expected)

    model = build_model(cfg).eval()
    texts = ["a small red circle moves left", "two large blue squares"]
    reference = SentenceTransformer(cfg.y_encoder.path, device="cpu")
    want = reference.encode(texts, prompt_name="document", convert_to_tensor=True)  # (2, 64), unit norm
    prompted = [model.target_prompt + t for t in texts]
    assert model.target_prompt == "title: none | text: "
    ids, mask = model.target_tokenizer(prompted, cfg.y_encoder.max_length)
    with torch.no_grad():
        hidden = model.y_encoder.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        got = model.y_encoder.st_head(pooled)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert model.encode_text(texts).shape == (2, 1536)
    # Dense layers are part of the pretrained encoder: lr x 0.05, like the backbone
    from vljepa.model import param_groups

    groups = {g["name"]: g for g in param_groups(model, lr=1.0, weight_decay=0.0)}
    dense = {id(p) for p in model.y_encoder.st_head.parameters()}
    assert all(g["lr"] == cfg.y_encoder.lr_multiplier for g in groups.values() if dense & {id(p) for p in g["params"]})


def test_snapshots_of_other_sizes_need_a_root_of_their_own(tmp_path):
    """Other sizes (bench/gpu_check's paper sizes) never land in the rehearsal's default root."""
    from vljepa.rehearsal import REHEARSAL_SIZES, snapshots

    with pytest.raises(ValueError, match="root of its own"):
        snapshots(sizes=REHEARSAL_SIZES)
    found = snapshots(tmp_path / "other", sizes=REHEARSAL_SIZES)
    assert found.complete() and sorted(p.name for p in tmp_path.iterdir()) == ["other"]  # no temporary left


def test_predictor_lm_snapshot_is_imported_layer_for_layer(rehearsal):
    from safetensors.torch import load_file

    from vljepa.model import build_model

    model = build_model(stage_config(rehearsal, "sft"))
    checkpoint = load_file(f"{rehearsal.predictor.lm.path}/model.safetensors")
    assert "lm_head.weight" not in checkpoint  # tied, as Llama-3.2-1B's
    top = rehearsal.predictor.lm.num_hidden_layers - 1
    torch.testing.assert_close(model.predictor.layers[-1].mlp.down_proj.weight,
                               checkpoint[f"model.layers.{top}.mlp.down_proj.weight"])
    torch.testing.assert_close(model.predictor.embed_tokens.weight, checkpoint["model.embed_tokens.weight"])


def test_an_empty_query_in_a_mixed_batch_is_no_query(rehearsal):
    """Llama 3's tokenizer adds BOS even to "": caption samples in a batch with questions must be
    conditioned exactly as in an all-caption batch (no query tokens), as at evaluation."""
    from vljepa.model import build_model

    model = build_model(stage_config(rehearsal, "sft")).eval()
    ids, mask = model.query_tokenizer(["", "what colour is it?"], 64)
    assert ids[0, 0] == model.query_tokenizer.tokenizer.bos_token_id and mask[0, 0] == 1  # the trap
    visual = torch.randn(2, 32, 64)
    with torch.no_grad():
        mixed = model.predict(visual, ["", "what colour is it?"])
        alone = model.predict(visual[:1], None)
        asked = model.predict(visual[1:], ["what colour is it?"])
    torch.testing.assert_close(mixed[0], alone[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mixed[1], asked[0], rtol=1e-5, atol=1e-6)


def test_a_config_that_does_not_match_the_lm_snapshot_says_what_to_set(rehearsal):
    """A user points the paper config at a snapshot of other widths: a clear error with the fix."""
    from vljepa.config_dict import replace
    from vljepa.model import build_model

    cfg = replace(stage_config(get_preset("paper"), "pretrain", "image"),
                  **{"predictor.lm.path": rehearsal.predictor.lm.path, "y_encoder.path": rehearsal.y_encoder.path})
    with pytest.raises(ValueError, match="--set predictor.lm.hidden_size=64") as err:
        build_model(cfg)
    assert "vocab_size 128256 in the config, 1024 in config.json" in str(err.value)


def test_the_check_runs_before_any_work_and_covers_the_x_encoder(rehearsal):
    from flows.resolve import ConfigError, check_model_snapshots
    from vljepa.config_dict import replace

    paper = get_preset("paper")
    with pytest.raises(ConfigError, match="predictor.lm.path must point at a local HF model directory"):
        check_model_snapshots(paper)  # the paper preset as shipped names no snapshot: said up front
    with pytest.raises(ConfigError, match="--set x_encoder.hidden_size=64 --set x_encoder.num_layers=2"):
        check_model_snapshots(replace(paper, **{"x_encoder.weights": rehearsal.x_encoder.weights}))
    check_model_snapshots(rehearsal)  # the preset fits its own snapshots
