"""Ray Data engine: same cache content as the local engine, failures kept, re-run is a no-op.

One module-scoped local Ray (~5 s, ~1.7 GiB), shut down after the module.
"""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.encode import ClipRef
from preprocessing.pipeline import CacheConfig, run_local
from preprocessing.sampling import SamplingConfig
from preprocessing.shards import read_shard
from vljepa.files import file_sha256
from tests.media import make_h264


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    from preprocessing.ray_pipeline import RayConfig, ensure_ray

    ensure_ray(RayConfig(num_cpus=2))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("raymedia")
    paths = [make_h264(root / f"c{i}.mp4", 1.0 + 0.3 * i) for i in range(5)]
    (root / "broken.mp4").write_text("not a video")
    paths.append(root / "broken.mp4")
    return [ClipRef(p.stem, str(p), file_sha256(p)) for p in paths]


def tokens_by_id(cache_dir):
    from preprocessing.shards import complete_shard_paths

    return {r.sample_id: (r.tokens, r.timestamps) for p in complete_shard_paths(cache_dir) for r in read_shard(p)}


def test_ray_matches_local_and_reruns_as_no_op(ray_local, clips, tmp_path, tiny_cfg):
    from preprocessing.ray_pipeline import RayConfig, run_ray
    from vljepa.encoders import build_x_encoder

    encoder = build_x_encoder(tiny_cfg.x_encoder)
    sampling = SamplingConfig(strategy="sliding", fps=4, window=tiny_cfg.x_encoder.num_frames, stride=2)
    ray_cfg = RayConfig(decode_concurrency=2, encode_actors=1, batch_size=4)
    result = run_ray(encoder, tiny_cfg.x_encoder, clips, sampling,
                     CacheConfig(root=str(tmp_path / "ray"), format="webdataset", shard_size=4), ray_cfg)
    local = run_local(encoder, clips, sampling, CacheConfig(root=str(tmp_path / "local"), format="webdataset", shard_size=4))
    assert result.cache_key == local.cache_key  # same inputs, same key, whichever engine
    assert result.n_in == 6 == result.n_cached_sources + result.n_failed_sources
    assert [f.source_id for f in result.failures] == ["broken"]
    ray_tokens, local_tokens = tokens_by_id(result.cache_dir), tokens_by_id(local.cache_dir)
    assert sorted(ray_tokens) == sorted(local_tokens) and len(ray_tokens) == result.n_samples
    assert "c0@w0" in ray_tokens  # windows get their own ids
    for sample_id, (tokens, stamps) in local_tokens.items():
        np.testing.assert_allclose(ray_tokens[sample_id][0].astype(np.float32), tokens.astype(np.float32), atol=1e-2)
        np.testing.assert_array_equal(ray_tokens[sample_id][1], stamps)
    again = run_ray(encoder, tiny_cfg.x_encoder, clips, sampling,
                    CacheConfig(root=str(tmp_path / "ray"), format="webdataset", shard_size=4), ray_cfg)
    assert again.reused and again.n_samples == result.n_samples


def test_ray_copies_the_clips_another_cache_holds_and_encodes_the_rest(ray_local, clips, tmp_path, tiny_cfg):
    """Adding a clip to a split cached by the local engine: Ray encodes that clip only (preprocessing.reuse)."""
    from preprocessing.ray_pipeline import RayConfig, run_ray
    from vljepa.encoders import build_x_encoder

    encoder = build_x_encoder(tiny_cfg.x_encoder)
    sampling = SamplingConfig(num_frames=tiny_cfg.x_encoder.num_frames)
    cache = CacheConfig(root=str(tmp_path / "cache"), shard_size=2)
    good = clips[:5]
    first = run_local(encoder, good[:4], sampling, cache)
    more = run_ray(encoder, tiny_cfg.x_encoder, good, sampling, cache,
                   RayConfig(decode_concurrency=1, encode_actors=1, batch_size=2))
    assert (more.n_reused_sources, more.n_cached_sources, more.reused) == (4, 5, False)
    assert more.cache_key != first.cache_key
    fresh = run_local(encoder, good, sampling, CacheConfig(root=str(tmp_path / "fresh"), shard_size=2))
    got, want = tokens_by_id(more.cache_dir), tokens_by_id(fresh.cache_dir)
    assert sorted(got) == sorted(want)
    for sample_id, (tokens, stamps) in want.items():  # the copied four exactly; the Ray-encoded one to fp16
        np.testing.assert_allclose(got[sample_id][0].astype(np.float32), tokens.astype(np.float32), atol=1e-2)
        np.testing.assert_array_equal(got[sample_id][1], stamps)
    # A Ray-made cache records its settings and clip hashes too, so later runs can copy from it.
    import json

    config = json.loads((more.cache_dir / "index.json").read_text())["config"]
    assert config["clip_hashes"] == {c.sample_id: c.content_hash for c in good} and config["settings_key"]
