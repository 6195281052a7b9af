"""The Parquet token-cache files of preprocessing.cache."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing import cache as cache_module
from preprocessing.cache import read_token_cache, write_token_cache

CONFIG = {"encoder": "tiny-vit", "num_frames": 4, "size": 64, "source_hashes": ["ab", "cd"]}


def make_tokens(n_samples=5, n_tokens=7, dim=6, n_times=4, seed=0):
    rng = np.random.default_rng(seed)
    tokens = (rng.standard_normal((n_samples, n_tokens, dim)) * 3).astype(np.float16)  # (S, N, D)
    tokens[0, 0, :3] = [np.float16(6.1e-5), np.float16(-0.0), np.float16(65504)]  # edge values
    timestamps = np.sort(rng.random((n_samples, n_times)) * 4, axis=1)  # (S, T)
    sample_ids = [f"clip_{i:06d}" for i in range(n_samples)]
    return sample_ids, tokens, timestamps


def test_round_trip_is_exact(tmp_path):
    sample_ids, tokens, timestamps = make_tokens()
    path = write_token_cache(
        tmp_path / "c.parquet", sample_ids=sample_ids, tokens=tokens, timestamps=timestamps,
        encoder_id="tiny-vit", metadata=CONFIG,
    )
    cached = read_token_cache(path)
    assert cached.sample_ids == sample_ids
    assert cached.tokens.dtype == np.float16 and cached.tokens.shape == (5, 7, 6)
    # Bit-exact, signed zero included.
    assert np.array_equal(cached.tokens.view(np.uint16), tokens.view(np.uint16))
    assert cached.timestamps.dtype == np.float64 and np.array_equal(cached.timestamps, timestamps)
    assert cached.encoder_id == "tiny-vit"
    assert cached.metadata == CONFIG


def test_parquet_layout(tmp_path):
    sample_ids, tokens, timestamps = make_tokens()
    path = write_token_cache(
        tmp_path / "c.parquet", sample_ids=sample_ids, tokens=tokens, timestamps=timestamps,
        encoder_id="tiny-vit", metadata=CONFIG,
    )
    schema = pq.read_schema(path)
    assert schema.field("sample_id").type == pa.string()
    assert schema.field("encoder_id").type == pa.string()
    assert schema.field("tokens").type.list_size == 7 * 6
    assert schema.field("tokens").type.value_type == pa.float16()
    assert schema.field("timestamps").type.list_size == 4
    assert schema.field("timestamps").type.value_type == pa.float64()
    assert json.loads(schema.metadata[b"shape"]) == [7, 6]
    assert json.loads(schema.metadata[b"metadata"]) == CONFIG
    column = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert column.path_in_schema.startswith("tokens") and not column.has_dictionary_page


def test_read_of_sliced_multi_chunk_table(tmp_path):
    """A file of several row groups reads back in order (vectorised path over chunks)."""
    sample_ids, tokens, timestamps = make_tokens(n_samples=9)
    path = write_token_cache(
        tmp_path / "c.parquet", sample_ids=sample_ids, tokens=tokens, timestamps=timestamps,
        encoder_id="e", metadata={},
    )
    table = pq.read_table(path)
    pq.write_table(table, tmp_path / "groups.parquet", row_group_size=2, use_dictionary=False)
    cached = read_token_cache(tmp_path / "groups.parquet")
    assert np.array_equal(cached.tokens, tokens) and cached.sample_ids == sample_ids


def test_write_rejects_bad_input(tmp_path):
    sample_ids, tokens, timestamps = make_tokens()
    kwargs = dict(sample_ids=sample_ids, timestamps=timestamps, encoder_id="e", metadata={})
    with pytest.raises(ValueError, match="float16"):
        write_token_cache(tmp_path / "a.parquet", tokens=tokens.astype(np.float32), **kwargs)
    with pytest.raises(ValueError, match="equal"):
        write_token_cache(tmp_path / "a.parquet", tokens=tokens[:3], **kwargs)
    bad = tokens.copy()
    bad[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        write_token_cache(tmp_path / "a.parquet", tokens=bad, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_crash_mid_write_leaves_no_file(tmp_path, monkeypatch):
    sample_ids, tokens, timestamps = make_tokens()
    path = tmp_path / "c.parquet"

    # Simulate a crash after part of the file has been written to disk.
    def crash(table, handle, **kwargs):
        handle.write(b"PAR1 half a file")
        handle.flush()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(cache_module.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        write_token_cache(path, sample_ids=sample_ids, tokens=tokens, timestamps=timestamps,
                          encoder_id="e", metadata=CONFIG)
    assert list(tmp_path.iterdir()) == []  # neither the final name nor a temporary


def test_rewrite_replaces_whole_file(tmp_path):
    path = tmp_path / "c.parquet"
    ids, tokens, timestamps = make_tokens(seed=1)
    write_token_cache(path, sample_ids=ids, tokens=tokens, timestamps=timestamps, encoder_id="e", metadata=CONFIG)
    ids2, tokens2, timestamps2 = make_tokens(n_samples=2, seed=2)
    write_token_cache(path, sample_ids=ids2, tokens=tokens2, timestamps=timestamps2, encoder_id="e", metadata=CONFIG)
    cached = read_token_cache(path)
    assert cached.sample_ids == ids2 and np.array_equal(cached.tokens, tokens2)
    assert [p.name for p in tmp_path.iterdir()] == ["c.parquet"]
