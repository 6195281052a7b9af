"""The evaluation tasks: negatives and candidates built right, protocols scored right (oracle
model), results written, and the whole suite run on a tiny checkpoint through the manifest."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vljepa.tasks import captioning, classification, hard_negatives, retrieval, vqa
from vljepa.tasks.common import Event, TaskData, write_result
from vljepa.tasks.hard_negatives import Vocabulary, negatives, replace_shape
from vljepa.tasks.scoring import caption_scores, normalise

VOCAB = Vocabulary(colours=("red", "blue", "green", "white"), shapes=("circle", "square", "cross", "diamond"),
                   motions=("moves left", "moves right", "grows", "shrinks"))


def _event(text, colour, shape, motion, count=1):
    """An annotated event; ``motion=None``: one without a motion annotation."""
    attributes = {"colour": colour, "shape": shape, "size": "small", "count": count}
    return Event(text=text, start_s=0.0, end_s=1.0, attributes={**attributes, "motion": motion} if motion else attributes)


CLIPS = [
    [_event("a small red circle grows", "red", "circle", "grows")],
    [_event("two small blue crosses move left", "blue", "cross", "moves left", 2),
     _event("a small green square shrinks", "green", "square", "shrinks")],
    [_event("a small white diamond moves right", "white", "diamond", "moves right")],
    [_event("three small green circles shrink", "green", "circle", "shrinks", 3),
     _event("a small red diamond grows", "red", "diamond", "grows")],
]


def _data(frames: int = 2, per_frame: int = 4, dim: int = 32) -> TaskData:
    n = len(CLIPS)
    tokens = np.zeros((n, frames * per_frame, dim), dtype=np.float16)
    tokens[:, 0, 0] = np.arange(n)  # the oracle reads the sample index from here
    captions = [", then ".join(e.text for e in events) for events in CLIPS]
    qa = [[(f"what colour is the {ev[0].attributes['shape']}?", ev[0].attributes["colour"])] for ev in CLIPS]
    labels = [f"{ev[0].attributes['colour']} {ev[0].attributes['shape']}" for ev in CLIPS]
    return TaskData(sample_ids=[f"c{i}" for i in range(n)], tokens=tokens, captions=captions, labels=labels,
                    events=[list(e) for e in CLIPS], qa=qa, num_frames=frames)


class Oracle:
    """Predicts exactly the y-encoder embedding of the clip's caption (or of the VQA answer)."""

    def __init__(self, data: TaskData) -> None:
        from vljepa.config import get_preset
        from vljepa.model import build_model

        torch.manual_seed(0)
        self.inner = build_model(get_preset("tiny"))
        self.cfg, self.predictor, self.data = self.inner.cfg, self.inner.predictor, data

    def eval(self):
        return self

    def encode_text(self, texts):
        """A random but fixed unit vector per distinct string (distinct texts never tie)."""
        import zlib

        rows = [torch.randn(16, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return F.normalize(torch.stack(rows), dim=-1)

    def predict(self, visual, queries=None):
        index = visual[:, 0, 0].round().long().tolist()
        if queries and any(queries):
            texts = [dict(self.data.qa[i])[q] for i, q in zip(index, queries)]
        else:
            texts = [self.data.captions[i] for i in index]
        return self.encode_text(texts)


def test_scoring_uses_pycocoevalcap_on_normalised_text():
    assert normalise("Two Blue squares, then a red circle!") == "two blue squares then a red circle"
    perfect = caption_scores(["a red circle grows", "two blue squares"], [["a red circle grows"], ["two blue squares"]])
    assert perfect["bleu4"] == pytest.approx(1.0, abs=1e-6) and perfect["rouge_l"] == pytest.approx(1.0)
    wrong = caption_scores(["two blue squares", "a red circle grows"], [["a red circle grows"], ["two blue squares"]])
    assert wrong["cider"] < perfect["cider"] and wrong["bleu4"] < 0.5


def test_hard_negatives_change_one_thing_each():
    rng = np.random.default_rng(0)
    out = negatives(CLIPS[1], VOCAB, rng)
    assert set(out) == {"replace_attribute", "replace_object", "swap_attribute", "reorder_events"}
    assert out["reorder_events"] == "a small green square shrinks, then two small blue crosses move left"
    assert out["swap_attribute"] == "two small green crosses move left, then a small blue square shrinks"
    positive = ", then ".join(e.text for e in CLIPS[1])
    for negative in out.values():
        assert negative != positive and len(negative.split()) == len(positive.split())
    assert replace_shape("two small blue crosses", "cross", "circle") == "two small blue circles"
    assert set(negatives(CLIPS[0], VOCAB, rng)) == {"replace_attribute", "replace_object"}


def test_an_oracle_model_scores_perfectly_where_the_protocol_allows(tmp_path):
    data = _data()
    oracle = Oracle(data)
    ret = retrieval.run(oracle, data)
    assert ret.metrics["t2v_r1"] == 1.0 and ret.metrics["v2t_median_rank"] == 1.0
    assert ret.chance["t2v_r1"] == pytest.approx(1 / 4)
    answers = vqa.run(oracle, data)
    assert answers.metrics["accuracy"] == 1.0
    assert answers.chance["accuracy"] == pytest.approx(1 / 4)  # "what colour": red, blue, white, green
    hard = hard_negatives.run(oracle, data, VOCAB)
    assert hard.metrics["video_accuracy"] == 1.0  # the prediction IS the positive's embedding
    assert set(hard.chance) == set(hard.metrics)
    json_path, md_path = write_result(ret, tmp_path)
    assert json.loads(json_path.read_text())["metrics"]["t2v_r1"] == 1.0
    assert "| retrieval | t2v_r1 | 1.000 | 0.250 |" in md_path.read_text()


def test_frames_selects_first_and_last_frame_tokens():
    data = _data(frames=3, per_frame=2, dim=4)
    tokens = np.arange(len(data) * 6 * 4, dtype=np.float16).reshape(len(data), 6, 4)
    data = TaskData(sample_ids=data.sample_ids, tokens=tokens, captions=data.captions, labels=data.labels,
                    events=data.events, qa=data.qa, num_frames=3)
    picked = data.frames(np.array([1]), [0, 2])  # (1, 4, 4)
    assert torch.equal(picked[0], torch.from_numpy(tokens[1, [0, 1, 4, 5]].astype(np.float32)))


def test_classification_with_templates_on_a_tiny_model():
    from vljepa.config import get_preset
    from vljepa.model import build_model

    torch.manual_seed(0)
    model = build_model(get_preset("tiny"))
    data = _data()
    labels = sorted(set(data.labels)) + ["green cross"]
    result = classification.run(model, data, labels)
    assert np.asarray(result.details["confusion"]).sum() == len(data)
    emb = classification.label_embeddings(model, labels)
    # The class embedding is the normalised mean of one embedding per template (each built alone).
    one = torch.stack([classification.label_embeddings(model, labels, (t,)) for t in classification.TEMPLATES])
    assert torch.allclose(emb, F.normalize(one.mean(0), dim=-1), atol=1e-6)
    assert not torch.allclose(emb, one[0], atol=1e-3)  # averaging changed something: not just the first template
    # top-1 / top-5 from the ranks of the true class among the averaged classes, counted here
    from vljepa.tasks.common import predict

    video = predict(model, data.dataset().visual(list(range(len(data)))))  # no training query: stage 1
    scores = (video @ emb.T).numpy()
    truth = np.array([labels.index(lbl) for lbl in data.labels])
    ranks = (scores > scores[np.arange(len(data)), truth][:, None]).sum(1)  # classes scoring above the truth
    assert result.metrics == pytest.approx({"top1": float((ranks == 0).mean()), "top5": float((ranks < 5).mean())})
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(labels)), atol=1e-5)
    assert F.cosine_similarity(emb[0], emb[1], dim=0) < 0.9999


def test_full_evaluation_on_a_tiny_checkpoint_via_the_manifest():
    from tests.tiny_run import tiny_evaluation, tiny_run

    summary = tiny_evaluation()
    out = tiny_run()["state"] / "eval"
    for task in ("retrieval", "classification", "captioning", "vqa", "hard_negatives", "world_prediction",
                 "decoder_round_trip", "embedding_space"):
        assert (out / "tasks" / f"{task}.json").is_file() and (out / "tasks" / f"{task}.md").is_file()
    for metric in ("retrieval/t2v_r1", "classification/top1", "captioning/cider", "vqa/accuracy",
                   "hard_negatives/text_accuracy", "world_prediction/accuracy", "embedding_space/alignment"):
        assert metric in summary["metrics"]
    assert summary["chance"]["world_prediction/accuracy"] == pytest.approx(0.25)
    for png in ("embedding_map.png", "confusion_matrix.png", "retrieval_ranks.png", "decoded_examples.png"):
        assert (out / "plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert "| captioning | cider |" in (out / "summary.md").read_text()


def test_the_y_decoder_trains_on_the_predictors_outputs_for_the_training_clips(tmp_path, monkeypatch):
    import vljepa.decoder_train
    from flows.evaluate import EvalConfig, ensure_decoder
    from preprocessing.shards import read_cache
    from vljepa.checkpoint import load_checkpoint
    from vljepa.tasks.common import predict
    from tests.tiny_run import tiny_evaluation, tiny_run

    run = tiny_run()
    train = read_cache(run["train_cache"])
    info = tiny_evaluation()["decoder"]
    assert info["training"] == "text+predicted" and info["n_predicted"] == len(train.sample_ids) > 3

    first = read_cache(run["train_cache"], limit=3)  # the first 3 samples, the same as the whole read's
    assert first.sample_ids == train.sample_ids[:3] and np.array_equal(first.tokens, train.tokens[:3])

    model = load_checkpoint(run["checkpoint_dir"])
    seen = {}
    original = vljepa.decoder_train.train_decoder  # ensure_decoder imports it when called

    def spy(model_, texts, cfg, **kwargs):
        seen["extra"] = kwargs.get("extra")
        return original(model_, texts, cfg, **kwargs)

    monkeypatch.setattr(vljepa.decoder_train, "train_decoder", spy)
    cfg = EvalConfig(decoder_steps=2, decoder_predicted_max=3)
    checkpoint = Path(run["checkpoint_dir"])
    _, small = ensure_decoder(model, checkpoint, run["db_path"], tmp_path / "a", cfg, run["train_cache"])
    embeddings, captions = seen["extra"]
    want = predict(model, torch.from_numpy(first.tokens.astype(np.float32)))  # stage 1: query-free
    assert torch.allclose(embeddings, want, atol=1e-5) and len(captions) == 3 and small["n_predicted"] == 3

    _, text = ensure_decoder(model, Path(run["checkpoint_dir"]), run["db_path"], tmp_path / "b",
                             dataclasses.replace(cfg, decoder_train="text"))
    assert seen["extra"] is None and text["n_predicted"] == 0 and text["key"] != small["key"]
    with pytest.raises(ValueError, match="train_cache"):
        ensure_decoder(model, Path(run["checkpoint_dir"]), run["db_path"], tmp_path / "c", cfg)
