"""WebDataset and Parquet token shards: round trip, webdataset compatibility, atomic completion."""

from __future__ import annotations

import numpy as np
import pytest

from preprocessing.shards import ShardedCache, TokenRecord, read_shard


def records(n: int, tokens: int = 3, dim: int = 4) -> list[TokenRecord]:
    rng = np.random.default_rng(0)
    return [TokenRecord(f"clip.{i}@w0", f"clip.{i}", rng.standard_normal((tokens, dim)).astype(np.float16),
                        np.arange(2, dtype=np.float64) + i) for i in range(n)]


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_round_trip_and_shard_sizes(tmp_path, fmt):
    store = ShardedCache(tmp_path)
    key = "ab" * 32
    writer = store.writer(key, fmt=fmt, shard_size=4, encoder_id="tiny")
    for record in records(10):
        writer.add(record)
    assert not store.exists(key)  # no index before close: incomplete
    writer.close({"note": "test"})
    assert store.exists(key)
    index = store.index(key)
    assert [s["n_samples"] for s in index["shards"]] == [4, 4, 2] and index["n_samples"] == 10
    back = [r for path in store.shard_paths(key) for r in read_shard(path)]
    for want, got in zip(records(10), back, strict=True):
        assert (got.sample_id, got.source_id) == (want.sample_id, want.source_id)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_array_equal(got.timestamps, want.timestamps)


def test_webdataset_library_reads_our_tars(tmp_path):
    import json

    import webdataset as wds

    store = ShardedCache(tmp_path)
    key = "cd" * 32
    writer = store.writer(key, fmt="webdataset", shard_size=5, encoder_id="tiny")
    for record in records(5):
        writer.add(record)
    writer.close({})
    samples = list(wds.WebDataset([str(p) for p in store.shard_paths(key)], shardshuffle=False).decode())
    assert [json.loads(s["json"])["sample_id"] if isinstance(s["json"], (bytes, str)) else s["json"]["sample_id"]
            for s in samples] == [r.sample_id for r in records(5)]
    np.testing.assert_array_equal(samples[2]["tokens.npy"], records(5)[2].tokens)


def test_killed_run_leaves_no_complete_cache_and_is_redone(tmp_path):
    store = ShardedCache(tmp_path)
    key = "ef" * 32
    writer = store.writer(key, fmt="webdataset", shard_size=2, encoder_id="tiny")
    for record in records(5):
        writer.add(record)  # two whole shards written, then the "kill": no close()
    directory = store.dir_for(key)
    assert sorted(p.name for p in directory.iterdir()) == ["shard-00000.tar", "shard-00001.tar"]
    assert not store.exists(key)
    from preprocessing.readers import TokenShardDataset

    with pytest.raises(FileNotFoundError, match="not a complete"):
        TokenShardDataset(directory)
    writer = store.writer(key, fmt="webdataset", shard_size=2, encoder_id="tiny")  # the re-run
    assert list(directory.iterdir()) == []  # leftovers gone
    for record in records(5):
        writer.add(record)
    writer.close({})
    assert store.index(key)["n_samples"] == 5
