"""The preprocess stage as one call: manifest split -> decode/sample -> encode -> shards -> manifest.

``run(cfg)`` reads a split's sources from the DuckDB manifest, runs the local or Ray engine,
records the cache, its shards, its members and every failure (stage ``decode`` / ``encode``)
in the manifest, and returns the engine's PreprocessResult. Counts close exactly:
``n_in == n_cached_sources + n_failed_sources``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from preprocessing.encode import ClipRef
from preprocessing.manifest import (
    open_manifest,
    record_failure,
    record_shards,
    record_token_cache,
    split_rows,
)
from preprocessing.pipeline import CacheConfig, Engine, PreprocessResult, run_local
from preprocessing.ray_pipeline import RayConfig
from preprocessing.sampling import SamplingConfig
from vljepa.config import XEncoderConfig
from vljepa.files import canonical_json, file_sha256


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    manifest: str  # DuckDB file
    dataset: str
    split: str
    x_encoder: XEncoderConfig
    cache: CacheConfig
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    engine: Engine = "local"
    batch_size: int = 16
    decode_workers: int = 2
    ray: RayConfig = field(default_factory=RayConfig)  # engine "ray" only
    progress: bool = False


def clips_of_split(con, dataset: str, split: str) -> list[ClipRef]:
    return [ClipRef(r["source_id"], r["path"], r.get("content_hash") or file_sha256(r["path"]),
                    duration=r.get("duration"), fps=r.get("fps"))
            for r in split_rows(con, split, dataset)]


def run(cfg: PreprocessConfig, encoder: Any = None) -> PreprocessResult:
    """Preprocess one split of the manifest into a sharded token cache and record it."""
    from vljepa.encoders import build_x_encoder

    encoder = encoder if encoder is not None else build_x_encoder(cfg.x_encoder)
    if cfg.sampling.strategy != "fps" and cfg.sampling.frames_per_sample() != encoder.spec.num_frames:
        cfg = dataclasses.replace(cfg, sampling=dataclasses.replace(
            cfg.sampling, **({"num_frames": encoder.spec.num_frames} if cfg.sampling.strategy == "uniform"
                             else {"window": encoder.spec.num_frames})))
    con = open_manifest(cfg.manifest)
    try:
        clips = clips_of_split(con, cfg.dataset, cfg.split)
        if not clips:
            raise ValueError(f"split {cfg.dataset}/{cfg.split} has no sources in {cfg.manifest}: import first")
        resolved = {"x_encoder": dataclasses.asdict(cfg.x_encoder), "dataset": cfg.dataset, "split": cfg.split}
        if cfg.engine == "ray":
            from preprocessing.ray_pipeline import run_ray

            result = run_ray(encoder, cfg.x_encoder, clips, cfg.sampling, cfg.cache, cfg.ray,
                             progress=cfg.progress, config=resolved)
        else:
            result = run_local(encoder, clips, cfg.sampling, cfg.cache, batch_size=cfg.batch_size,
                               decode_workers=cfg.decode_workers, progress=cfg.progress, config=resolved)
        record_result(con, result, encoder, cfg)
        return result
    finally:
        con.close()


def record_result(con, result: PreprocessResult, encoder: Any, cfg: PreprocessConfig) -> None:
    """Write the cache, its shards and members, and the failures of a result into the manifest."""
    from preprocessing.shards import ShardedCache

    index = ShardedCache(cfg.cache.root).index(result.cache_key)
    record_token_cache(con, cache_key=result.cache_key, encoder_id=encoder.encoder_id,
                       config_json=canonical_json(index["config"]), path=str(result.cache_dir),
                       source_ids=result.cached_source_ids, num_tokens=encoder.num_tokens)
    record_shards(con, result.cache_key, index["shards"], directory=result.cache_dir, fmt=index["format"])
    for failure in result.failures:
        record_failure(con, failure.path or failure.source_id, failure.stage, failure.error)
