"""A torch IterableDataset over a sharded token cache (Parquet or WebDataset shards).

Shards are split across ``world_size`` ranks and each rank's DataLoader workers: the reader
with global index ``g = rank * num_workers + worker_id`` of ``R = world_size * num_workers``
reads shards ``g, g + R, g + 2R, ...``. Every shard is read by exactly one reader, so the union
over all ranks and workers is the dataset with no duplicate and no loss. With fewer shards than
readers some would get nothing and a distributed step would wait on them for ever: that is an
error raised at once (re-cache with a smaller shard size, or use fewer workers).

Rank and world size are passed in, never read from the environment here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from preprocessing.shards import complete_shard_paths, read_shard


def assign_shards(n_shards: int, *, rank: int, world_size: int, worker_id: int, num_workers: int) -> list[int]:
    """Shard indices read by one (rank, worker); raises ValueError when shards < readers."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
    if num_workers < 1 or not 0 <= worker_id < num_workers:
        raise ValueError(f"worker_id {worker_id} is not in [0, num_workers={num_workers})")
    readers = world_size * num_workers
    if n_shards < readers:
        raise ValueError(
            f"{n_shards} shards for {world_size} ranks x {num_workers} workers = {readers} readers: "
            "every reader needs at least one shard. Re-cache with a smaller shard_size or use "
            "fewer DataLoader workers."
        )
    return list(range(rank * num_workers + worker_id, n_shards, readers))


class TokenShardDataset(IterableDataset):
    """Samples of a sharded token cache as dicts: sample_id, source_id, tokens float32 (N, D)
    (float16 on disk), timestamps float64 (T,).

    cache_dir: the cache's directory (holding index.json). rank / world_size: this process'
    place in data-parallel training (0 / 1 on one process).
    """

    def __init__(self, cache_dir: str | os.PathLike, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.shards: list[Path] = complete_shard_paths(cache_dir)
        self.rank, self.world_size = rank, world_size
        assign_shards(len(self.shards), rank=rank, world_size=world_size, worker_id=0, num_workers=1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker_id, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in assign_shards(len(self.shards), rank=self.rank, world_size=self.world_size,
                                   worker_id=worker_id, num_workers=num_workers):
            for record in read_shard(self.shards[index]):
                yield {
                    "sample_id": record.sample_id,
                    "source_id": record.source_id,
                    "tokens": torch.from_numpy(np.asarray(record.tokens, dtype=np.float32)),  # (N, D)
                    "timestamps": torch.from_numpy(np.array(record.timestamps, dtype=np.float64)),
                }
