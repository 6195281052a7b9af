"""The packaged pretrained parts of the embedded default load under audit and compute what HF computes."""

import pytest
import torch

from vljepa.config import get_preset, replace


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM

    from vljepa.weights import smollm2_dir

    path = smollm2_dir()
    return path, AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()


def test_predictor_layers_equal_the_last_smollm2_layers(smollm2):
    """Run causally, our predictor's layer stack reproduces HF's last-4-layer computation."""
    path, hf = smollm2
    cfg = replace(get_preset("small"), **{"predictor.attention": "causal"})
    from vljepa.predictor import Predictor

    predictor = Predictor(cfg.predictor, visual_dim=8, shared_dim=16)
    report = predictor.load_lm(path / "model.safetensors")
    assert set(report.not_loaded) >= {"visual_proj.weight", "out_proj.weight"}
    assert predictor.layer_indices == [26, 27, 28, 29]
    ids = torch.tensor([[1, 416, 2382, 7842, 7488, 2049, 30]])
    with torch.no_grad():
        out = hf(ids, output_hidden_states=True)
        hidden = out.hidden_states[26]  # input of layer 26
        positions = torch.arange(ids.shape[1])[None]
        rope = predictor.rotary_emb(hidden, positions)
        mask = predictor.attention_mask(torch.ones_like(ids), hidden.dtype)
        for layer in predictor.layers:
            hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rope)
        hidden = predictor.norm(hidden)
    torch.testing.assert_close(hidden, out.hidden_states[-1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(predictor.embed_tokens.weight, hf.model.embed_tokens.weight)


def test_small_model_partition_and_minilm_embeddings():
    from vljepa.model import build_model, count

    model = build_model(get_preset("small"))
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"predictor.embed_tokens.weight"}
    assert count(model.predictor).trainable == count(model.predictor).total - 49152 * 576
    # all-MiniLM-L6-v2 mean-pooled embeddings put a paraphrase closer than an unrelated sentence.
    backbone = model.y_encoder.backbone.eval()
    ids, mask = model.target_tokenizer(["a red circle moves left", "a red disc goes to the left",
                                        "the stock market fell sharply"], 32)
    with torch.no_grad():
        hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    pooled = torch.nn.functional.normalize((hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.2
