"""Sharded token caches in two formats: Parquet files and WebDataset tar shards.

A sharded cache is one directory per content key::

    root/<key[:2]>/<key>/shard-00000.parquet   (or .tar), shard-00001..., each <= shard_size samples
    root/<key[:2]>/<key>/index.json            written last: shards, counts, shape, config

Parquet shards use ``preprocessing.cache.write_token_cache`` (float16 fixed-size lists).
WebDataset shards hold, per sample, ``<key>.tokens.npy`` (float16 (N, D)) and ``<key>.json``
(sample_id, source_id, timestamps, encoder_id); ``webdataset.WebDataset`` reads them as is.

Every shard and the index are written to a hidden temporary name and renamed when whole.
``index.json`` is what marks a cache complete: a killed run leaves hidden temp files and
perhaps some whole shards, never an index, so ``ShardedCache.exists`` stays False and the next
run writes the cache again (the stale files are removed first).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from preprocessing.cache import TokenCache, read_token_cache, write_token_cache
from vljepa.files import atomic_write, atomic_write_json, is_key

ShardFormat = Literal["parquet", "webdataset"]
SHARD_SUFFIX = {"parquet": ".parquet", "webdataset": ".tar"}
INDEX_FILE = "index.json"


def _wds_key(sample_id: str) -> str:
    # WebDataset splits a member name at its first dot: keys must not contain one.
    return sample_id.replace(".", "_").replace("/", "_")


@dataclass(frozen=True)
class TokenRecord:
    """One cached sample: tokens float16 (N, D), timestamps float64 (T,) seconds."""

    sample_id: str
    source_id: str
    tokens: np.ndarray
    timestamps: np.ndarray


def write_wds_shard(path: Path, records: list[TokenRecord], *, encoder_id: str) -> Path:
    """Write one WebDataset tar (.tokens.npy + .json per sample) atomically."""
    keys = [_wds_key(r.sample_id) for r in records]
    if len(set(keys)) != len(keys):
        raise ValueError("sample ids collide once dots and slashes become underscores")

    def write(handle) -> None:
        with tarfile.open(fileobj=handle, mode="w") as tar:
            for key, record in zip(keys, records):
                buffer = io.BytesIO()
                np.save(buffer, np.ascontiguousarray(record.tokens, dtype=np.float16))
                meta = {"sample_id": record.sample_id, "source_id": record.source_id,
                        "timestamps": [float(t) for t in record.timestamps], "encoder_id": encoder_id}
                for name, data in ((f"{key}.tokens.npy", buffer.getvalue()),
                                   (f"{key}.json", json.dumps(meta).encode("utf-8"))):
                    info = tarfile.TarInfo(name)
                    info.size, info.mtime, info.mode = len(data), 0, 0o644  # mtime 0: same bytes each run
                    tar.addfile(info, io.BytesIO(data))

    return atomic_write(path, write)


def read_wds_shard(path: str | os.PathLike) -> Iterator[TokenRecord]:
    """Samples of one WebDataset tar written by write_wds_shard, in order."""
    with tarfile.open(path, mode="r") as tar:
        pending: dict[str, dict[str, bytes]] = {}
        for member in tar:
            key, _, ext = member.name.partition(".")
            handle = tar.extractfile(member)
            if handle is None:
                continue
            parts = pending.setdefault(key, {})
            parts[ext] = handle.read()
            if {"tokens.npy", "json"} <= parts.keys():
                meta = json.loads(pending.pop(key)["json"])
                tokens = np.load(io.BytesIO(parts["tokens.npy"]), allow_pickle=False)
                yield TokenRecord(meta["sample_id"], meta["source_id"], tokens,
                                  np.asarray(meta["timestamps"], dtype=np.float64))
        if pending:
            raise ValueError(f"{path}: samples {sorted(pending)[:3]} miss their tokens or json")


def read_parquet_shard(path: str | os.PathLike) -> Iterator[TokenRecord]:
    cache = read_token_cache(path)
    sources = cache.metadata.get("source_ids") or cache.sample_ids
    for i, sample_id in enumerate(cache.sample_ids):
        yield TokenRecord(sample_id, sources[i], cache.tokens[i], cache.timestamps[i])


def read_shard(path: str | os.PathLike) -> Iterator[TokenRecord]:
    """Samples of one shard of either format (chosen by suffix)."""
    return read_wds_shard(path) if str(path).endswith(".tar") else read_parquet_shard(path)


class ShardWriter:
    """Collects records and writes them as shards of ``shard_size`` samples, then the index.

    Use ``add`` for each sample and ``close`` at the end; nothing is complete before close.
    """

    def __init__(self, directory: Path, *, fmt: ShardFormat, shard_size: int, encoder_id: str) -> None:
        if fmt not in SHARD_SUFFIX:
            raise ValueError(f"format must be parquet or webdataset, got {fmt!r}")
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory, self.fmt, self.shard_size, self.encoder_id = directory, fmt, shard_size, encoder_id
        self.shards: list[dict[str, Any]] = []
        self._pending: list[TokenRecord] = []
        self._shape: tuple[int, int] | None = None
        self.n_samples = 0

    def add(self, record: TokenRecord) -> None:
        shape = tuple(record.tokens.shape)
        if self._shape is None:
            self._shape = shape  # type: ignore[assignment]
        elif shape != self._shape:
            raise ValueError(f"{record.sample_id}: tokens {shape}, earlier samples {self._shape}")
        self._pending.append(record)
        if len(self._pending) >= self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        records, self._pending = self._pending, []
        name = f"shard-{len(self.shards):05d}{SHARD_SUFFIX[self.fmt]}"
        path = self.directory / name
        if self.fmt == "webdataset":
            write_wds_shard(path, records, encoder_id=self.encoder_id)
        else:
            write_token_cache(
                path, sample_ids=[r.sample_id for r in records],
                tokens=np.stack([r.tokens for r in records]).astype(np.float16),
                timestamps=np.stack([r.timestamps for r in records]).astype(np.float64),
                encoder_id=self.encoder_id, metadata={"source_ids": [r.source_id for r in records]},
            )
        self.shards.append({"name": name, "n_samples": len(records), "bytes": path.stat().st_size})
        self.n_samples += len(records)

    def close(self, config: dict[str, Any]) -> Path:
        """Write the last shard and then index.json (the completeness mark); returns the index path."""
        self._flush()
        return atomic_write_json(self.directory / INDEX_FILE, {
            "format": self.fmt, "encoder_id": self.encoder_id, "n_samples": self.n_samples,
            "shape": list(self._shape) if self._shape else None, "shards": self.shards, "config": config,
        })


class ShardedCache:
    """Sharded token caches under ``root``, one directory per content key."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def dir_for(self, key: str) -> Path:
        if not is_key(key):
            raise ValueError(f"cache key must be lowercase hex, got {key!r}")
        return self.root / key[:2] / key

    def exists(self, key: str) -> bool:
        return (self.dir_for(key) / INDEX_FILE).is_file()

    def writer(self, key: str, *, fmt: ShardFormat, shard_size: int, encoder_id: str) -> ShardWriter:
        """A writer into a fresh directory for ``key`` (leftovers of a killed run are removed)."""
        directory = self.dir_for(key)
        if (directory / INDEX_FILE).exists():
            raise FileExistsError(f"cache {key} is already complete at {directory}")
        if directory.exists():
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        return ShardWriter(directory, fmt=fmt, shard_size=shard_size, encoder_id=encoder_id)

    def index(self, key: str) -> dict[str, Any]:
        path = self.dir_for(key) / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no complete sharded cache for key {key} (expected {path})")
        return json.loads(path.read_text(encoding="utf-8"))

    def shard_paths(self, key: str) -> list[Path]:
        directory = self.dir_for(key)
        return [directory / shard["name"] for shard in self.index(key)["shards"]]


def complete_shard_paths(cache_dir: str | os.PathLike) -> list[Path]:
    """Shards listed by ``cache_dir/index.json``; an error if the cache is incomplete."""
    cache_dir = Path(cache_dir)
    index_path = cache_dir / INDEX_FILE
    if not index_path.is_file():
        raise FileNotFoundError(f"{cache_dir} has no {INDEX_FILE}: not a complete sharded cache "
                                "(a killed run? run preprocessing again)")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    return [cache_dir / shard["name"] for shard in index["shards"]]


def read_cache(path: str | os.PathLike, limit: int | None = None) -> TokenCache:
    """Read a whole token cache into memory: a sharded cache directory (its shards in index order,
    stacked) or a single ``write_token_cache`` file. The one reader of cache directories.

    limit: read only the first ``limit`` samples (shards past them are not opened).
    """
    cache_dir = Path(path)
    if not cache_dir.is_dir():
        cache = read_token_cache(cache_dir)
        if limit is None or limit >= len(cache.sample_ids):
            return cache
        return TokenCache(sample_ids=cache.sample_ids[:limit], tokens=cache.tokens[:limit],
                          timestamps=cache.timestamps[:limit], encoder_id=cache.encoder_id, metadata=cache.metadata)
    records = []
    for shard in complete_shard_paths(cache_dir):
        if limit is not None and len(records) >= limit:
            break
        records += list(read_shard(shard))
    records = records[:limit] if limit is not None else records
    if not records:
        raise ValueError(f"{cache_dir}: the sharded cache holds no samples")
    index = json.loads((cache_dir / INDEX_FILE).read_text(encoding="utf-8"))
    return TokenCache(
        sample_ids=[r.sample_id for r in records],
        tokens=np.stack([r.tokens for r in records]),
        timestamps=np.stack([r.timestamps for r in records]),
        encoder_id=str(index.get("encoder_id", "")),
        metadata=index,
    )
