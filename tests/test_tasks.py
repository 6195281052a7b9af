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


def _check_retrieval(ret: dict, n: int) -> None:
    assert ret["details"] == {"t2v_ranks": [1, 1], "v2t_ranks": [2, 1]}
    for prefix in ("t2v", "v2t"):
        ranks = ret["details"][f"{prefix}_ranks"]
        assert len(ranks) == ret["n"] == n
        for k in (1, 5, 10):
            assert ret["metrics"][f"{prefix}_r{k}"] == sum(r <= k for r in ranks) / n
            assert ret["chance"][f"{prefix}_r{k}"] == min(k / n, 1.0)
        lower_median = float(sorted(ranks)[(n - 1) // 2])  # torch's median: the lower middle value
        assert ret["metrics"][f"{prefix}_median_rank"] == lower_median
        assert ret["chance"][f"{prefix}_median_rank"] == (n + 1) / 2
    assert (ret["metrics"]["t2v_r1"], ret["metrics"]["v2t_r1"]) == (1.0, 0.5)


def _check_classification(cls: dict, n: int) -> None:
    confusion = np.asarray(cls["details"]["confusion"])
    assert confusion.shape == (35, 35) and confusion.sum() == cls["n"] == n and len(cls["details"]["labels"]) == 35
    assert cls["metrics"]["top1"] == np.trace(confusion) / n == 0.0
    assert cls["metrics"]["top1"] <= cls["metrics"]["top5"] <= 1.0
    assert cls["chance"] == pytest.approx({"top1": 1 / 35, "top5": 5 / 35}, abs=1e-15)


def _check_decoded_texts(cap: dict, trip: dict, n: int) -> None:
    examples = cap["details"]["examples"]
    assert len(examples) == cap["n"] == n and cap["details"]["decoded"] == [e["decoded"] for e in examples]
    references = [[e["reference"]] for e in examples]
    assert cap["metrics"] == pytest.approx(caption_scores([e["decoded"] for e in examples], references), abs=1e-12)
    assert cap["chance"] == pytest.approx(caption_scores([e["reference"] for e in examples[::-1]], references),
                                          abs=1e-12)  # two clips: "another clip's caption" is the other one's
    pairs = trip["details"]["examples"]
    assert len(pairs) == trip["n"] == n
    assert {k: v for k, v in trip["metrics"].items() if k != "exact_match"} == pytest.approx(
        caption_scores([d for _, d in pairs], [[r] for r, _ in pairs]), abs=1e-12)
    assert trip["metrics"]["exact_match"] == sum(normalise(r) == normalise(d) for r, d in pairs) / n


def _check_vqa(qa: dict, n: int) -> None:
    rows, candidates = qa["details"]["examples"], qa["details"]["candidates"]
    assert len(rows) == qa["n"] == 4 * n  # 4 questions per clip, all in the file
    kinds = [" ".join(r["question"].split()[:2]) for r in rows]
    assert qa["chance"]["accuracy"] == pytest.approx(np.mean([1 / len(candidates[k]) for k in kinds]))
    assert qa["chance"]["accuracy"] == qa["chance"]["decoded_exact_match"] == 0.625
    assert all(r["answer"] in candidates[k] for r, k in zip(rows, kinds))
    exact = [normalise(r["decoded"]) == normalise(r["answer"]) for r in rows]
    assert qa["metrics"]["decoded_exact_match"] == sum(exact) / len(rows)
    per_kind = {k: qa["metrics"]["acc_" + k.replace(" ", "_")] for k in candidates}
    assert qa["metrics"]["accuracy"] == pytest.approx(sum(per_kind[k] for k in kinds) / len(rows))
    assert per_kind["how many"] == 1.0  # one candidate answer ("one")
    assert qa["metrics"]["accuracy"] == 0.625


def _check_hard_negatives(neg: dict) -> None:
    counts = neg["details"]["counts"]
    assert sum(counts.values()) == neg["n"] == len(neg["details"]["examples"]) == 4
    for side, chance in (("text", 1 / 3), ("video", 1 / 2)):
        assert neg["metrics"][f"{side}_accuracy"] == pytest.approx(
            sum(neg["metrics"][f"{side}_{kind}"] * c for kind, c in counts.items()) / neg["n"])
        assert neg["chance"][f"{side}_accuracy"] == chance
        assert all(neg["chance"][f"{side}_{kind}"] == chance for kind in counts)
    assert (neg["metrics"]["text_accuracy"], neg["metrics"]["video_accuracy"]) == (0.0, 0.25)


def _check_embedding_space(space: dict, reference: dict) -> None:
    # Unit vectors: mean squared distance = 2 - 2 mean cosine; the reference pairs each clip with another caption.
    assert space["alignment"] == pytest.approx(2 - 2 * space["matched_cosine"], abs=1e-5)
    assert reference["alignment"] == pytest.approx(2 - 2 * space["unmatched_cosine"], abs=1e-5)
    assert reference["matched_cosine"] == space["unmatched_cosine"]
    assert -1 <= space["matched_cosine"] <= 1 and -1 <= space["unmatched_cosine"] <= 1
    assert 0 <= space["modality_gap"] <= 2  # centroids of unit vectors
    assert space["uniformity_predicted"] <= 0 and space["uniformity_target"] <= 0
    assert space["nn_agreement"] == reference["nn_agreement"] == 1.0  # 1 neighbour of 2


def test_full_evaluation_on_a_tiny_checkpoint_via_the_manifest():
    """Every metric of the suite, recomputed here from what its task file records (ranks, confusion, decoded
    texts) or pinned where the file holds no per-sample outcome; the run is seeded and deterministic."""
    import math

    from tests.tiny_run import tiny_evaluation, tiny_run

    summary = tiny_evaluation()
    out = tiny_run()["state"] / "eval"
    tasks = {}
    for task in ("retrieval", "classification", "captioning", "vqa", "hard_negatives", "world_prediction",
                 "decoder_round_trip", "embedding_space"):
        assert (out / "tasks" / f"{task}.md").is_file()
        tasks[task] = json.loads((out / "tasks" / f"{task}.json").read_text())
    flat = {f"{t}/{k}": v for t, r in tasks.items() for k, v in r["metrics"].items()}
    assert summary["metrics"] == pytest.approx(flat, nan_ok=True)
    assert summary["chance"] == pytest.approx({f"{t}/{k}": v for t, r in tasks.items() for k, v in r["chance"].items()})
    # The tiny test split has 2 clips: world prediction needs 3 others of a different motion per clip, so it is the
    # one task skipped (NaN, n=0, with the reason); every other metric is a number.
    world = tasks["world_prediction"]
    assert world["n"] == 0 and "3 other clips of a different motion" in world["details"]["skipped"]
    assert all(math.isnan(v) for v in world["metrics"].values()) and set(world["metrics"]) == set(world["chance"])
    assert world["chance"] == {"accuracy": 0.25, "motion_caption_accuracy": 0.25}
    assert [k for k, v in flat.items() if not math.isfinite(v)] == ["world_prediction/accuracy",
                                                                    "world_prediction/motion_caption_accuracy"]
    n = summary["n_test"]
    assert n == 2
    _check_retrieval(tasks["retrieval"], n)
    _check_classification(tasks["classification"], n)
    _check_decoded_texts(tasks["captioning"], tasks["decoder_round_trip"], n)
    _check_vqa(tasks["vqa"], n)
    _check_hard_negatives(tasks["hard_negatives"])
    _check_embedding_space(tasks["embedding_space"]["metrics"], tasks["embedding_space"]["chance"])
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
