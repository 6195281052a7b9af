"""Adding one clip to a split encodes only that clip (preprocessing/reuse.py), and the cache equals a fresh one."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing import pipeline
from preprocessing.encode import ClipRef
from preprocessing.pipeline import CacheConfig, run_local
from preprocessing.sampling import SamplingConfig
from preprocessing.shards import read_cache
from tests.media import make_h264
from vljepa.files import file_sha256


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    paths = [make_h264(root / f"clip{i}.mp4", 1.0 + 0.1 * i, "64x48", 10 + i) for i in range(7)]
    return [ClipRef(p.stem, str(p), file_sha256(p), duration=None, fps=None) for p in paths]


@pytest.fixture
def encoder(tiny_cfg):
    from vljepa.encoders import build_x_encoder

    return build_x_encoder(tiny_cfg.x_encoder)


def _decoded(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = pipeline.decode_items
    monkeypatch.setattr(pipeline, "decode_items", lambda chunk, *a, **k: seen.extend(c.sample_id for c in chunk)
                        or real(chunk, *a, **k))
    return seen


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_adding_a_clip_encodes_only_that_clip(clips, encoder, tmp_path, monkeypatch, fmt):
    sampling = SamplingConfig(num_frames=encoder.spec.num_frames)
    cache = CacheConfig(root=str(tmp_path / "cache"), format=fmt, shard_size=2)
    first = run_local(encoder, clips[:6], sampling, cache)
    assert first.n_cached_sources == 6 and first.n_reused_sources == 0
    seen = _decoded(monkeypatch)
    second = run_local(encoder, clips, sampling, cache)  # one clip more: a new key, a new cache
    assert second.cache_key != first.cache_key and not second.reused
    assert seen == [clips[6].sample_id] and second.n_reused_sources == 6 and second.n_cached_sources == 7
    monkeypatch.undo()
    fresh = run_local(encoder, clips, sampling, CacheConfig(root=str(tmp_path / "fresh"), format=fmt, shard_size=2))
    assert fresh.cache_key == second.cache_key and fresh.n_reused_sources == 0
    got, want = read_cache(second.cache_dir), read_cache(fresh.cache_dir)
    assert got.sample_ids == want.sample_ids  # the same order as a cache built from nothing
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.timestamps, want.timestamps)


def test_a_clip_whose_file_changed_is_encoded_again(clips, encoder, tmp_path, monkeypatch):
    sampling = SamplingConfig(num_frames=encoder.spec.num_frames)
    cache = CacheConfig(root=str(tmp_path / "cache"), shard_size=4)
    run_local(encoder, clips[:4], sampling, cache)
    changed = [*clips[:3], ClipRef(clips[3].sample_id, clips[4].path, clips[4].content_hash)]  # same id, new file
    seen = _decoded(monkeypatch)
    result = run_local(encoder, changed, sampling, cache)
    assert seen == [clips[3].sample_id] and result.n_reused_sources == 3
    other_settings = SamplingConfig(num_frames=encoder.spec.num_frames, allow_repeat=True)
    seen.clear()
    run_local(encoder, clips[:4], other_settings, cache)  # other settings: other tokens, nothing reused
    assert seen == [c.sample_id for c in clips[:4]]
