"""What a training stream reads rows from: token-cache shards, or chunks of videos (live mode).

A source answers ``shard_size(i)`` and ``read_rows(i, rows)``: ``(row, source_id, payload)`` for
the requested rows of shard ``i`` in increasing order, reading the shard front to back (Parquet in
record batches of a few rows, WebDataset member by member) and never holding it whole. The
payload is float16 tokens ``(N, D)`` or float32 frames ``(T, 3, H, W)``.

Bad data stops the stream with a ``BadDataError`` naming the shard and the sample: a shard that
cannot be read, a sample whose token shape differs from the plan's. With ``skip_bad`` it is
skipped instead and counted in the reader's state (``skipped``: shards, samples), which the
training summary reports: the batch is filled with the next good samples, never left short.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from preprocessing.shards import read_wds_shard

PARQUET_BATCH_ROWS = 8  # rows per Parquet record batch read: the reader's memory is this many samples


class BadDataError(ValueError):
    """A shard or sample the stream cannot use (named in the message)."""


@dataclass(frozen=True, kw_only=True)
class FrameSpec:
    """How live mode decodes a video for the frozen x-encoder (``XEncoder.spec``)."""

    num_frames: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class ShardSource(Protocol):
    def shard_size(self, shard: int) -> int: ...

    def read_rows(self, shard: int, rows: Iterable[int]) -> Iterator[tuple[int, str, Any]]: ...


def _parquet_rows(path: str) -> Iterator[tuple[str, str, np.ndarray]]:
    """(sample_id, source_id, tokens float16 (N, D)) of one Parquet shard, a few rows at a time."""
    import pyarrow.parquet as pq

    # buffer_size: read the column chunk through a 1 MiB buffer; the default (0) reads it whole, i.e.
    # the whole shard when it is one row group, and the reader's memory would grow with the shard.
    handle = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    meta = handle.schema_arrow.metadata or {}
    if b"shape" not in meta:
        raise ValueError("not a token cache (no 'shape' in its schema metadata)")
    n_tokens, dim = json.loads(meta[b"shape"])
    sources = json.loads(meta.get(b"metadata", b"{}")).get("source_ids")
    row = 0
    for batch in handle.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=["sample_id", "tokens"]):
        ids = batch.column(0).to_pylist()
        flat = batch.column(1).flatten().to_numpy(zero_copy_only=False)
        tokens = flat.astype(np.float16, copy=False).reshape(len(ids), n_tokens, dim)
        for i, sample_id in enumerate(ids):
            yield sample_id, (sources[row] if sources else sample_id), tokens[i].copy()  # copy: free the batch
            row += 1


class TokenShards:
    """A component's token-cache shards (Parquet or WebDataset, by suffix)."""

    def __init__(self, paths: tuple[str, ...], sizes: tuple[int, ...], shape: tuple[int, int] | None,
                 skip_bad: bool, skipped: dict[str, int]) -> None:
        self.paths, self.sizes, self.shape = paths, sizes, tuple(shape) if shape else None
        self.skip_bad, self.skipped = skip_bad, skipped

    def shard_size(self, shard: int) -> int:
        return self.sizes[shard]

    def _records(self, path: str) -> Iterator[tuple[str, str, np.ndarray]]:
        if path.endswith(".tar"):
            return ((r.sample_id, r.source_id, r.tokens) for r in read_wds_shard(path))
        return _parquet_rows(path)

    def read_rows(self, shard: int, rows: Iterable[int]) -> Iterator[tuple[int, str, Any]]:
        path = self.paths[shard]
        wanted = iter(rows)
        target = next(wanted, None)
        if target is None:
            return
        row, last_id = -1, None
        try:
            for row, (sample_id, source_id, tokens) in enumerate(self._records(path)):
                last_id = sample_id
                if row < target:
                    continue
                if self.shape is not None and tuple(tokens.shape) != self.shape:
                    message = (f"{path}: sample {sample_id!r} (row {row}) has tokens {tuple(tokens.shape)}, the "
                               f"config expects {self.shape}: re-cache it with this x-encoder config")
                    if not self.skip_bad:
                        raise BadDataError(message)
                    self.skipped["samples"] += 1
                    yield row, source_id, None
                else:
                    yield row, source_id, tokens
                target = next(wanted, None)
                if target is None:
                    return
        except BadDataError:
            raise
        except Exception as err:  # noqa: BLE001 - any read failure is reported with the shard's name
            where = f"after sample {last_id!r} (row {row})" if last_id is not None else "at its first sample"
            message = f"{path}: cannot read the shard {where}: {type(err).__name__}: {err}"
            if not self.skip_bad:
                raise BadDataError(message + " (set train.skip_bad_samples=true to skip and count it)") from err
            self.skipped["shards"] += 1
            return
        if target is not None and row + 1 < self.sizes[shard]:
            message = f"{path}: the shard holds {row + 1} samples, its index says {self.sizes[shard]}"
            if not self.skip_bad:
                raise BadDataError(message)
            self.skipped["shards"] += 1


class VideoChunks:
    """Live mode: a component's videos in chunks of ``chunk``; a row is decoded to normalised frames."""

    def __init__(self, videos: tuple[tuple[str, str], ...], chunk: int, frames: FrameSpec, skip_bad: bool,
                 skipped: dict[str, int]) -> None:
        self.videos, self.chunk, self.frames = videos, chunk, frames
        self.skip_bad, self.skipped = skip_bad, skipped

    def shard_size(self, shard: int) -> int:
        return len(self.videos[shard * self.chunk:(shard + 1) * self.chunk])

    def read_rows(self, shard: int, rows: Iterable[int]) -> Iterator[tuple[int, str, Any]]:
        from preprocessing.decode import decode_frames, frames_to_tensor

        spec = self.frames
        for row in rows:
            source_id, path = self.videos[shard * self.chunk + row]
            try:
                decoded = decode_frames(path, num_frames=spec.num_frames, size=spec.image_size).frames
                frames = frames_to_tensor(decoded, spec.mean, spec.std).numpy()  # (T, 3, H, W)
            except Exception as err:  # noqa: BLE001 - named and stopped, or skipped and counted
                if not self.skip_bad:
                    raise BadDataError(f"{path}: cannot decode sample {source_id!r}: {err}") from err
                self.skipped["samples"] += 1
                yield row, source_id, None
                continue
            yield row, source_id, frames


def source_for(component: Any, *, frames: FrameSpec | None, token_shape: tuple[int, int] | None, skip_bad: bool,
               skipped: dict[str, int]) -> ShardSource:
    """The source of a ``preprocessing.stream.StreamComponent``: its videos (live) or its token shards."""
    if component.videos:
        if frames is None:
            raise ValueError(f"component {component.name!r} reads videos but the plan has no FrameSpec")
        return VideoChunks(component.videos, component.video_chunk, frames, skip_bad, skipped)
    return TokenShards(component.shards, component.shard_sizes, token_shape, skip_bad, skipped)
