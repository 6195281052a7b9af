"""Training data over cached frozen tokens, and the seeded, resumable batch stream.

Every training source answers three questions about a batch of sample indices (``TrainData``):
the visual tokens ``(b, N, D)``, the target texts and the query texts (None when query-free).

- ``TokenTextDataset``: one sample per clip, target = caption (stage-1 pretraining).
- ``QueryTargetDataset``: many (query, target) samples per clip sharing the clip's tokens — the
  SFT mix (VQA, captions, classification, pretraining data). Build one from any iterable of
  ``(sample_id, tokens, query, target)`` with ``from_samples`` (a mix drawn from DuckDB plugs in
  here) or from a token array plus a row index per sample.
- ``LiveFrames``: frames through the frozen x-encoder in the loop (``train.mode = "live"``).

Training at scale reads ``StreamedData`` instead (``preprocessing.stream``: shards read one by one,
a mix of sources, resumable): each rank opens its own ``BatchReader``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


class TrainData(Protocol):
    """What the training loop reads: ``len(data)`` samples addressed by index."""

    def __len__(self) -> int: ...

    def visual(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Float32 visual tokens ``(b, N, D)``."""
        ...

    def text(self, index: torch.Tensor | np.ndarray) -> list[str]:
        """Target texts (the y-encoder's input)."""
        ...

    def query(self, index: torch.Tensor | np.ndarray) -> list[str] | None:
        """Query texts for the predictor, or None when the samples are query-free."""
        ...


class BatchReader(Protocol):
    """One rank's stream of local batches (``preprocessing.stream.RankStream``)."""

    drawn: dict[str, int]  # samples drawn per component so far

    def next(self) -> dict[str, Any]:
        """``{"visual": (b, N, D) float32 (or frames (b, T, 3, H, W)), "queries": [...], "texts": [...], ...}``."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    @property
    def skipped(self) -> dict[str, int]: ...

    def close(self) -> None: ...


class StreamedData(Protocol):
    """Training data read as a stream of per-rank batches; ``n_samples`` is one epoch."""

    n_samples: int
    shares: dict[str, float]  # component -> expected share of the draws
    encode: Callable[[torch.Tensor], torch.Tensor] | None  # live mode: frames -> tokens, in the loop

    def open(self, *, rank: int, world_size: int, batch_size: int, seed: int,
             state: dict[str, Any] | None) -> BatchReader: ...


@dataclass(frozen=True)
class TokenTextDataset:
    """Cached visual tokens paired with their target texts.

    tokens: ``(S, N, D)`` float16 (as cached); texts: ``S`` target strings (captions or answers);
    labels: optional ``S`` class names for classification evaluation.
    """

    sample_ids: list[str]
    tokens: np.ndarray
    texts: list[str]
    labels: list[str] | None = None

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if self.tokens.ndim != 3 or self.tokens.shape[0] != n or len(self.texts) != n:
            raise ValueError(f"inconsistent dataset: {n} ids, tokens {self.tokens.shape}, {len(self.texts)} texts")
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"{len(self.labels)} labels for {n} samples")
        empty = [sid for sid, text in zip(self.sample_ids, self.texts) if not text.strip()]
        if empty:
            raise ValueError(f"{len(empty)} samples have an empty target text, e.g. {empty[:3]}")

    def __len__(self) -> int:
        return len(self.sample_ids)

    def visual(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Float32 tokens ``(b, N, D)`` for the given sample indices."""
        return torch.from_numpy(self.tokens[np.asarray(index)].astype(np.float32))

    def text(self, index: torch.Tensor | np.ndarray) -> list[str]:
        return [self.texts[i] for i in np.asarray(index).tolist()]

    def query(self, index: torch.Tensor | np.ndarray) -> list[str] | None:
        return None


@dataclass(frozen=True)
class QueryTargetDataset:
    """(visual tokens, query, target text) samples; samples of one clip share its token row.

    tokens: ``(C, N, D)`` one row per clip; token_row: ``(S,)`` the row of each sample;
    queries / texts / tasks: ``S`` strings each ("" query = query-free, e.g. a caption).
    """

    sample_ids: list[str]
    tokens: np.ndarray
    token_row: np.ndarray
    queries: list[str]
    texts: list[str]
    tasks: list[str]

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if not (len(self.token_row) == len(self.queries) == len(self.texts) == len(self.tasks) == n):
            raise ValueError(f"inconsistent dataset: {n} ids, {len(self.token_row)} rows, "
                             f"{len(self.queries)} queries, {len(self.texts)} texts, {len(self.tasks)} tasks")
        if self.tokens.ndim != 3:
            raise ValueError(f"tokens must be (C, N, D), got {self.tokens.shape}")
        if n and (self.token_row.min() < 0 or self.token_row.max() >= self.tokens.shape[0]):
            raise ValueError(f"token_row outside [0, {self.tokens.shape[0]})")
        empty = [sid for sid, text in zip(self.sample_ids, self.texts) if not text.strip()]
        if empty:
            raise ValueError(f"{len(empty)} samples have an empty target text, e.g. {empty[:3]}")

    @classmethod
    def from_samples(cls, samples: Iterable[tuple[str, np.ndarray, str, str]], *,
                     task: str = "mix") -> "QueryTargetDataset":
        """Stack ``(sample_id, tokens (N, D), query, target)`` tuples, e.g. rows of a DuckDB mix."""
        ids, rows, queries, texts = [], [], [], []
        for sample_id, tokens, query, target in samples:
            ids.append(sample_id)
            rows.append(np.asarray(tokens))
            queries.append(query or "")
            texts.append(target)
        if not rows:
            raise ValueError("no samples")
        return cls(sample_ids=ids, tokens=np.stack(rows), token_row=np.arange(len(rows)), queries=queries,
                   texts=texts, tasks=[task] * len(ids))

    def __len__(self) -> int:
        return len(self.sample_ids)

    def visual(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.tokens[self.token_row[np.asarray(index)]].astype(np.float32))

    def text(self, index: torch.Tensor | np.ndarray) -> list[str]:
        return [self.texts[i] for i in np.asarray(index).tolist()]

    def query(self, index: torch.Tensor | np.ndarray) -> list[str] | None:
        queries = [self.queries[i] for i in np.asarray(index).tolist()]
        return queries if any(queries) else None


@dataclass(frozen=True)
class LiveFrames:
    """Frames encoded by the frozen x-encoder at every step (``train.mode = "live"``).

    frames: ``(S, T, 3, H, W)`` float32, normalised as the encoder expects; encode: the frozen
    encoder's ``encode`` (``(b, T, 3, H, W)`` -> ``(b, N, D)``).
    """

    frames: torch.Tensor
    texts: list[str]
    encode: Callable[[torch.Tensor], torch.Tensor]

    def __len__(self) -> int:
        return len(self.texts)

    @torch.no_grad()
    def visual(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.encode(self.frames[torch.as_tensor(np.asarray(index))]).float()

    def text(self, index: torch.Tensor | np.ndarray) -> list[str]:
        return [self.texts[i] for i in np.asarray(index).tolist()]

    def query(self, index: torch.Tensor | np.ndarray) -> list[str] | None:
        return None


class BatchStream:
    """Global batches of sample indices in a seeded order that a checkpoint resumes exactly.

    One generator seeded with ``seed`` draws a permutation per epoch (the order of the original
    single-process loop). The state is (generator state at the start of the current epoch,
    epoch, batches taken), so a resumed stream regenerates the same epoch and skips ahead.
    Every rank draws the same global batch and takes its own slice.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n < batch_size:
            raise ValueError(f"dataset of {n} samples is smaller than one batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.batch = -1, 0
        self._epoch_start_state = self.generator.get_state()
        self._order: list[torch.Tensor] = []

    def _start_epoch(self) -> None:
        self._epoch_start_state = self.generator.get_state()
        self._order = epoch_batches(self.n, self.batch_size, self.generator)
        self.epoch, self.batch = self.epoch + 1, 0

    def next(self) -> torch.Tensor:
        """The next global batch ``(batch_size,)``."""
        if self.batch >= len(self._order):
            self._start_epoch()
        index = self._order[self.batch]
        self.batch += 1
        return index

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "n": self.n, "batch_size": self.batch_size,
                "seed": self.seed, "generator": self._epoch_start_state.tolist()}

    def load_state_dict(self, state: dict) -> None:
        mine = {"n": self.n, "batch_size": self.batch_size, "seed": self.seed}
        theirs = {k: state[k] for k in mine}
        if mine != theirs:
            raise ValueError(f"checkpoint's data stream {theirs} does not match this run's {mine}: "
                             "resume with the same data and batch size, or start a new run directory")
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        if state["epoch"] < 0:
            self.epoch, self.batch, self._order = -1, 0, []
            return
        self.epoch = state["epoch"] - 1
        self._start_epoch()  # regenerates the epoch's order and leaves the generator where it was
        self.batch = state["batch"]


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One shuffled pass, full batches only (InfoNCE wants a constant number of negatives)."""
    if n < batch_size:
        raise ValueError(f"dataset of {n} samples is smaller than one batch of {batch_size}")
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
