"""The y-decoder: text-only training, greedy/beam generation, save/load, audited SmolLM2 import."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vljepa.decoder import ByteCodec, YDecoder, build_vocab, decoder_preset, load_decoder
from vljepa.decoder_train import train_decoder
from vljepa.evaluate import round_trip

TEXTS = ["a red circle grows", "two blue squares move up", "a small green cross shrinks", "three white diamonds"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vljepa.config import get_preset
    from vljepa.model import build_model

    torch.manual_seed(0)
    model = build_model(get_preset("tiny"))
    cfg = dataclasses.replace(decoder_preset("tiny", shared_dim=model.cfg.shared_dim), steps=150)
    out = tmp_path_factory.mktemp("decoder") / "decoder"
    return model, train_decoder(model, TEXTS, cfg, out_dir=out), out


def test_training_reduces_the_loss_and_memorises_the_texts(trained):
    model, result, _ = trained
    losses = [h["loss"] for h in result.history]
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    trip = round_trip(model, result.decoder, TEXTS, num_beams=1)
    # Four texts, four distinct embeddings: a working decoder reproduces (nearly) all of them.
    assert trip["metrics"]["exact_match"] >= 0.75, trip["examples"]
    assert trip["metrics"]["bleu4"] > 0.6


def test_the_y_encoder_stays_frozen_while_the_decoder_trains(trained):
    from vljepa.config import get_preset
    from vljepa.model import build_model

    torch.manual_seed(0)
    fresh = build_model(get_preset("tiny"))
    model, _, _ = trained
    for (name, a), b in zip(model.y_encoder.state_dict().items(), fresh.y_encoder.state_dict().values()):
        assert torch.equal(a, b), name


def test_beam_search_returns_texts_and_beam_one_is_greedy(trained):
    model, result, _ = trained
    from vljepa.evaluate import text_embeddings

    embedding = text_embeddings(model, TEXTS)
    greedy = result.decoder.generate(embedding, num_beams=1)
    beam = result.decoder.generate(embedding, num_beams=3)
    assert len(greedy) == len(beam) == len(TEXTS)
    assert sum(b == t for b, t in zip(beam, TEXTS)) >= sum(g == t for g, t in zip(greedy, TEXTS)) - 1
    # max_new_tokens bounds the output length (bytes here).
    short = result.decoder.generate(embedding, num_beams=2, max_new_tokens=3)
    assert all(len(s.encode()) <= 3 for s in short)


def test_save_and_load_give_the_same_outputs(trained):
    model, result, out = trained
    assert {p.name for p in out.iterdir()} == {"decoder.safetensors", "decoder_config.json", "decoder_vocab.json"}
    again = load_decoder(out)
    embedding = torch.randn(3, model.cfg.shared_dim)
    assert again.generate(embedding, num_beams=2) == result.decoder.generate(embedding, num_beams=2)


def test_unknown_tokens_fail_loudly():
    codec = ByteCodec()
    decoder = YDecoder(decoder_preset("tiny", shared_dim=8), build_vocab(["abc"], codec), codec)
    assert decoder.to_local("cab") == [3, 1, 2, 0]
    with pytest.raises(KeyError, match="not in the y-decoder's vocabulary"):
        decoder.to_local("abz")


def test_smollm2_layers_import_under_audit():
    """The bottom layers and the vocabulary's embedding rows are SmolLM2's own tensors."""
    from vljepa.decoder import HFCodec, YDecoderConfig
    from vljepa.weights import read_safetensors, smollm2_dir

    cfg = YDecoderConfig(num_layers=1, prefix_len=2, shared_dim=16)
    codec = HFCodec(smollm2_dir())
    vocab = build_vocab(["a red circle"], codec)
    decoder = YDecoder(cfg, vocab, codec)
    decoder.load_lm()
    ref = read_safetensors(smollm2_dir() / "model.safetensors",
                           ["model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight", "model.norm.weight"])
    assert torch.equal(decoder.lm.embed_tokens.weight, ref["model.embed_tokens.weight"][torch.tensor(vocab)])
    assert torch.equal(decoder.lm.layers[0].mlp.up_proj.weight, ref["model.layers.0.mlp.up_proj.weight"])
    assert torch.equal(decoder.lm.norm.weight, ref["model.norm.weight"])
    assert decoder.to_text(decoder.to_local("a red circle")) == "a red circle"
