"""The token-generating VLM baseline (paper Sec. 4.2) on the tiny preset: same layers, same batches,
causal next-token training, KV-cache greedy decoding, perplexity classification, persistence."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from vljepa.baselines import (TokenVLMConfig, build_token_vlm, evaluate_token_vlm, load_token_vlm,
                              train_token_vlm)
from vljepa.config import get_preset, replace

# Every caption starts with "a <label>", so "a <label>" is its own clip's most likely candidate.
TEXTS = ["a red circle grows", "a blue square moves up", "a green cross shrinks", "a white diamond moves left"]
LABELS = ["red circle", "blue square", "green cross", "white diamond"]
QUERIES = ["what moves?", "a", "what colour is the shape?", ""]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: two threads only add synchronisation (and stall on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cfg():
    return get_preset("tiny")


def _visual(cfg, n: int, seed: int = 0) -> torch.Tensor:
    from vljepa.model import visual_dim

    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, visual_dim(cfg), generator=generator)  # (B, N, Dv)


@pytest.fixture(scope="module")
def overfit(cfg):
    """The baseline trained on 4 (clip, caption) pairs until it knows them by heart."""
    torch.manual_seed(0)
    model = build_token_vlm(cfg, TEXTS + QUERIES, TokenVLMConfig())
    visual = _visual(cfg, len(TEXTS))
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(300):
        loss = model.loss(visual, None, TEXTS)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), visual, losses


def test_loss_decreases_on_a_tiny_batch(overfit):
    _, _, losses = overfit
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert np.mean(losses[-20:]) < np.mean(losses[:20])


def test_attention_is_causal(cfg):
    torch.manual_seed(0)
    model = build_token_vlm(cfg, TEXTS, TokenVLMConfig()).eval()
    visual = _visual(cfg, 1)
    changed = "a red bircle grows"  # differs from TEXTS[0] at token 6 only
    with torch.no_grad():
        a = model.target_logits(visual, [TEXTS[0]])  # (1, M, V): position k predicts token k
        b = model.target_logits(visual, [changed])
        c = model.target_logits(_visual(cfg, 1, seed=1), [TEXTS[0]])
    assert torch.equal(a[:, :7], b[:, :7])  # tokens 0..6 are predicted from tokens before 6
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # later ones see the change
    assert not torch.allclose(a[:, :1], c[:, :1])  # and the first token does see the visual prefix


def test_trainable_set_is_the_predictors(cfg):
    from vljepa.model import build_model

    torch.manual_seed(0)
    predictor = build_model(cfg).predictor
    model = build_token_vlm(cfg, TEXTS, TokenVLMConfig())
    # The predictor's trainable parameters minus its output projection to the shared space.
    expected = {n: tuple(p.shape) for n, p in predictor.named_parameters()
                if p.requires_grad and not n.startswith("out_proj.")}
    trainable = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    assert model.layer_indices == predictor.layer_indices == [2, 3]
    assert not model.embed_tokens.weight.requires_grad  # frozen table, tied head
    deeper = build_token_vlm(cfg, TEXTS, TokenVLMConfig(num_layers=3))
    assert deeper.layer_indices == [1, 2, 3] and len(deeper.layers) == 3


def test_loads_the_same_lm_layers_as_the_predictor(cfg, tmp_path):
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    from vljepa.model import visual_dim
    from vljepa.predictor import Predictor, llama_config

    torch.manual_seed(1)
    lm = LlamaForCausalLM(llama_config(cfg.predictor.lm))  # a 4-layer "pretrained" LM
    path = tmp_path / "model.safetensors"
    save_file({k: v.clone().contiguous() for k, v in lm.state_dict().items()}, str(path))
    predictor = Predictor(cfg.predictor, visual_dim=visual_dim(cfg), shared_dim=cfg.shared_dim)
    predictor.load_lm(path)
    model = build_token_vlm(cfg, TEXTS, TokenVLMConfig())
    report = model.load_lm(path)
    assert set(report.not_loaded) == {"visual_proj.weight", "visual_proj.bias"}
    theirs = predictor.state_dict()
    for name, value in model.state_dict().items():
        if name.startswith(("layers.", "norm.")):
            assert torch.equal(value, theirs[name]), name
    table = lm.model.embed_tokens.weight.detach()
    assert torch.equal(model.embed_tokens.weight, table[torch.tensor(model.vocab)])  # cut rows, tied head


def test_generate_reproduces_the_memorised_captions(overfit):
    model, visual, _ = overfit
    result = model.generate(visual)
    assert result.texts == TEXTS
    lengths = [len(t.encode()) for t in TEXTS]  # byte tokens
    assert result.passes_per_text == [n + 1 for n in lengths]  # prefix + every token fed back
    assert result.forward_passes == max(lengths) + 1
    assert all(len(t.encode()) <= 5 for t in model.generate(visual, max_new_tokens=5).texts)


def test_kv_cache_generation_equals_recomputation(overfit):
    model, visual, _ = overfit
    for queries in (None, QUERIES):  # with queries the prefixes are padded to different lengths
        cached = model.generate(visual, queries, max_new_tokens=12)
        recomputed = model.generate(visual, queries, max_new_tokens=12, use_cache=False)
        assert cached.texts == recomputed.texts
        assert cached.forward_passes == recomputed.forward_passes


def test_padding_does_not_change_a_sample(overfit):
    model, visual, _ = overfit
    with torch.no_grad():
        batched = model.target_logits(visual, TEXTS, QUERIES)
        for i in range(len(TEXTS)):
            alone = model.target_logits(visual[i : i + 1], [TEXTS[i]], [QUERIES[i]] if QUERIES[i] else None)
            assert torch.allclose(batched[i, : alone.shape[1]], alone[0], atol=1e-5), i


def test_candidate_nll_ranks_the_true_caption_first_and_matches_teacher_forcing(overfit):
    model, visual, _ = overfit
    nll = model.candidate_nll(visual, TEXTS)  # (B, C)
    assert nll.shape == (4, 4)
    assert torch.equal(nll.argmin(1), torch.arange(4))
    # Independent reference: teacher forcing without any cache, one candidate at a time.
    candidates = ["a red circle", "a blue square moves", "a"]
    got = model.candidate_nll(visual, candidates, QUERIES, max_rows=6)  # several chunks
    with torch.no_grad():
        for j, text in enumerate(candidates):
            logprobs = model.target_logits(visual, [text] * 4, QUERIES).log_softmax(-1)  # (B, M, V)
            ids = torch.tensor(model.to_local(text, 100))
            expected = -logprobs[:, : len(ids)].gather(-1, ids.expand(4, -1)[..., None]).squeeze(-1).mean(1)
            assert torch.allclose(got[:, j], expected, atol=1e-5), text
    assert torch.isinf(model.candidate_nll(visual, ["a zebra"])).all()  # 'z' was never seen


def test_save_load_round_trip_gives_identical_logits(overfit, tmp_path):
    model, visual, _ = overfit
    model.save(tmp_path / "vlm")
    loaded = load_token_vlm(tmp_path / "vlm")
    with torch.no_grad():
        assert torch.equal(model.target_logits(visual, TEXTS, QUERIES), loaded.target_logits(visual, TEXTS, QUERIES))
    assert loaded.vocab == model.vocab and loaded.vlm_cfg == model.vlm_cfg and loaded.cfg == model.cfg
    assert sorted(p.name for p in (tmp_path / "vlm").iterdir()) == [
        "config.json", "model.safetensors", "token_vlm_config.json", "vocab.json"]


def test_full_vocabulary_uses_the_whole_lm_table(cfg):
    torch.manual_seed(0)
    model = build_token_vlm(cfg, [], TokenVLMConfig(vocab="full"))
    assert model.embed_tokens.weight.shape[0] == cfg.predictor.lm.vocab_size
    loss = model.loss(_visual(cfg, 2), None, TEXTS[:2])
    loss.backward()
    assert torch.isfinite(loss) and model.visual_proj.weight.grad is not None


def test_evaluation_reports_captioning_classification_and_cost(overfit):
    from vljepa.tasks.common import TaskData

    model, visual, _ = overfit
    data = TaskData(sample_ids=[f"s{i}" for i in range(4)], tokens=visual.numpy(), captions=TEXTS,
                    labels=LABELS, events=[[] for _ in TEXTS], qa=[[] for _ in TEXTS], num_frames=2)
    metrics = evaluate_token_vlm(model, data, LABELS + ["yellow star"])
    assert metrics["captioning/bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert metrics["captioning/cider"] > 1.0
    assert metrics["classification/top1"] == 1.0
    assert metrics["classification/labels_out_of_vocab"] == 1.0  # "y" never occurs in training
    assert metrics["cost/forward_passes_per_caption"] == pytest.approx(np.mean([len(t) + 1 for t in TEXTS]))
    assert metrics["cost/seconds_per_caption"] > 0


class _Recorder:
    """A TrainData that records the sample indices of every batch it serves."""

    def __init__(self, data) -> None:
        self.data, self.batches = data, []

    def __len__(self) -> int:
        return len(self.data)

    def visual(self, index):
        self.batches.append(np.asarray(index).tolist())
        return self.data.visual(index)

    def text(self, index):
        return self.data.text(index)

    def query(self, index):
        return self.data.query(index)


def _dataset(cfg, n: int):
    from vljepa.data import TokenTextDataset

    captions = [TEXTS[i % 4] for i in range(n)]
    return TokenTextDataset(sample_ids=[f"s{i}" for i in range(n)], tokens=_visual(cfg, n).numpy(), texts=captions)


def test_same_batches_as_vljepa_training_and_snapshots(cfg, tmp_path):
    from vljepa.train import train

    run = replace(cfg, **{"train.max_steps": 5})  # 24 samples, batch 8: crosses an epoch boundary
    theirs, ours = _Recorder(_dataset(cfg, 24)), _Recorder(_dataset(cfg, 24))
    train(run, theirs, tmp_path / "vljepa", progress=False)
    result = train_token_vlm(run, TokenVLMConfig(), ours, tmp_path / "vlm", snapshot_steps=(2, 5), progress=False)
    assert ours.batches == theirs.batches and len(ours.batches) == 5
    assert len(result.history) == 5 and result.samples_seen == 40
    assert [s["step"] for s in result.snapshots] == [2, 5] and [s["samples_seen"] for s in result.snapshots] == [16, 40]
    snapshots = sorted(p.name for p in (tmp_path / "vlm" / "snapshots").iterdir())
    assert snapshots == ["step-000002", "step-000005"]
    info = json.loads((tmp_path / "vlm" / "snapshots" / "step-000002" / "snapshot.json").read_text())
    assert info["samples_seen"] == 16
    last, final = load_token_vlm(tmp_path / "vlm" / "snapshots" / "step-000005"), load_token_vlm(tmp_path / "vlm")
    for (name, a), b in zip(last.state_dict().items(), final.state_dict().values()):
        assert torch.equal(a, b), name
    early = load_token_vlm(tmp_path / "vlm" / "snapshots" / "step-000002")
    assert not torch.equal(early.layers[0].mlp.up_proj.weight, final.layers[0].mlp.up_proj.weight)
    with pytest.raises(ValueError, match="snapshot_steps"):
        train_token_vlm(run, TokenVLMConfig(), ours, tmp_path / "bad", snapshot_steps=(6,), progress=False)


def test_import_pulls_in_no_orchestration():
    code = ("import sys, json, vljepa.baselines\n"
            "print(json.dumps([m for m in ('prefect', 'mlflow', 'ray', 'duckdb', 'submitit') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
