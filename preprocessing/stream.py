"""The training stream: weighted mixes of sharded sources, read shard by shard, resumable exactly.

A ``StreamPlan`` names the components of one phase's data mix (``flows.phase_data`` writes it from
the DuckDB manifest before the launch, so ranks never open the manifest): each component is a
sharded source (token-cache shards, or chunks of video files in live mode), the items drawn from
it (``(query, target)`` pairs per source id, a Parquet file) and a weight.

Every (rank, DataLoader worker) is one *reader*; with ``R = world_size × num_workers`` readers,
reader ``g`` owns shards ``g, g + R, ...`` of each component, or, where a component has fewer
shards than readers, the rows ``g, g + R, ...`` of its concatenated shards (every sample read by
exactly one reader either way). Per reader (``ReaderState`` holds all of it):

1. each component walks its pieces in a fresh seeded permutation per pass (``resampled=False``:
   epoch mode, each sample once per pass) or draws the next piece with replacement
   (``resampled=True``, open_clip's ``ResampledShards2``); a row expands into the items of its
   source (an SFT clip has several VQA pairs);
2. a resampler picks the component of every sample with probability weight / sum(weights), so a
   mix of sources of very different sizes is drawn at the configured shares (small sources
   repeat, large ones are never read whole);
3. a shuffle buffer of ``shuffle_buffer`` samples (tokens held, at most that many);
4. ``batch_size`` samples make a batch, yielded with the reader's state after it.

The state (pass, piece order and position, row and item cursors, the three numpy RNG states and
the buffer as sample references) is small and JSON-able; ``RankStream`` keeps the state of each
worker's last *consumed* batch (the DataLoader prefetches), and a resumed stream re-reads the
referenced buffer rows and continues with the same samples in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from preprocessing.stream_sources import BadDataError, FrameSpec, ShardSource, source_for

__all__ = ["BadDataError", "FrameSpec", "StreamComponent", "StreamPlan", "StreamOptions", "Reader", "RankStream",
           "StreamData", "load_items"]


@dataclass(frozen=True, kw_only=True)
class StreamComponent:
    """One weighted source of a phase's mix."""

    name: str
    weight: float
    items: str  # Parquet file: source_id, query, target (the samples this component draws)
    n_items: int  # items whose source is in ``shards`` / ``videos``: the component's epoch
    shards: tuple[str, ...] = ()  # token-cache shard files (.parquet / .tar), in index order
    shard_sizes: tuple[int, ...] = ()  # samples per shard (index.json)
    videos: tuple[tuple[str, str], ...] = ()  # live mode: (source_id, media path)
    video_chunk: int = 64  # live mode: videos per piece

    def __post_init__(self) -> None:
        if not self.weight > 0:
            raise ValueError(f"component {self.name!r}: weight must be > 0, got {self.weight}")
        if bool(self.shards) == bool(self.videos):
            raise ValueError(f"component {self.name!r}: give token shards or videos (live), exactly one")
        if len(self.shards) != len(self.shard_sizes):
            raise ValueError(f"component {self.name!r}: {len(self.shards)} shards, {len(self.shard_sizes)} sizes")


@dataclass(frozen=True, kw_only=True)
class StreamPlan:
    """A phase's data: its components and the sample shape every sample must have."""

    components: tuple[StreamComponent, ...]
    token_shape: tuple[int, int] | None = None  # (N, D) of cached tokens; None in live mode
    frames: FrameSpec | None = None  # live mode: how to decode a video for the x-encoder

    def __post_init__(self) -> None:
        if not self.components:
            raise ValueError("a stream plan needs at least one component")
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError(f"component names repeat: {names}")

    @property
    def n_samples(self) -> int:
        """Items over all components: one epoch (``train.epochs`` × this / batch = steps)."""
        return sum(c.n_items for c in self.components)

    @property
    def shares(self) -> dict[str, float]:
        total = sum(c.weight for c in self.components)
        return {c.name: c.weight / total for c in self.components}


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    batch_size: int  # per rank and micro-step
    seed: int = 0
    num_workers: int = 2  # DataLoader workers per rank (0: read in the training process)
    shuffle_buffer: int = 512
    resampled: bool = False
    skip_bad: bool = False  # skip and count corrupt shards / misshapen samples instead of stopping


def _pieces(component: StreamComponent, reader: int, readers: int) -> list[tuple[int, int, int]]:
    """(shard, first row, row step) pieces of one component owned by ``reader``."""
    sizes = component.shard_sizes or tuple(len(component.videos[i:i + component.video_chunk])
                                           for i in range(0, len(component.videos), component.video_chunk))
    if len(sizes) >= readers:
        return [(s, 0, 1) for s in range(reader, len(sizes), readers)]
    if sum(sizes) < readers:
        raise ValueError(f"component {component.name!r} has {sum(sizes)} samples for {readers} readers "
                         "(ranks × DataLoader workers): every reader needs one. Use fewer workers or more data.")
    pieces, offset = [], 0
    for s, size in enumerate(sizes):
        first = (reader - offset) % readers
        if first < size:
            pieces.append((s, first, readers))
        offset += size
    return pieces


def _rng(state: dict | None, *seed: int) -> np.random.Generator:
    rng = np.random.default_rng(list(seed))
    if state is not None:
        rng.bit_generator.state = state
    return rng


class _ComponentCursor:
    """Where one reader is in one component: pass, piece order, row and item cursors."""

    def __init__(self, index: int, component: StreamComponent, source: ShardSource, items: dict[str, list],
                 pieces: list[tuple[int, int, int]], seed: tuple[int, ...], resampled: bool,
                 state: dict | None) -> None:
        self.index, self.component, self.source, self.items = index, component, source, items
        self.pieces, self.resampled = pieces, resampled
        state = state or {}
        self.rng = _rng(state.get("rng"), *seed)
        self.pass_ = state.get("pass", -1)
        self.order: list[int] = state.get("order", [])
        self.pos = state.get("pos", -1)  # index into order of the current piece (-1: not started)
        self.row_i = state.get("row_i", 0)  # index of the current row within the piece's rows
        self.item_k = state.get("item_k", 0)  # next item of the current row
        self.emitted_in_pass = state.get("emitted_in_pass", 0)
        self.empty_run = state.get("empty_run", 0)  # pieces in a row that gave no sample
        self._rows: Iterator | None = None
        self._current: tuple[int, Any, list] | None = None  # (row, payload, items of its source)

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "pass": self.pass_, "order": self.order, "pos": self.pos,
                "row_i": self.row_i, "item_k": self.item_k, "emitted_in_pass": self.emitted_in_pass,
                "empty_run": self.empty_run}

    def _next_piece(self) -> None:
        """Move to the next piece: the next of this pass's permutation (epoch mode), or a fresh draw."""
        self.pos += 1
        if self.pos >= len(self.order):
            if not self.resampled and self.pass_ >= 0 and self.emitted_in_pass == 0:
                raise ValueError(f"component {self.component.name!r}: a whole pass over this reader's pieces gave "
                                 "no sample (are its items' sources in its shards?)")
            n = len(self.pieces)
            self.pass_ += 1
            self.emitted_in_pass = 0
            self.order = [int(self.rng.integers(n))] if self.resampled else [int(i) for i in self.rng.permutation(n)]
            self.pos = 0
        self.row_i, self.item_k, self._rows, self._current = 0, 0, None, None
        self.empty_run += 1
        if self.resampled and self.empty_run > 50 * len(self.pieces):
            raise ValueError(f"component {self.component.name!r}: {self.empty_run} pieces drawn in a row gave no "
                             "sample (are its items' sources in its shards?)")

    def _open(self) -> None:
        shard, first, step = self.pieces[self.order[self.pos]]
        self._rows = self.source.read_rows(shard, range(first + self.row_i * step, self.source.shard_size(shard), step))

    def next(self) -> tuple[tuple[int, int, int, int], Any, tuple[str, str]]:
        """The next sample: ((component, shard, row, item), payload, (query, target))."""
        while True:
            if self._current is None:
                if self.pos < 0 or self.pos >= len(self.order):
                    self._next_piece()
                if self._rows is None:
                    self._open()
                read = next(self._rows, None)  # type: ignore[arg-type]
                if read is None:
                    self._next_piece()
                    continue
                row, source_id, payload = read
                self._current = (row, payload, [] if payload is None else self.items.get(source_id, []))
            row, payload, items = self._current
            if self.item_k < len(items):
                k = self.item_k
                self.item_k += 1
                self.emitted_in_pass += 1
                self.empty_run = 0
                return (self.index, self.pieces[self.order[self.pos]][0], row, k), payload, items[k]
            self._current, self.row_i, self.item_k = None, self.row_i + 1, 0


class Reader:
    """One reader's stream of batches (see the module docstring); ``state_dict`` after any batch."""

    def __init__(self, plan: StreamPlan, options: StreamOptions, *, reader: int, readers: int,
                 items: list[dict[str, list]], state: dict | None = None) -> None:
        self.plan, self.options, self.reader = plan, options, reader
        state = state or {}
        seed = (options.seed, reader)
        self.skipped = dict(state.get("skipped", {"shards": 0, "samples": 0}))
        self.sources = [source_for(c, frames=plan.frames, token_shape=plan.token_shape, skip_bad=options.skip_bad,
                                   skipped=self.skipped) for c in plan.components]
        cursors = state.get("components", [None] * len(plan.components))
        self.cursors = [_ComponentCursor(i, c, self.sources[i], items[i], _pieces(c, reader, readers),
                                         (*seed, 1, i), options.resampled, cursors[i])
                        for i, c in enumerate(plan.components)]
        self.mix_rng = _rng(state.get("mix_rng"), *seed, 2)
        self.buffer_rng = _rng(state.get("buffer_rng"), *seed, 3)
        weights = np.array([c.weight for c in plan.components], dtype=np.float64)
        self.p = weights / weights.sum()
        self.buffer: list[tuple[tuple[int, int, int, int], Any, tuple[str, str]]] = []
        if state.get("buffer"):
            self.buffer = self._rematerialise([tuple(ref) for ref in state["buffer"]])  # type: ignore[misc]

    def _rematerialise(self, refs: list[tuple[int, int, int, int]]) -> list:
        """Re-read the samples a checkpointed buffer referred to (component, shard, row, item)."""
        wanted: dict[tuple[int, int], set[int]] = {}
        for c, shard, row, _ in refs:
            wanted.setdefault((c, shard), set()).add(row)
        payloads: dict[tuple[int, int, int], tuple[str, Any]] = {}
        for (c, shard), rows in wanted.items():
            for row, source_id, payload in self.sources[c].read_rows(shard, sorted(rows)):
                payloads[(c, shard, row)] = (source_id, payload)
        out = []
        for ref in refs:
            source_id, payload = payloads[ref[:3]]
            out.append((ref, payload, self.cursors[ref[0]].items[source_id][ref[3]]))
        return out

    def _draw(self) -> tuple:
        return self.cursors[int(self.mix_rng.choice(len(self.p), p=self.p))].next()

    def next_sample(self) -> tuple:
        size = max(self.options.shuffle_buffer, 1)
        while len(self.buffer) < size:
            self.buffer.append(self._draw())
        j = int(self.buffer_rng.integers(len(self.buffer)))
        sample, self.buffer[j] = self.buffer[j], self._draw()
        return sample

    def next_batch(self) -> dict[str, Any]:
        samples = [self.next_sample() for _ in range(self.options.batch_size)]
        visual = torch.from_numpy(np.stack([s[1] for s in samples]).astype(np.float32))  # (b, N, D)
        return {"visual": visual, "queries": [s[2][0] for s in samples], "texts": [s[2][1] for s in samples],
                "components": [self.plan.components[s[0][0]].name for s in samples],
                "refs": [list(s[0]) for s in samples]}

    def state_dict(self) -> dict:
        return {"components": [c.state_dict() for c in self.cursors], "mix_rng": self.mix_rng.bit_generator.state,
                "buffer_rng": self.buffer_rng.bit_generator.state, "buffer": [list(s[0]) for s in self.buffer],
                "skipped": dict(self.skipped)}


def _ignore_job_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM and SIGUSR2 to the training process. Slurm signals every
    process of a job (a requeue: SIGTERM then SIGKILL; the time limit: USR2): a worker killed by them
    made the training process raise "DataLoader worker ... killed by signal" and the job fail
    instead of requeueing. The training process decides (submitit checkpoints and requeues);
    the workers end with it."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def _as_is(item: Any) -> Any:
    """The DataLoader's collate: batches are made by the reader; the state must not be walked."""
    return item


class _StreamDataset(IterableDataset):
    """One rank's readers as DataLoader workers: worker ``w`` plays role ``(w + taken) % W``."""

    def __init__(self, plan: StreamPlan, options: StreamOptions, rank: int, world_size: int,
                 items: list[dict[str, list]], resume: dict) -> None:
        super().__init__()
        self.plan, self.options, self.rank, self.world_size = plan, options, rank, world_size
        self.items, self.resume = items, resume

    def __iter__(self):
        info = get_worker_info()
        workers = max(self.options.num_workers, 1)
        role = ((info.id if info is not None else 0) + self.resume["taken"]) % workers
        reader = Reader(self.plan, self.options, reader=self.rank * workers + role,
                        readers=self.world_size * workers, items=self.items, state=self.resume["roles"][role])
        while True:
            batch = reader.next_batch()
            yield role, batch, reader.state_dict()


def load_items(plan: StreamPlan) -> list[dict[str, list[tuple[str, str]]]]:
    """Per component: source_id -> [(query, target), ...] in file order (its ``items`` Parquet file)."""
    import pyarrow.parquet as pq

    out = []
    for component in plan.components:
        table = pq.read_table(component.items, columns=["source_id", "query", "target"])
        items: dict[str, list[tuple[str, str]]] = {}
        for source_id, query, target in zip(*(table.column(c).to_pylist() for c in ("source_id", "query", "target"))):
            items.setdefault(source_id, []).append((query or "", target))
        out.append(items)
    return out


@dataclass
class StreamData:
    """``vljepa.data.StreamedData`` over a plan: what ``vljepa.train.train`` reads at scale."""

    plan: StreamPlan
    items: list[dict[str, list[tuple[str, str]]]]
    num_workers: int = 2
    shuffle_buffer: int = 512
    resampled: bool = False
    skip_bad: bool = False
    encode: Callable[[torch.Tensor], torch.Tensor] | None = None  # live mode: the frozen x-encoder

    @property
    def n_samples(self) -> int:
        return self.plan.n_samples

    @property
    def shares(self) -> dict[str, float]:
        return self.plan.shares

    def open(self, *, rank: int, world_size: int, batch_size: int, seed: int,
             state: dict | None) -> "RankStream":
        options = StreamOptions(batch_size=batch_size, seed=seed, num_workers=self.num_workers,
                                shuffle_buffer=self.shuffle_buffer, resampled=self.resampled, skip_bad=self.skip_bad)
        return RankStream(self.plan, options, rank=rank, world_size=world_size, items=self.items, state=state)


class RankStream:
    """What the training loop reads on one rank: ``next()`` batches, ``state_dict()`` at any step.

    Args:
        plan: the phase's components. items: per component, source_id -> [(query, target), ...]
            (``flows.phase_data.load_items``). options: batch size per rank and micro-step, workers, ...
        rank / world_size: this process's place in data-parallel training (passed in).
        state: this rank's ``state_dict()`` from a checkpoint, or None for a fresh stream.
    """

    def __init__(self, plan: StreamPlan, options: StreamOptions, *, rank: int, world_size: int,
                 items: list[dict[str, list]], state: dict | None = None) -> None:
        workers = max(options.num_workers, 1)
        self.identity = {"rank": rank, "world_size": world_size, "workers": workers, "batch_size": options.batch_size,
                         "seed": options.seed, "resampled": options.resampled,
                         "components": [c.name for c in plan.components]}
        if state is not None:
            theirs = {k: state.get(k) for k in self.identity}
            if theirs != self.identity:
                raise ValueError(f"the checkpoint's data stream {theirs} does not match this run's {self.identity}: "
                                 "resume with the same data, ranks, workers and batch size, or start a new run dir")
        self.taken = state["taken"] if state else 0
        self.roles: list[dict | None] = list(state["roles"]) if state else [None] * workers
        self.drawn: dict[str, int] = dict(state["drawn"]) if state else {c.name: 0 for c in plan.components}
        dataset = _StreamDataset(plan, options, rank, world_size, items, {"taken": self.taken, "roles": self.roles})
        self._loader = DataLoader(dataset, batch_size=None, num_workers=options.num_workers, collate_fn=_as_is,
                                  generator=torch.Generator(),  # never draws from the global torch RNG
                                  worker_init_fn=_ignore_job_signals)
        self._iter: Iterator | None = None

    def next(self) -> dict[str, Any]:
        """The next local batch: visual (b, ...) float32, queries, texts, components, refs."""
        if self._iter is None:
            self._iter = iter(self._loader)
        role, batch, state = next(self._iter)
        self.roles[role] = state
        self.taken += 1
        for name in batch["components"]:
            self.drawn[name] += 1
        return batch

    def state_dict(self) -> dict:
        return {**self.identity, "taken": self.taken, "roles": list(self.roles), "drawn": dict(self.drawn)}

    @property
    def skipped(self) -> dict[str, int]:
        out = {"shards": 0, "samples": 0}
        for state in self.roles:
            for key, value in (state or {}).get("skipped", {}).items():
                out[key] += value
        return out

    def close(self) -> None:
        self._iter = None  # drops the workers


