"""Tokens a clip already has in another cache: adding one clip to a split encodes only that clip.

A cache's key covers its whole clip list, so one new clip makes a new cache. Its other clips need
not be decoded and encoded again: any complete cache under the same root made with the same
settings (encoder and its weights, preprocessing, sampling: ``settings_key``) holds their tokens.
``index.json`` records the settings key and each cached clip's content hash; ``CachedClips`` finds
the clips another cache holds and streams their records out of it, shard by shard (memory stays
at one shard of each source cache). A clip whose file changed has another content hash: it is
encoded again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from preprocessing.shards import INDEX_FILE, TokenRecord, read_shard
from vljepa.files import canonical_sha256


def token_settings(encoder: Any, sampling: Any) -> dict[str, Any]:
    """What makes two caches' tokens for one clip equal: the encoder (id, weights hash, preprocessing,
    token layout) and the sampling config. ``pipeline.sharded_cache_key`` adds the shard format and
    size and the clips."""
    spec = encoder.spec
    return {"encoder_id": encoder.encoder_id, "weights": encoder.weights_hash(),
            "num_frames": spec.num_frames, "image_size": spec.image_size, "mean": list(spec.mean), "std": list(spec.std),
            "num_tokens": encoder.num_tokens, "token_dim": encoder.token_dim, "sampling": dataclasses.asdict(sampling)}


def settings_key(encoder: Any, sampling: Any) -> str:
    """The content key of ``token_settings``: caches with equal keys hold equal tokens for a clip."""
    return canonical_sha256({"kind": "clip-tokens/1", **token_settings(encoder, sampling)})


class _Stream:
    """One source cache's records in order, read a shard at a time."""

    def __init__(self, directory: Path, shards: list[str]) -> None:
        self._records: Iterator[TokenRecord] = (r for name in shards for r in read_shard(directory / name))
        self._head: TokenRecord | None = None

    def take(self, source_id: str) -> list[TokenRecord]:
        """The records of ``source_id``: skips records before it; empty if the stream ran past it."""
        out: list[TokenRecord] = []
        while True:
            record = self._head if self._head is not None else next(self._records, None)
            self._head = None
            if record is None:
                return out
            if record.source_id == source_id:
                out.append(record)
            elif out:  # the clip's records are consecutive: the next clip starts here
                self._head = record
                return out


class CachedClips:
    """The clips that complete caches under ``root`` with settings ``settings`` hold, by (id, content hash)."""

    def __init__(self, root: Path, settings: str, wanted: set[tuple[str, str]]) -> None:
        self._where: dict[tuple[str, str], Path] = {}
        self._streams: dict[Path, _Stream] = {}
        self._shards: dict[Path, list[str]] = {}
        for index_path in sorted(Path(root).glob(f"*/*/{INDEX_FILE}")):
            try:
                index = json.loads(index_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            config = index.get("config") or {}
            if config.get("settings_key") != settings:
                continue
            hashes = config.get("clip_hashes") or {}
            for source_id in config.get("cached_source_ids", []):
                key = (source_id, hashes.get(source_id))
                if key in wanted and key not in self._where:
                    self._where[key] = index_path.parent
                    self._shards[index_path.parent] = [s["name"] for s in index["shards"]]

    def __contains__(self, clip: tuple[str, str]) -> bool:
        return clip in self._where

    def take(self, source_id: str, content_hash: str) -> list[TokenRecord]:
        """The clip's records from the cache that holds it (empty: not found in order; encode it)."""
        directory = self._where.get((source_id, content_hash))
        if directory is None:
            return []
        if directory not in self._streams:
            self._streams[directory] = _Stream(directory, self._shards[directory])
        return self._streams[directory].take(source_id)
