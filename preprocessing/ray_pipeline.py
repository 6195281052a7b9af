"""Ray Data engine: manifest rows -> ffmpeg decode/sample -> frozen x-encoder -> token shards.

    ds = ray.data.from_items(clips)                       # one row per video
      .map_batches(DecodeSample, ...)                      # ffmpeg (a subprocess per video)
      .map_batches(EncodeTokens, concurrency=n_actors,     # callable class: the encoder is
                   batch_size=B, num_gpus=g)               # built once per actor in __init__
    driver: iter_batches -> ShardWriter (shard size, temp name + rename, index.json last)

The driver writes the shards itself instead of ``write_parquet``, which would make one file
per block (STACK-NOTES) and know nothing of the cache key or the index. Failed videos travel
through the pipeline as rows with an ``error`` and are recorded, never dropped.

Where Ray runs
--------------
``ensure_ray()`` calls ``ray.init(num_cpus=..., include_dashboard=False)`` on this machine
(``address="local"``: a Ray of its own, even if another one runs here) unless Ray is already
initialised. To use a cluster, start it (``ray start --head`` on one
node, ``ray start --address=HEAD:6379`` on the others) and either set
``RAY_ADDRESS=HEAD:6379`` for the harness (``flows.env``) or pass ``address="HEAD:6379"`` (``"auto"`` inside a cluster node);
then ``ray.init(address=...)`` connects and the same code runs there. Every node needs
ffmpeg, this repository on its PYTHONPATH and read access to the video paths (a shared
filesystem); set ``num_gpus=1`` to put each encoder actor on a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from preprocessing.encode import ClipRef
from preprocessing.pipeline import (
    CacheConfig,
    Failure,
    PreprocessResult,
    _finish,
    decode_items,
    encode_samples,
    result_from_index,
    sample_id_for,
    sharded_cache_key,
    write_copied,
)
from preprocessing.reuse import CachedClips, settings_key
from preprocessing.sampling import SamplingConfig
from preprocessing.shards import ShardedCache, TokenRecord


@dataclass(frozen=True, kw_only=True)
class RayConfig:
    """How the Ray Data pipeline is laid out."""

    address: str | None = None  # None: a local Ray of our own (the harness passes $RAY_ADDRESS: flows.env)
    num_cpus: int | None = 2  # local Ray only: CPUs it may use
    decode_concurrency: int = 2  # parallel decode tasks
    encode_actors: int = 1  # encoder actors (each loads the model once)
    batch_size: int = 8  # samples per encoder call
    num_gpus: float = 0.0  # GPUs per encoder actor (0 on CPU machines)
    # CPUs Ray reserves per actor. A decode actor mostly waits on its ffmpeg subprocess, so
    # half a CPU lets 2 decoders and 1 encoder share a 2-CPU Ray instead of queueing.
    decode_cpus: float = 0.5
    encode_cpus: float = 1.0


def ensure_ray(cfg: RayConfig) -> None:
    """Connect to the cluster at ``cfg.address``, or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    if cfg.address:
        ray.init(address=cfg.address)
    else:
        # address="local": always a new Ray of our own, never a cluster some other process on
        # this machine happens to have started (ray.init() alone would join it).
        ray.init(address="local", num_cpus=cfg.num_cpus, include_dashboard=False, log_to_driver=False)


def _known(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return number if number > 0 else None


class DecodeSample:
    """map_batches function: clips -> sample rows (frames as bytes) or error rows."""

    def __init__(self, sampling: SamplingConfig, size: int, num_frames: int) -> None:
        self.sampling, self.size, self.num_frames = sampling, size, num_frames

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows: dict[str, list] = {k: [] for k in ("sample_id", "source_id", "path", "frames", "timestamps", "error")}
        clips = [ClipRef(str(source_id), str(path), str(content_hash), duration=_known(duration), fps=_known(fps))
                 for source_id, path, content_hash, duration, fps in zip(
                     batch["sample_id"], batch["path"], batch["content_hash"], batch["duration"], batch["fps"])]
        decoded = decode_items(clips, self.sampling, size=self.size, num_frames=self.num_frames)
        for clip, (samples, failure) in zip(clips, decoded):
            if failure is not None:
                samples = []
                rows["sample_id"].append(""), rows["source_id"].append(clip.sample_id), rows["path"].append(clip.path)
                rows["frames"].append(b""), rows["timestamps"].append(b""), rows["error"].append(failure.error)
            for sample in samples:
                rows["sample_id"].append(sample_id_for(clip.sample_id, sample, len(samples)))
                rows["source_id"].append(clip.sample_id), rows["path"].append(clip.path)
                rows["frames"].append(np.ascontiguousarray(sample.frames).tobytes())
                rows["timestamps"].append(sample.timestamps.astype(np.float64).tobytes())
                rows["error"].append("")
        return {k: np.array(v, dtype=object) for k, v in rows.items()}


class EncodeTokens:
    """map_batches callable class: the frozen x-encoder is built once per actor."""

    def __init__(self, encoder_cfg: Any) -> None:
        import torch

        from vljepa.encoders import build_x_encoder

        torch.set_num_threads(1)  # one core per actor; actors give the parallelism
        self.encoder = build_x_encoder(encoder_cfg)
        self.spec = self.encoder.spec

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        size, t = self.spec.image_size, self.spec.num_frames
        good = [i for i, error in enumerate(batch["error"]) if not error]
        tokens: list[bytes] = [b""] * len(batch["error"])
        if good:
            frames = [np.frombuffer(batch["frames"][i], dtype=np.uint8).reshape(t, size, size, 3) for i in good]
            encoded = encode_samples(self.encoder, frames)  # (b, N, D) float16
            for i, tok in zip(good, encoded):
                tokens[i] = tok.tobytes()
        return {"sample_id": batch["sample_id"], "source_id": batch["source_id"], "path": batch["path"],
                "timestamps": batch["timestamps"], "error": batch["error"],
                "tokens": np.array(tokens, dtype=object)}


def run_ray(encoder: Any, encoder_cfg: Any, clips: list[ClipRef], sampling: SamplingConfig,
            cache: CacheConfig, ray_cfg: RayConfig = RayConfig(), *, progress: bool = False,
            config: dict[str, Any] | None = None) -> PreprocessResult:
    """Preprocess ``clips`` with Ray Data into a sharded token cache (no-op when complete).

    encoder: the built encoder on the driver (for the cache key and token shape);
    encoder_cfg: its XEncoderConfig, rebuilt once in each actor.
    Clips another complete cache under the same root holds with the same settings are copied from
    it first (``preprocessing.reuse``, as ``run_local`` does); only the others go through Ray.
    """
    start = time.perf_counter()
    store = ShardedCache(cache.root)
    key = sharded_cache_key(encoder, sampling, cache, clips)
    if store.exists(key):
        return result_from_index(store, key, n_in=len(clips))
    settings = settings_key(encoder, sampling)
    reusable = CachedClips(store.root, settings, {(c.sample_id, c.content_hash) for c in clips})
    writer = store.writer(key, fmt=cache.format, shard_size=cache.shard_size, encoder_id=encoder.encoder_id)
    failures: list[Failure] = []
    cached: dict[str, int] = {}
    n_frames = n_reused = 0
    fresh: list[ClipRef] = []
    for clip in clips:
        records = reusable.take(clip.sample_id, clip.content_hash)
        if not records:  # not cached elsewhere (or not found in order there): through Ray
            fresh.append(clip)
            continue
        n_frames += write_copied(writer, clip.sample_id, records, cached)
        n_reused += 1
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(clips), initial=n_reused, desc="preprocess[ray]", unit="video")
    if fresh:
        n_frames += _encode_with_ray(encoder, encoder_cfg, fresh, sampling, ray_cfg, writer, cached, failures, bar,
                                     start)
    if bar is not None:
        bar.close()
    return _finish(writer, store, key, config, sampling, cache, clips, cached, failures, n_frames, start,
                   settings=settings, n_reused=n_reused)


def _encode_with_ray(encoder: Any, encoder_cfg: Any, clips: list[ClipRef], sampling: SamplingConfig,
                     ray_cfg: RayConfig, writer: Any, cached: dict[str, int], failures: list[Failure], bar: Any,
                     start: float) -> int:
    """Decode and encode ``clips`` in a Ray Data pipeline into ``writer``; returns the frames encoded."""
    import ray

    ensure_ray(ray_cfg)
    spec = encoder.spec
    items = [{"sample_id": c.sample_id, "path": c.path, "content_hash": c.content_hash,
              "duration": c.duration or 0.0, "fps": c.fps or 0.0} for c in clips]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 4 * ray_cfg.decode_concurrency)))
    ds = ds.map_batches(DecodeSample, fn_constructor_args=(sampling, spec.image_size, spec.num_frames),
                        batch_size=1, compute=ray.data.ActorPoolStrategy(size=ray_cfg.decode_concurrency),
                        num_cpus=ray_cfg.decode_cpus)
    ds = ds.map_batches(EncodeTokens, fn_constructor_args=(encoder_cfg,), batch_size=ray_cfg.batch_size,
                        compute=ray.data.ActorPoolStrategy(size=ray_cfg.encode_actors),
                        num_gpus=ray_cfg.num_gpus or None, num_cpus=ray_cfg.encode_cpus)
    shape = (encoder.num_tokens, encoder.token_dim)
    seen_sources: set[str] = set()
    n_frames = 0
    for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
        for i in range(len(batch["error"])):
            source_id, error = str(batch["source_id"][i]), str(batch["error"][i])
            if error:
                failures.append(Failure(source_id=source_id, path=str(batch["path"][i]), stage="decode", error=error))
            else:
                tok = np.frombuffer(batch["tokens"][i], dtype=np.float16).reshape(shape)
                stamps = np.frombuffer(batch["timestamps"][i], dtype=np.float64)
                writer.add(TokenRecord(str(batch["sample_id"][i]), source_id, tok, stamps))
                cached[source_id] = cached.get(source_id, 0) + 1
                n_frames += len(stamps)
            if bar is not None and source_id not in seen_sources:
                bar.update(1)
            seen_sources.add(source_id)
        if bar is not None:
            elapsed = max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(videos_s=f"{len(seen_sources) / elapsed:.2f}", frames_s=f"{n_frames / elapsed:.1f}")
    return n_frames
