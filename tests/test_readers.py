"""TokenShardDataset: sharded by rank and worker with no duplicates or losses; clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from preprocessing.readers import TokenShardDataset, assign_shards
from preprocessing.shards import ShardedCache, TokenRecord


def make_cache(root, fmt: str, n: int, shard_size: int):
    store = ShardedCache(root)
    key = ("0" if fmt == "parquet" else "1") * 64
    writer = store.writer(key, fmt=fmt, shard_size=shard_size, encoder_id="tiny")
    for i in range(n):
        writer.add(TokenRecord(f"s{i:03d}", f"s{i:03d}", np.full((2, 3), i, dtype=np.float16), np.zeros(2)))
    writer.close({})
    return store.dir_for(key)


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
def test_union_over_2_ranks_x_2_workers_is_the_dataset(tmp_path, fmt):
    directory = make_cache(tmp_path, fmt, n=23, shard_size=3)  # 8 shards, the last one short
    seen: list[str] = []
    for rank in range(2):
        loader = DataLoader(TokenShardDataset(directory, rank=rank, world_size=2), batch_size=None,
                            num_workers=2, multiprocessing_context="fork")
        for sample in loader:
            assert torch.all(sample["tokens"] == int(sample["sample_id"][1:]))  # tokens belong to their id
            seen.append(sample["sample_id"])
    assert sorted(seen) == [f"s{i:03d}" for i in range(23)]  # no duplicate, no loss


def test_fewer_shards_than_readers_is_an_error_not_a_hang(tmp_path):
    directory = make_cache(tmp_path, "webdataset", n=6, shard_size=2)  # 3 shards
    with pytest.raises(ValueError, match="3 shards for 4 ranks"):
        TokenShardDataset(directory, rank=0, world_size=4)
    loader = DataLoader(TokenShardDataset(directory, rank=1, world_size=2), batch_size=None, num_workers=2,
                        multiprocessing_context="fork")
    with pytest.raises(ValueError, match="3 shards for 2 ranks x 2 workers"):
        list(loader)


def test_assign_shards_partition():
    got = sorted(i for r in range(3) for w in range(2)
                 for i in assign_shards(13, rank=r, world_size=3, worker_id=w, num_workers=2))
    assert got == list(range(13))
    with pytest.raises(ValueError, match="rank 3"):
        assign_shards(13, rank=3, world_size=3, worker_id=0, num_workers=1)
