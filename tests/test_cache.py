"""The content-addressed Parquet token cache of preprocessing.cache."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing import cache as cache_module
from preprocessing.cache import (
    TokenCacheStore,
    cache_key,
    file_sha256,
    read_token_cache,
    write_token_cache,
)

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


def test_cache_key_is_stable_and_sensitive():
    same_reordered = dict(reversed(list(CONFIG.items())))
    assert cache_key(CONFIG) == cache_key(same_reordered)
    # Independent reference: sha256 of the sorted, compact JSON.
    expected = hashlib.sha256(json.dumps(CONFIG, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert cache_key(CONFIG) == expected
    assert cache_key({**CONFIG, "size": 65}) != cache_key(CONFIG)
    assert cache_key({**CONFIG, "size": 64.0}) != cache_key(CONFIG)  # 64 and 64.0 are different configs
    assert cache_key({**CONFIG, "source_hashes": ["cd", "ab"]}) != cache_key(CONFIG)
    assert cache_key({**CONFIG, "extra": None}) != cache_key(CONFIG)

    @dataclass(frozen=True)
    class Preset:
        size: int

    assert cache_key({"p": Preset(size=3), "root": Path("/a/b")}) == cache_key({"p": {"size": 3}, "root": "/a/b"})
    with pytest.raises(TypeError):
        cache_key({"f": object()})
    with pytest.raises(ValueError):
        cache_key({"x": float("nan")})


def test_file_sha256_matches_hashlib(tmp_path):
    data = np.random.default_rng(1).bytes(3 * 1000 + 17)
    (tmp_path / "f.bin").write_bytes(data)
    assert file_sha256(tmp_path / "f.bin", chunk=1000) == hashlib.sha256(data).hexdigest()


def test_store_layout_and_sidecar(tmp_path):
    store = TokenCacheStore(tmp_path / "store")
    key = cache_key(CONFIG)
    assert not store.exists(key)
    sample_ids, tokens, timestamps = make_tokens()
    path = store.write(key, sample_ids=sample_ids, tokens=tokens, timestamps=timestamps,
                       encoder_id="tiny-vit", metadata=CONFIG)
    assert path == tmp_path / "store" / key[:2] / f"{key}.parquet" == store.path_for(key)
    assert store.exists(key)
    sidecar = json.loads((path.parent / f"{key}.json").read_text())
    assert sidecar["config"] == CONFIG and sidecar["cache_key"] == key
    assert sidecar["n_samples"] == 5 and sidecar["shape"] == [7, 6]
    assert np.array_equal(store.read(key).tokens, tokens)
    # Nothing else is left in the directory (no temp files).
    assert sorted(p.name for p in path.parent.iterdir()) == [f"{key}.json", f"{key}.parquet"]
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")


def test_crash_mid_write_leaves_no_visible_entry(tmp_path, monkeypatch):
    store = TokenCacheStore(tmp_path)
    key = cache_key(CONFIG)
    sample_ids, tokens, timestamps = make_tokens()

    # Simulate a crash after part of the file has been written to disk.
    def crash(table, handle, **kwargs):
        handle.write(b"PAR1 half a file")
        handle.flush()
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(cache_module.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write(key, sample_ids=sample_ids, tokens=tokens, timestamps=timestamps,
                    encoder_id="e", metadata=CONFIG)
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.read(key)

    # A temp file left behind by a process killed outright (no cleanup) is not picked up either.
    monkeypatch.undo()
    orphan = cache_module._temp_path(store.path_for(key))
    orphan.write_bytes(b"PAR1 half a file")
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.read(key)
    # The next write succeeds under the final name and leaves the orphan alone.
    store.write(key, sample_ids=sample_ids, tokens=tokens, timestamps=timestamps, encoder_id="e", metadata=CONFIG)
    assert store.exists(key) and np.array_equal(store.read(key).tokens, tokens)
    assert orphan.exists() and orphan.name.startswith(".")


def test_rewrite_replaces_whole_file(tmp_path):
    store = TokenCacheStore(tmp_path)
    key = cache_key(CONFIG)
    ids, tokens, timestamps = make_tokens(seed=1)
    store.write(key, sample_ids=ids, tokens=tokens, timestamps=timestamps, encoder_id="e", metadata=CONFIG)
    ids2, tokens2, timestamps2 = make_tokens(n_samples=2, seed=2)
    store.write(key, sample_ids=ids2, tokens=tokens2, timestamps=timestamps2, encoder_id="e", metadata=CONFIG)
    cached = store.read(key)
    assert cached.sample_ids == ids2 and np.array_equal(cached.tokens, tokens2)
