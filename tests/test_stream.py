"""The training stream (``preprocessing.stream``): coverage per pass, mixture shares, exact resume, bad data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from preprocessing.shards import ShardWriter, TokenRecord
from preprocessing.stream import (BadDataError, RankStream, StreamComponent, StreamData, StreamPlan,
                                  load_items)

SHAPE = (2, 4)


def make_source(root: Path, name: str, n: int, *, shard_size: int, fmt: str = "parquet", items_per_source: int = 1,
                weight: float = 1.0, shape: tuple[int, int] = SHAPE, noise: bool = False) -> StreamComponent:
    """A sharded cache of ``n`` samples whose tokens encode (source index, 0..) and its items file."""
    directory = root / name
    directory.mkdir(parents=True)
    writer = ShardWriter(directory, fmt=fmt, shard_size=shard_size, encoder_id="test")  # type: ignore[arg-type]
    rng = np.random.default_rng(n)
    for i in range(n):
        tokens = (rng.standard_normal(shape) if noise else np.full(shape, min(i, 2048))).astype(np.float16)
        writer.add(TokenRecord(f"{name}-{i}", f"{name}-{i}", tokens, np.zeros(1)))
    writer.close({})
    rows = [(f"{name}-{i}", f"q{k}" if k else "", f"{name} {i} {k}") for i in range(n) for k in range(items_per_source)]
    items = root / f"{name}.items.parquet"
    pq.write_table(pa.table({"source_id": [r[0] for r in rows], "query": [r[1] for r in rows],
                             "target": [r[2] for r in rows]}), items)
    return StreamComponent(name=name, weight=weight, items=str(items), n_items=len(rows),
                           shards=tuple(str(directory / s["name"]) for s in writer.shards),
                           shard_sizes=tuple(s["n_samples"] for s in writer.shards))


def stream(plan: StreamPlan, *, rank: int = 0, world_size: int = 1, batch_size: int = 4, workers: int = 0,
           buffer: int = 8, resampled: bool = False, state=None, skip_bad: bool = False) -> RankStream:
    return StreamData(plan, load_items(plan), num_workers=workers, shuffle_buffer=buffer, resampled=resampled,
                      skip_bad=skip_bad).open(rank=rank, world_size=world_size, batch_size=batch_size, seed=0,
                                              state=state)


def targets(batches) -> list[str]:
    return [t for b in batches for t in b["texts"]]


@pytest.mark.parametrize("fmt", ["parquet", "webdataset"])
@pytest.mark.parametrize("n_shards", [1, 8])  # fewer shards than readers (row split), 2 per reader (shard split)
def test_one_pass_over_ranks_and_workers_reads_every_item_once(tmp_path, fmt, n_shards):
    n = 48
    plan = StreamPlan(components=(make_source(tmp_path, "a", n, shard_size=n // n_shards, fmt=fmt, items_per_source=2),),
                      token_shape=SHAPE)
    seen = []
    for rank in range(2):
        reader = stream(plan, rank=rank, world_size=2, workers=2, buffer=1, batch_size=4)
        seen += targets(reader.next() for _ in range(n * 2 // 2 // 4))  # one pass: 96 items over 2 ranks
        reader.close()
    assert sorted(seen) == sorted(f"a {i} {k}" for i in range(n) for k in range(2))


def test_tokens_match_their_texts(tmp_path):
    plan = StreamPlan(components=(make_source(tmp_path, "a", 20, shard_size=7),), token_shape=SHAPE)
    batch = stream(plan, buffer=5).next()
    for visual, text in zip(batch["visual"], batch["texts"]):
        assert visual.dtype.is_floating_point and float(visual[0, 0]) == float(text.split()[1])


@pytest.mark.parametrize("resampled", [False, True])
def test_mixture_shares_follow_the_weights_across_50x_sizes(tmp_path, resampled):
    big = make_source(tmp_path, "big", 5000, shard_size=500, weight=0.8)
    small = make_source(tmp_path, "small", 100, shard_size=50, weight=0.2)
    plan = StreamPlan(components=(big, small), token_shape=SHAPE)
    reader = stream(plan, batch_size=100, buffer=64, resampled=resampled)
    drawn = Counter(c for _ in range(100) for c in reader.next()["components"])  # 10,000 draws
    assert sum(drawn.values()) == 10_000 and reader.drawn == dict(drawn)
    assert abs(drawn["big"] / 10_000 - 0.8) <= 0.02 and abs(drawn["small"] / 10_000 - 0.2) <= 0.02
    # the small source is seen many times over, the big one not even once: resampling, not truncation
    assert drawn["small"] > 10 * 100 * 0.9 and drawn["big"] < 5000 * 2


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_resumed_from_its_state_continues_with_the_same_samples(tmp_path, workers):
    plan = StreamPlan(components=(make_source(tmp_path, "a", 60, shard_size=9, items_per_source=2, weight=0.7),
                                  make_source(tmp_path, "b", 13, shard_size=4, weight=0.3)), token_shape=SHAPE)
    straight = stream(plan, workers=workers, buffer=6, batch_size=5)
    expected = [straight.next() for _ in range(40)]
    first = stream(plan, workers=workers, buffer=6, batch_size=5)
    got = [first.next() for _ in range(17)]
    state = first.state_dict()
    first.close()
    resumed = stream(plan, workers=workers, buffer=6, batch_size=5, state=state)
    got += [resumed.next() for _ in range(23)]
    assert [b["refs"] for b in got] == [b["refs"] for b in expected]
    assert targets(got) == targets(expected)
    for a, b in zip(got, expected):
        assert np.array_equal(a["visual"].numpy(), b["visual"].numpy())
    assert resumed.drawn == straight.drawn


def test_resume_with_other_workers_or_ranks_is_refused(tmp_path):
    plan = StreamPlan(components=(make_source(tmp_path, "a", 20, shard_size=5),), token_shape=SHAPE)
    reader = stream(plan, workers=0)
    reader.next()
    with pytest.raises(ValueError, match="does not match"):
        stream(plan, workers=2, state=reader.state_dict())


def test_a_corrupt_shard_stops_naming_it_or_is_skipped_and_counted(tmp_path):
    component = make_source(tmp_path, "a", 30, shard_size=10)
    Path(component.shards[1]).write_bytes(b"PAR1 this is not parquet")
    plan = StreamPlan(components=(component,), token_shape=SHAPE)
    with pytest.raises(BadDataError, match=r"shard-00001\.parquet"):
        reader = stream(plan, buffer=1, batch_size=10)
        for _ in range(3):
            reader.next()
    reader = stream(plan, buffer=1, batch_size=10, skip_bad=True)
    texts = targets(reader.next() for _ in range(4))
    assert len(texts) == 40 and not any(t.split()[1] in {str(i) for i in range(10, 20)} for t in texts)
    assert reader.skipped["shards"] >= 1


def test_a_sample_of_the_wrong_shape_stops_naming_it(tmp_path):
    component = make_source(tmp_path, "a", 12, shard_size=12)
    plan = StreamPlan(components=(component,), token_shape=(3, 4))
    with pytest.raises(BadDataError, match=r"'a-0'.*\(2, 4\).*\(3, 4\)"):
        stream(plan).next()
    reader = stream(plan, skip_bad=True, buffer=1, batch_size=1)
    with pytest.raises(ValueError, match="no sample"):  # every sample is skipped: it says so, it never hangs
        reader.next()


def test_paper_sized_samples_are_written_in_row_groups_a_reader_can_hold(tmp_path):
    """A 512-sample shard of the paper's 2048 x 1024 float16 tokens is 2 GiB: the stream reads one
    row group at a time, so a row group holds ~64 MiB (16 such samples), not the whole shard."""
    from preprocessing.cache import write_token_cache
    from preprocessing.stream_sources import TokenShards

    tokens = np.zeros((20, 2048, 1024), dtype=np.float16)
    tokens[:, 0, 0] = np.arange(20)
    path = write_token_cache(tmp_path / "s.parquet", sample_ids=[str(i) for i in range(20)], tokens=tokens,
                             timestamps=np.zeros((20, 1)), encoder_id="x", metadata={})
    assert pq.ParquetFile(path).num_row_groups == 2
    rows = list(TokenShards((str(path),), (20,), (2048, 1024), False, {}).read_rows(0, range(3, 20, 4)))
    assert [r for r, _, _ in rows] == [3, 7, 11, 15, 19] and [float(t[0, 0]) for _, _, t in rows] == [3, 7, 11, 15, 19]


def test_live_mode_decodes_videos_as_the_stream_needs_them(tmp_path, monkeypatch):
    """``train.mode = live``: a component of videos; frames are decoded row by row in the reader
    (a DataLoader worker), never the whole split first."""
    import preprocessing.decode as decode
    from preprocessing.stream import FrameSpec

    decoded = []

    def fake_decode(path, *, num_frames, size):
        decoded.append(path)
        return decode.DecodedClip(frames=np.full((num_frames, size, size, 3), len(decoded) % 255, np.uint8),
                                  timestamps=np.zeros(num_frames), n_decoded=num_frames)

    monkeypatch.setattr(decode, "decode_frames", fake_decode)
    videos = tuple((f"v{i}", f"/videos/v{i}.mp4") for i in range(500))
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"source_id": [v for v, _ in videos], "query": [""] * 500,
                             "target": [f"caption {i}" for i in range(500)]}), items)
    plan = StreamPlan(components=(StreamComponent(name="videos", weight=1.0, items=str(items), n_items=500,
                                                  videos=videos, video_chunk=50),),
                      frames=FrameSpec(num_frames=2, image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    batch = stream(plan, buffer=8, batch_size=4).next()
    assert tuple(batch["visual"].shape) == (4, 2, 3, 8, 8)
    assert len(decoded) <= 8 + 4  # the buffer and one batch, not the 500 videos
