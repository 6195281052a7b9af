"""The WorldPrediction-style task follows the paper's protocol: a state embedding from the
duplicated first and last frames ([first, first, last, last]), 4 candidate clips, the closest
action embedding chosen; tubelet tokens are never cut into fake frames."""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vljepa.config import XEncoderConfig, get_preset
from vljepa.tasks import world_prediction
from tests.test_tasks import CLIPS as TASK_CLIPS
from tests.test_tasks import _event
from vljepa.tasks.common import TaskData
from vljepa.tasks.hard_negatives import Vocabulary
from vljepa.tasks.world_prediction import motion_sequence

VOCAB = Vocabulary(colours=("red", "blue", "green", "white"), shapes=("circle", "square", "cross", "diamond"),
                   motions=("moves left", "moves right", "grows", "shrinks"))


CLIPS = [
    *TASK_CLIPS,
    [_event("a small blue square grows", "blue", "square", "grows")],  # the same action as clip 0
    [_event("a small red cross", "red", "cross", None)],  # no motion annotation: never asked, never a candidate
]
ASKED = [0, 1, 2, 3, 4]


def _data(tokens: np.ndarray, *, num_frames: int, tubelet_size: int = 1, clips=CLIPS) -> TaskData:
    n = len(clips)
    return TaskData(sample_ids=[f"c{i}" for i in range(n)], tokens=tokens,
                    captions=[", then ".join(e.text for e in ev) for ev in clips], labels=[None] * n,
                    events=[list(ev) for ev in clips], qa=[[] for _ in clips], num_frames=num_frames,
                    tubelet_size=tubelet_size)


def _random_tokens(n: int, tokens: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, tokens, dim)).astype(np.float16)


def _tiny_model(x_encoder: XEncoderConfig | None = None):
    from vljepa.model import build_model

    cfg = get_preset("tiny")
    if x_encoder is not None:
        cfg = dataclasses.replace(cfg, x_encoder=x_encoder)
    torch.manual_seed(0)
    return build_model(cfg)


VJEPA2_LIKE = XEncoderConfig(name="vjepa2", num_frames=4, image_size=32, patch_size=16, hidden_size=32, tubelet_size=2)


def test_tubelet_tokens_are_never_split_into_fake_frames(monkeypatch):
    # V-JEPA 2 layout: 4 frames -> 2 tubelets of 2 frames, 4 tokens each. Cutting "frame 0" out of
    # these would take half of the first tubelet's tokens, which mix frames 0 and 1.
    data = _data(_random_tokens(len(CLIPS), 2 * 4), num_frames=4, tubelet_size=2)
    assert data.num_groups == 2
    with pytest.raises(ValueError, match="tubelet"):
        data.frames(np.array([0]), [0, 3])
    model = _tiny_model(VJEPA2_LIKE)
    with pytest.raises(ValueError, match="state tokens"):
        world_prediction.run(model, data, VOCAB)
    with pytest.raises(ValueError, match="token groups"):  # data declared per-frame, model's encoder is tubelet
        world_prediction.run(model, dataclasses.replace(data, tubelet_size=1), VOCAB)

    # Given state tokens (encoded from frames), the predictor sees exactly them for the state.
    state = _random_tokens(len(CLIPS), 2 * 4, seed=1)
    seen, predict = [], model.predict

    def recording_predict(visual, queries=None):
        seen.append(visual.clone())
        return predict(visual, queries)

    monkeypatch.setattr(model, "predict", recording_predict)
    result = world_prediction.run(model, dataclasses.replace(data, state_tokens=state), VOCAB)
    assert result.n == len(ASKED) and 0 <= result.metrics["accuracy"] <= 1
    assert any(torch.equal(v, torch.from_numpy(state[ASKED].astype(np.float32))) for v in seen)
    with pytest.raises(ValueError, match="state_tokens must be"):
        dataclasses.replace(data, state_tokens=state[:, :, :16])


def test_per_frame_state_tokens_are_first_first_last_last():
    frames, per_frame, dim = 3, 2, 4
    tokens = np.arange(len(CLIPS) * frames * per_frame * dim, dtype=np.float16).reshape(len(CLIPS), frames * per_frame, dim)
    data = _data(tokens, num_frames=frames)
    got = world_prediction.state_tokens(data, np.array([1, 4]))  # (2, 4 * per_frame, dim)
    by_frame = tokens[[1, 4]].reshape(2, frames, per_frame, dim)
    want = np.concatenate([by_frame[:, 0], by_frame[:, 0], by_frame[:, 2], by_frame[:, 2]], axis=1)
    assert torch.equal(got, torch.from_numpy(want.astype(np.float32)))


def test_state_input_duplicates_each_image_to_fill_tubelets():
    frames = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)  # frame k is filled with k
    for tubelet, order in ((1, [0, 0, 4, 4]), (2, [0, 0, 4, 4]), (4, [0] * 4 + [4] * 4)):
        assert world_prediction.state_pixels(frames, tubelet)[:, 0, 0, 0].tolist() == order


def test_cached_per_frame_state_tokens_equal_encoding_the_state_images():
    """Independent check of the per-frame shortcut: cut from the cached clip tokens, or the
    [first, first, last, last] frames run through the same (tiny) x-encoder: the same tokens."""
    from vljepa.encoders import build_x_encoder

    encoder = build_x_encoder(XEncoderConfig(name="tiny", num_frames=3, image_size=32, pool_grid=2, hidden_size=32,
                                             patch_size=8))
    clips = torch.randn(len(CLIPS), 3, 3, 32, 32)
    data = _data(encoder.encode(clips).numpy(), num_frames=3)  # (S, 3 * 4, 32)
    cached = world_prediction.state_tokens(data, np.arange(len(CLIPS)))
    direct = encoder.encode(torch.stack([world_prediction.state_pixels(clip, 1) for clip in clips]))
    torch.testing.assert_close(cached, direct)


def test_candidates_are_clips_of_other_actions_with_the_truth_among_them():
    options = world_prediction.clip_candidates(CLIPS, np.random.default_rng(0))
    assert sorted(options) == ASKED
    for clip, candidates in options.items():
        assert len(candidates) == world_prediction.N_CANDIDATES == len(set(candidates)) and clip in candidates
        assert 5 not in candidates
        assert all(motion_sequence(CLIPS[j]) != motion_sequence(CLIPS[clip]) for j in candidates if j != clip)
    assert set(options[0]) == {0, 1, 2, 3} and set(options[4]) == {1, 2, 3, 4}  # 0 and 4 share an action
    assert world_prediction.clip_candidates(CLIPS, np.random.default_rng(0)) == options  # deterministic
    draws = [world_prediction.clip_candidates(CLIPS, np.random.default_rng(seed)) for seed in range(10)]
    assert any(d != options for d in draws)
    assert len({d[clip].index(clip) for d in draws for clip in d}) > 1  # the truth's position varies


class ClipOracle:
    """Predicts a fixed unit vector per clip, read from the tokens' first entry (every frame carries
    it): the state embedding is the true clip's action embedding."""

    def __init__(self) -> None:
        self.inner = _tiny_model()
        self.cfg, self.predictor = self.inner.cfg, self.inner.predictor

    def eval(self):
        return self

    @staticmethod
    def _vector(key: str) -> torch.Tensor:
        return torch.randn(16, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())))

    def encode_text(self, texts):
        return F.normalize(torch.stack([self._vector(t) for t in texts]), dim=-1)

    def predict(self, visual, queries=None):
        return F.normalize(torch.stack([self._vector(f"clip {i}") for i in visual[:, 0, 0].round().long().tolist()]), dim=-1)


def test_world_prediction_end_to_end_on_a_tiny_random_model():
    data = _data(_random_tokens(len(CLIPS), 2 * 4), num_frames=2)  # the tiny preset: 2 frames x 4 tokens
    model = _tiny_model()
    result = world_prediction.run(model, data, VOCAB)
    assert result.n == len(ASKED) and 0 <= result.metrics["accuracy"] <= 1
    assert 0 <= result.metrics["motion_caption_accuracy"] <= 1
    assert result.chance == {"accuracy": 0.25, "motion_caption_accuracy": 0.25}
    assert "four candidate video clips" in result.protocol and "[first, first, last, last]" in result.protocol
    assert world_prediction.run(model, data, VOCAB).metrics == result.metrics
    example = result.details["examples"][0]
    assert example["clip"] in example["candidates"] and example["candidates"][example["truth"]] == example["clip"]

    tokens = np.zeros((len(CLIPS), 2 * 4, 32), dtype=np.float16)
    tokens[:, :, 0] = np.arange(len(CLIPS))[:, None]
    oracle = world_prediction.run(ClipOracle(), _data(tokens, num_frames=2), VOCAB)
    assert oracle.metrics["accuracy"] == 1.0  # truth positions are shuffled: the bookkeeping is right


def test_a_split_too_small_to_ask_is_recorded_not_a_crash():
    few = CLIPS[:3]  # each clip has only 2 others
    result = world_prediction.run(_tiny_model(), _data(_random_tokens(3, 8), num_frames=2, clips=few), VOCAB)
    assert result.n == 0 and math.isnan(result.metrics["accuracy"]) and "skipped" in result.details
    silent = [[_event("a small red cross", "red", "cross", None)]] * 4
    with pytest.raises(ValueError, match="motion annotations"):
        world_prediction.run(_tiny_model(), _data(_random_tokens(4, 8), num_frames=2, clips=silent), VOCAB)


def test_caption_reference_replaces_the_actions_only():
    cands = world_prediction.caption_candidates(CLIPS[1], VOCAB, np.random.default_rng(0))
    assert len(set(cands)) == world_prediction.N_CANDIDATES
    assert cands[0] == ", then ".join(e.text for e in CLIPS[1])
    for alt in cands[1:]:
        first, second = alt.split(", then ")
        assert first.startswith(("two small blue crosses move ", "two small blue crosses grow",
                                 "two small blue crosses shrink"))
        assert "moves" not in first  # plural subject keeps the plural verb
        assert second.startswith("a small green square ") and not second.endswith(" shrinks")


def test_state_tokens_from_decoded_frames_through_the_manifest(tmp_path):
    """``flows.loaders.load_state_tokens``: for the per-frame tiny encoder it reproduces the tokens
    cut from the cache (same frames, same encoder); for a tubelet encoder it gives one token group
    per state image."""
    from transformers import VJEPA2Config, VJEPA2Model

    from flows.loaders import load_state_tokens, load_task_data
    from tests.tiny_run import tiny_run

    run = tiny_run()
    x_encoder = get_preset("tiny").x_encoder
    data = load_task_data(run["db_path"], run["test_cache"], "test", num_frames=x_encoder.num_frames)
    decoded = load_state_tokens(x_encoder, run["db_path"], "test", data.sample_ids)
    cached = world_prediction.state_tokens(data, np.arange(len(data)))
    np.testing.assert_allclose(decoded.astype(np.float32), cached.numpy(), rtol=2e-3, atol=2e-3)

    torch.manual_seed(0)
    VJEPA2Model(VJEPA2Config(crop_size=32, frames_per_clip=4, patch_size=16, tubelet_size=2, hidden_size=32,
                             num_attention_heads=2, num_hidden_layers=2, pred_hidden_size=16,
                             pred_num_attention_heads=2, pred_num_hidden_layers=1)).save_pretrained(tmp_path / "vjepa2")
    tubelet = XEncoderConfig(name="vjepa2", weights=str(tmp_path / "vjepa2"), num_frames=4, image_size=32,
                             patch_size=16, hidden_size=32, tubelet_size=2)
    state = load_state_tokens(tubelet, run["db_path"], "test", data.sample_ids)
    assert state.shape == (len(data), 2 * (32 // 16) ** 2, 32) and np.isfinite(state).all()
