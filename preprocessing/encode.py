"""Frozen x-encoder over decoded clips, written to the content-addressed token cache.

Decoding runs in a thread pool (each decode is an ffmpeg subprocess, so threads overlap well)
while the main thread encodes batches. A clip that fails to decode is recorded and skipped;
the rest still reach the cache.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from preprocessing.cache import TokenCacheStore, cache_key
from preprocessing.decode import DecodeError, decode_frames, frames_to_tensor


@dataclass(frozen=True)
class ClipRef:
    sample_id: str
    path: str
    content_hash: str
    # From the manifest's probe at import, when known: lets sampling skip a second ffprobe.
    # Not part of any cache key (the content hash already fixes them).
    duration: float | None = None  # seconds
    fps: float | None = None


@dataclass
class EncodeResult:
    cache_key: str
    path: Path
    sample_ids: list[str]
    reused: bool
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (sample_id, path, error)
    seconds: float = 0.0


def token_cache_key(encoder, clips: list[ClipRef]) -> str:
    """Key over the encoder (id, weights, preprocessing, token layout) and every clip's content."""
    spec = encoder.spec
    return cache_key({
        "encoder_id": encoder.encoder_id,
        "weights": encoder.weights_hash(),
        "num_frames": spec.num_frames, "image_size": spec.image_size,
        "mean": list(spec.mean), "std": list(spec.std),
        "num_tokens": encoder.num_tokens, "token_dim": encoder.token_dim,
        "clips": sorted((c.sample_id, c.content_hash) for c in clips),
    })


def encode_to_cache(encoder, clips: list[ClipRef], store: TokenCacheStore, *, batch_size: int = 16,
                    decode_workers: int = 2, metadata: dict | None = None, progress: bool = True) -> EncodeResult:
    """Decode, encode and cache ``clips``; a no-op returning the existing entry if already cached."""
    key = token_cache_key(encoder, clips)
    if store.exists(key):
        cached = store.read_sidecar(key)
        return EncodeResult(cache_key=key, path=store.path_for(key), sample_ids=[], reused=True,
                            failures=[tuple(f) for f in cached.get("config", {}).get("failures", [])])
    start = time.perf_counter()
    spec = encoder.spec
    ids: list[str] = []
    tokens: list[np.ndarray] = []
    stamps: list[np.ndarray] = []
    failures: list[tuple[str, str, str]] = []
    pending_pixels: list[torch.Tensor] = []
    pending_meta: list[tuple[str, np.ndarray]] = []

    def flush() -> None:
        if not pending_pixels:
            return
        batch = torch.stack(pending_pixels)  # (b, T, 3, H, W)
        out = encoder.encode(batch).to(torch.float16).numpy()  # (b, N, D)
        for (sample_id, ts), tok in zip(pending_meta, out):
            ids.append(sample_id)
            tokens.append(tok)
            stamps.append(ts)
        pending_pixels.clear()
        pending_meta.clear()

    def decode(clip: ClipRef):
        try:
            return clip, decode_frames(clip.path, num_frames=spec.num_frames, size=spec.image_size), None
        except DecodeError as exc:
            return clip, None, str(exc)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(clips), desc=f"encode[{encoder.encoder_id}]", unit="clip")
    with ThreadPoolExecutor(max_workers=decode_workers) as pool, torch.inference_mode():
        for clip, decoded, error in pool.map(decode, clips):
            if decoded is None:
                failures.append((clip.sample_id, clip.path, error or "decode failed"))
            else:
                pending_pixels.append(frames_to_tensor(decoded.frames, spec.mean, spec.std))
                pending_meta.append((clip.sample_id, decoded.timestamps))
                if len(pending_pixels) == batch_size:
                    flush()
            if bar is not None:
                bar.update(1)
        flush()
    if bar is not None:
        bar.close()
    if not ids:
        raise RuntimeError(f"no clip of {len(clips)} could be decoded; first error: {failures[:1]}")
    seconds = time.perf_counter() - start
    meta = dict(metadata or {})
    meta.update({"failures": failures, "encode_seconds": seconds, "weights_hash": encoder.weights_hash()})
    path = store.write(key, sample_ids=ids, tokens=np.stack(tokens), timestamps=np.stack(stamps),
                       encoder_id=encoder.encoder_id, metadata=meta)
    return EncodeResult(cache_key=key, path=path, sample_ids=ids, reused=False, failures=failures, seconds=seconds)
