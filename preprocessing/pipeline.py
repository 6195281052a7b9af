"""Decode/sample -> frozen x-encoder -> sharded token cache, in-process (threads).

The pure pieces here (``decode_items``, ``encode_samples``, ``sharded_cache_key``) are shared
with the Ray Data engine in ``preprocessing.ray_pipeline``; ``run_local`` is the engine for one
machine without Ray. Both return a ``PreprocessResult`` whose counts satisfy
``n_in == n_cached_sources + n_failed_sources``: every input is cached or recorded as failed.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from preprocessing.decode import DecodeError, frames_to_tensor
from preprocessing.encode import ClipRef
from preprocessing.reuse import CachedClips, settings_key, token_settings
from preprocessing.sampling import Sample, SamplingConfig, sample_clip, sample_clips
from preprocessing.shards import ShardedCache, ShardFormat, TokenRecord
from vljepa.files import canonical_sha256

Engine = Literal["local", "ray"]
DECODE_CHUNK = 16  # files a decode worker hands to one ffmpeg process (decode_items)


@dataclass(frozen=True, kw_only=True)
class CacheConfig:
    """Where and how token shards are written."""

    root: str  # directory of the sharded caches
    format: ShardFormat = "parquet"
    shard_size: int = 512  # samples per shard (the one default: the main job's token caches are keyed by it)


@dataclass(frozen=True, kw_only=True)
class Failure:
    source_id: str
    path: str
    stage: str  # 'decode' | 'encode'
    error: str


@dataclass
class PreprocessResult:
    cache_key: str
    cache_dir: Path
    reused: bool
    n_in: int  # input clips
    n_cached_sources: int  # clips with at least one cached sample
    n_samples: int  # cached samples (windows count separately)
    n_frames: int  # frames decoded into cached samples
    failures: list[Failure] = field(default_factory=list)
    cached_source_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    n_reused_sources: int = 0  # clips whose tokens came from another cache (preprocessing.reuse), not encoded

    @property
    def n_failed_sources(self) -> int:
        return len({f.source_id for f in self.failures})


def sharded_cache_key(encoder: Any, sampling: SamplingConfig, cache: CacheConfig, clips: list[ClipRef]) -> str:
    """Key over the encoder (id, weights hash, preprocessing, token layout), the sampling
    config, the shard format and size, and every clip's id and content hash."""
    return canonical_sha256({
        "kind": "sharded-tokens/1", **token_settings(encoder, sampling),
        "format": cache.format, "shard_size": cache.shard_size,
        "clips": sorted((c.sample_id, c.content_hash) for c in clips),
    })


def fit_to_encoder(samples: list[Sample], num_frames: int, strategy: str) -> list[Sample]:
    """Make every sample ``num_frames`` long: images are already repeated; an ``fps`` run is
    cut into consecutive chunks of num_frames (the remainder dropped); other lengths are an error."""
    if strategy == "fps":
        out = []
        for s in samples:
            if len(s.frames) == num_frames:
                out.append(s)
                continue
            for k, start in enumerate(range(0, len(s.frames) - num_frames + 1, num_frames)):
                out.append(Sample(k, s.frames[start:start + num_frames], s.timestamps[start:start + num_frames]))
        return out
    for s in samples:
        if len(s.frames) != num_frames:
            raise ValueError(f"sample has {len(s.frames)} frames, the encoder takes {num_frames}: "
                             "set the sampling num_frames / window to the encoder's")
    return samples


def decode_item(clip: ClipRef, sampling: SamplingConfig, *, size: int, num_frames: int) -> tuple[list[Sample], Failure | None]:
    """Samples of one clip ready for the encoder, or the failure that stopped it."""
    try:
        got: list[Sample] | DecodeError | OSError = sample_clip(
            clip.path, sampling, size=size, repeat_to=num_frames, duration=clip.duration, fps=clip.fps)
    except (DecodeError, OSError) as err:  # OSError: unreadable path, permission denied
        got = err
    return _fitted(clip, got, sampling, num_frames)


def decode_items(clips: list[ClipRef], sampling: SamplingConfig, *, size: int,
                 num_frames: int) -> list[tuple[list[Sample], Failure | None]]:
    """``decode_item`` of each clip, images and uniform samples several to one ffmpeg process
    (``preprocessing.sampling.sample_clips``: ~2x the clips/s of one process a clip for 2-second
    clips here, 7-11x for images; bench/bench_decode_batch.py). The same samples and failures."""
    decoded = sample_clips([(c.path, c.duration, c.fps) for c in clips], sampling, size=size, repeat_to=num_frames)
    return [_fitted(clip, got, sampling, num_frames) for clip, got in zip(clips, decoded)]


def _fitted(clip: ClipRef, got: list[Sample] | DecodeError | OSError, sampling: SamplingConfig,
            num_frames: int) -> tuple[list[Sample], Failure | None]:
    if isinstance(got, (DecodeError, OSError)):
        error = got.message if isinstance(got, DecodeError) else str(got)
        return [], Failure(source_id=clip.sample_id, path=clip.path, stage="decode", error=error)
    samples = fit_to_encoder(got, num_frames, sampling.strategy)
    if not samples:
        return [], Failure(source_id=clip.sample_id, path=clip.path, stage="decode",
                           error=f"clip too short: no sample of {num_frames} frames")
    return samples, None


def sample_id_for(source_id: str, sample: Sample, n_samples: int) -> str:
    """A clip's only sample keeps the clip id; windows become '<id>@w<k>'."""
    return source_id if n_samples == 1 else f"{source_id}@w{sample.index}"


def _is_still(stack: np.ndarray) -> bool:
    """One image repeated to fill the clip (``repeat_to``): every frame equals the first."""
    return len(stack) > 1 and all(np.array_equal(stack[0], frame) for frame in stack[1:])


@torch.inference_mode()
def encode_samples(encoder: Any, frames: list[np.ndarray]) -> np.ndarray:
    """uint8 (T, S, S, 3) frame stacks -> float16 tokens (B, N, D) from the frozen encoder.

    A frame-wise encoder (``frame_wise``: tokens of each frame from that frame alone, frame-major)
    encodes a still's repeated frame once and tiles its tokens: T times less work for images at the
    video phase's frame count, the same tokens (tested against encoding every copy). Its frames go
    through in calls of ``frames_per_call`` (small calls run faster on a CPU; same tokens).
    """
    spec = encoder.spec
    if not getattr(encoder, "frame_wise", False):
        pixels = torch.stack([frames_to_tensor(f, spec.mean, spec.std) for f in frames])  # (B, T, 3, S, S)
        return encoder.encode(pixels).to(torch.float32).numpy().astype(np.float16)  # (B, N, D)
    stills = [_is_still(f) for f in frames]
    kept = [f[:1] if still else f for f, still in zip(frames, stills)]
    pixels = torch.cat([frames_to_tensor(f, spec.mean, spec.std) for f in kept])[:, None]  # (frames, 1, 3, S, S)
    step = getattr(encoder, "frames_per_call", None) or len(pixels)
    per_frame = torch.cat([encoder.encode(pixels[at:at + step]).to(torch.float32)
                           for at in range(0, len(pixels), step)])  # (frames, N / T, D)
    out, at = [], 0
    for stack, used, still in zip(frames, kept, stills):
        tokens = per_frame[at:at + len(used)].flatten(0, 1)  # (len(used) * N / T, D)
        out.append(tokens.repeat(len(stack), 1) if still else tokens)
        at += len(used)
    return torch.stack(out).numpy().astype(np.float16)


def run_local(encoder: Any, clips: list[ClipRef], sampling: SamplingConfig, cache: CacheConfig, *,
              batch_size: int = 16, decode_workers: int = 2, progress: bool = False,
              config: dict[str, Any] | None = None) -> PreprocessResult:
    """Decode (thread pool), encode (main thread, batched) and shard-cache ``clips``.

    A no-op returning the existing cache when its key is complete on disk. Clips that another
    complete cache under the same root holds with the same settings are copied from it, not
    decoded or encoded (``preprocessing.reuse``); the records come out in the same order either way.
    """
    start = time.perf_counter()
    store = ShardedCache(cache.root)
    key = sharded_cache_key(encoder, sampling, cache, clips)
    if store.exists(key):
        return result_from_index(store, key, n_in=len(clips))
    settings = settings_key(encoder, sampling)
    reusable = CachedClips(store.root, settings, {(c.sample_id, c.content_hash) for c in clips})
    n_reused = 0
    spec = encoder.spec
    writer = store.writer(key, fmt=cache.format, shard_size=cache.shard_size, encoder_id=encoder.encoder_id)
    failures: list[Failure] = []
    cached: dict[str, int] = {}
    pending: list[tuple[str, str, str, Sample]] = []  # (sample_id, source_id, path, sample)
    n_frames = 0

    def flush() -> None:
        nonlocal n_frames
        if not pending:
            return
        tokens = encode_samples(encoder, [s.frames for _, _, _, s in pending])  # (B, N, D)
        for (sample_id, source_id, path, sample), tok in zip(pending, tokens):
            if not np.isfinite(tok).all():
                failures.append(Failure(source_id=source_id, path=path, stage="encode",
                                        error=f"non-finite tokens for {sample_id}"))
                continue
            writer.add(TokenRecord(sample_id, source_id, tok, sample.timestamps))
            cached[source_id] = cached.get(source_id, 0) + 1
            n_frames += len(sample.frames)
        pending.clear()

    def decode(chunk: list[ClipRef]):
        fresh = [k for k, c in enumerate(chunk) if (c.sample_id, c.content_hash) not in reusable]
        decoded = decode_items([chunk[k] for k in fresh], sampling, size=spec.image_size, num_frames=spec.num_frames)
        got = dict(zip(fresh, decoded))
        return [(clip, got.get(k)) for k, clip in enumerate(chunk)]  # None: copy its tokens instead

    bar = _progress(len(clips)) if progress else None
    chunks = [clips[at:at + DECODE_CHUNK] for at in range(0, len(clips), DECODE_CHUNK)]
    with ThreadPoolExecutor(max_workers=decode_workers) as pool:
        for clip, got in (item for done in pool.map(decode, chunks) for item in done):
            if got is None:
                records = reusable.take(clip.sample_id, clip.content_hash)
                if records:
                    flush()  # what was decoded before this clip is written before it
                    n_frames += write_copied(writer, clip.sample_id, records, cached)
                    n_reused += 1
                    if bar is not None:
                        bar.update(1)
                    continue
                got = decode_items([clip], sampling, size=spec.image_size, num_frames=spec.num_frames)[0]
            samples, failure = got
            if failure is not None:
                failures.append(failure)
            for sample in samples:
                pending.append((sample_id_for(clip.sample_id, sample, len(samples)), clip.sample_id, clip.path, sample))
                if len(pending) >= batch_size:
                    flush()
            if bar is not None:
                bar.update(1)
                bar.set_postfix(frames=n_frames)
        flush()
    if bar is not None:
        bar.set_postfix(frames=n_frames)
        bar.close()
    return _finish(writer, store, key, config, sampling, cache, clips, cached, failures, n_frames, start,
                   settings=settings, n_reused=n_reused)


def write_copied(writer, clip_id: str, records: list[TokenRecord], cached: dict[str, int]) -> int:
    """Write one clip's records copied from another cache (``preprocessing.reuse``); their frames."""
    for record in records:
        writer.add(record)
    cached[clip_id] = cached.get(clip_id, 0) + len(records)
    return sum(len(record.timestamps) for record in records)


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="preprocess", unit="video")


def _finish(writer, store, key, config, sampling, cache, clips, cached, failures, n_frames, start: float, *,
            settings: str, n_reused: int) -> PreprocessResult:
    """Close the cache (its index is written last, marking it whole) and summarise the run. The index
    records ``settings`` and each cached clip's content hash, so later runs can copy clips from it."""
    seconds = time.perf_counter() - start
    hashes = {c.sample_id: c.content_hash for c in clips if c.sample_id in cached}
    config = {**(config or {}), "settings_key": settings, "clip_hashes": hashes}
    writer.close(_index_config(config, sampling, cache, failures, list(cached), n_frames, seconds))
    return PreprocessResult(cache_key=key, cache_dir=store.dir_for(key), reused=False, n_in=len(clips),
                            n_cached_sources=len(cached), n_samples=writer.n_samples, n_frames=n_frames,
                            failures=failures, cached_source_ids=list(cached), seconds=seconds,
                            n_reused_sources=n_reused)


def _index_config(config, sampling, cache, failures, cached_ids, n_frames, seconds) -> dict[str, Any]:
    return {
        **(config or {}),
        "sampling": dataclasses.asdict(sampling), "cache": dataclasses.asdict(cache),
        "failures": [dataclasses.asdict(f) for f in failures],
        "cached_source_ids": cached_ids, "n_frames": n_frames, "seconds": seconds,
    }


def result_from_index(store: ShardedCache, key: str, *, n_in: int) -> PreprocessResult:
    """The result of a cache that is already complete (no decoding or encoding)."""
    index = store.index(key)
    config = index["config"]
    return PreprocessResult(
        cache_key=key, cache_dir=store.dir_for(key), reused=True, n_in=n_in,
        n_cached_sources=len(config["cached_source_ids"]), n_samples=index["n_samples"],
        n_frames=config["n_frames"], failures=[Failure(**f) for f in config["failures"]],
        cached_source_ids=list(config["cached_source_ids"]), seconds=0.0,
    )
