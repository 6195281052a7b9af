"""Parquet files of frozen-encoder tokens (the shards of ``preprocessing.shards``' caches).

One Parquet file holds the tokens of many samples: a row per sample with columns
``sample_id`` (string), ``tokens`` (fixed_size_list<float16, N*D>), ``timestamps``
(fixed_size_list<float64, T>) and ``encoder_id`` (string). The schema metadata holds the
token grid ``shape`` [N, D], the cache format version and the resolved config as JSON.

Files are written without dictionary encoding (dictionary pages make fixed-size float16
lists ~4x slower to read, see STACK-NOTES) with ``vljepa.files.atomic_write`` (temporary name,
fsync, rename), so a reader never sees a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vljepa.files import atomic_write, canonical_json

CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenCache:
    """Tokens of S samples read back from one cache file.

    tokens: float16 (S, N, D); timestamps: float64 (S, T) seconds of the frames encoded.
    """

    sample_ids: list[str]
    tokens: np.ndarray
    timestamps: np.ndarray
    encoder_id: str
    metadata: dict[str, Any]


ROW_GROUP_BYTES = 64 << 20  # a streaming reader holds about one row group of a shard in memory


def row_group_rows(sample_shape: tuple[int, ...]) -> int:
    """Rows per Parquet row group: ~64 MiB of float16 tokens (16 samples of the paper's 2048 x 1024;
    a whole 512-sample shard of the small preset's 36 x 1280, whose bytes this leaves unchanged)."""
    return max(1, ROW_GROUP_BYTES // (2 * int(np.prod(sample_shape))))


def _fixed_size_list(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    # Non-nullable element and list fields: Parquet then stores no definition levels, which
    # reads ~1.9x faster here (535 vs 275 MiB/s for float16 tokens).
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    list_type = pa.list_(pa.field("element", flat.type, nullable=False), width)
    return pa.FixedSizeListArray.from_arrays(flat, type=list_type)


def write_token_cache(
    path: str | os.PathLike,
    *,
    sample_ids: list[str],
    tokens: np.ndarray,
    timestamps: np.ndarray,
    encoder_id: str,
    metadata: dict,
) -> Path:
    """Write one Parquet token cache atomically.

    sample_ids: S distinct ids. tokens: float16 (S, N, D). timestamps: float64 (S, T) seconds.
    encoder_id: which encoder made the tokens. metadata: the resolved config (JSON-able),
    stored in the schema metadata.
    """
    path = Path(path)
    if tokens.dtype != np.float16 or tokens.ndim != 3:
        raise ValueError(f"tokens must be float16 (S, N, D), got {tokens.dtype} {tokens.shape}")
    if timestamps.ndim != 2:
        raise ValueError(f"timestamps must be (S, T), got shape {timestamps.shape}")
    n_samples, n_tokens, dim = tokens.shape
    if len(sample_ids) != n_samples or timestamps.shape[0] != n_samples:
        raise ValueError(
            f"{len(sample_ids)} sample_ids, {n_samples} token rows and "
            f"{timestamps.shape[0]} timestamp rows: they must be equal"
        )
    if len(set(sample_ids)) != len(sample_ids):
        raise ValueError("sample_ids must be distinct")
    if n_tokens * dim == 0 or timestamps.shape[1] == 0:
        raise ValueError(f"empty token grid {tokens.shape} or no timestamps {timestamps.shape}")
    if not np.isfinite(tokens).all():
        raise ValueError("tokens contain NaN or inf (float16 overflow in the encoder output?)")

    token_lists = _fixed_size_list(tokens, n_tokens * dim)  # (S,) lists of N*D float16
    timestamp_lists = _fixed_size_list(timestamps.astype(np.float64, copy=False), timestamps.shape[1])
    schema = pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("tokens", token_lists.type, nullable=False),
            pa.field("timestamps", timestamp_lists.type, nullable=False),
            pa.field("encoder_id", pa.string(), nullable=False),
        ]
    )
    table = pa.table(
        [
            pa.array(sample_ids, type=pa.string()),
            token_lists,
            timestamp_lists,
            pa.array([encoder_id] * n_samples, type=pa.string()),
        ],
        schema=schema,
    ).replace_schema_metadata(
        {
            "shape": json.dumps([n_tokens, dim]),
            "format_version": str(CACHE_FORMAT_VERSION),
            "encoder_id": encoder_id,  # also here so that an empty cache keeps it
            "metadata": canonical_json(metadata),
        }
    )

    def write(handle) -> None:
        # No dictionary and no statistics for the token column: neither helps a reader that
        # always loads whole columns, and both cost write time.
        pq.write_table(
            table, handle, use_dictionary=False, compression="none",
            write_statistics=["sample_id", "encoder_id"], row_group_size=row_group_rows(tokens.shape[1:]),
        )

    return atomic_write(path, write)


def _list_values(column: pa.ChunkedArray, width: int, dtype: np.dtype) -> np.ndarray:
    """Flatten a fixed-size-list column into a numpy (rows, width) array without a row loop."""
    array = column.combine_chunks()
    if array.null_count:
        raise ValueError(f"{array.null_count} null rows in a token cache column")
    flat = array.flatten().to_numpy(zero_copy_only=False)  # flatten() honours slice offsets
    return flat.astype(dtype, copy=False).reshape(len(array), width)


def read_token_cache(path: str | os.PathLike) -> TokenCache:
    """Read one file written by write_token_cache: tokens float16 (S, N, D), timestamps (S, T).

    A whole cache (a directory of shards, or one such file) is read by ``preprocessing.shards.read_cache``.
    """
    path = Path(path)
    table = pq.read_table(path)
    schema_meta = table.schema.metadata or {}
    if b"shape" not in schema_meta:
        raise ValueError(f"{path} is not a token cache (no 'shape' in its schema metadata)")
    version = int(schema_meta.get(b"format_version", b"0"))
    if version != CACHE_FORMAT_VERSION:
        raise ValueError(f"{path} has cache format {version}, this code reads {CACHE_FORMAT_VERSION}")
    n_tokens, dim = json.loads(schema_meta[b"shape"])
    n_samples = table.num_rows
    ts_width = table.schema.field("timestamps").type.list_size
    tokens = _list_values(table.column("tokens"), n_tokens * dim, np.float16)
    timestamps = _list_values(table.column("timestamps"), ts_width, np.float64)
    encoder_id = schema_meta.get(b"encoder_id", b"").decode("utf-8")
    column_ids = set(table.column("encoder_id").unique().to_pylist())
    if column_ids - {encoder_id}:
        raise ValueError(f"{path}: rows made by {sorted(column_ids)}, file says {encoder_id!r}")
    return TokenCache(
        sample_ids=table.column("sample_id").to_pylist(),
        tokens=tokens.reshape(n_samples, n_tokens, dim),
        timestamps=timestamps,
        encoder_id=encoder_id,
        metadata=json.loads(schema_meta[b"metadata"]),
    )
