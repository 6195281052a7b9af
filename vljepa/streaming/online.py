"""A causal change trigger for live selective decoding (beyond the paper, which is offline).

The running segment keeps the mean of its (unit-normalised) embeddings. A new window whose
cosine distance to that mean exceeds ``threshold`` for ``hysteresis`` consecutive windows
starts a new segment at the first of those windows. A segment is decoded once it is confirmed
(``hysteresis`` windows after it began, at least ``min_len`` windows long), from the mean of its
windows so far; a segment longer than ``max_len`` windows is re-decoded (a refresh). Latency is
therefore bounded: ``max(hysteresis, min_len)`` windows after a change, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class OnlineTriggerConfig:
    threshold: float = 0.15  # cosine distance to the running segment mean that counts as a change
    hysteresis: int = 2  # consecutive windows beyond the threshold before a change is accepted
    min_len: int = 2  # windows a segment must have before it is decoded
    max_len: int = 60  # windows after which a long segment is decoded again

    def __post_init__(self) -> None:
        if self.hysteresis < 1 or self.min_len < 1 or self.max_len < self.min_len:
            raise ValueError(f"invalid trigger config {self}")


@dataclass(frozen=True)
class TriggerEvent:
    index: int  # window index at which the decision is taken (the decode happens now)
    segment_start: int  # first window of the segment the decoded text describes
    embedding: np.ndarray  # mean embedding of the segment's windows up to `index`

    @property
    def latency(self) -> int:
        """Windows between the segment's start and its first decode."""
        return self.index - self.segment_start


class OnlineTrigger:
    """Feed embeddings one window at a time with ``update``; it says when to decode."""

    def __init__(self, cfg: OnlineTriggerConfig) -> None:
        self.cfg = cfg
        self.index = -1
        self.segment_start = 0
        self.segment_sum: np.ndarray | None = None
        self.segment_count = 0
        self.pending: list[np.ndarray] = []  # windows beyond the threshold, not yet accepted
        self.decoded_at: int | None = None  # window index of the current segment's last decode

    def _mean(self) -> np.ndarray:
        assert self.segment_sum is not None
        return self.segment_sum / self.segment_count

    def update(self, embedding: np.ndarray) -> TriggerEvent | None:
        self.index += 1
        emb = np.asarray(embedding, dtype=np.float64)
        emb = emb / max(np.linalg.norm(emb), 1e-12)
        if self.segment_sum is None:
            self.segment_sum, self.segment_count = emb.copy(), 1
            return self._maybe_decode()
        mean = self._mean()
        distance = 1.0 - float(emb @ mean / max(np.linalg.norm(mean), 1e-12))
        if distance > self.cfg.threshold:
            self.pending.append(emb)
            if len(self.pending) >= self.cfg.hysteresis:  # a confirmed change: new segment
                self.segment_start = self.index - len(self.pending) + 1
                self.segment_sum = np.sum(self.pending, axis=0)
                self.segment_count = len(self.pending)
                self.pending = []
                self.decoded_at = None
            return self._maybe_decode()
        # Back within the segment: the excursion was noise; fold it in.
        for pending in self.pending:
            self.segment_sum += pending
            self.segment_count += 1
        self.pending = []
        self.segment_sum += emb
        self.segment_count += 1
        return self._maybe_decode()

    def _maybe_decode(self) -> TriggerEvent | None:
        length = self.index - self.segment_start + 1
        if self.decoded_at is None and length >= self.cfg.min_len and not self.pending:
            self.decoded_at = self.index
            return TriggerEvent(self.index, self.segment_start, self._mean())
        if self.decoded_at is not None and self.index - self.decoded_at >= self.cfg.max_len:
            self.decoded_at = self.index
            return TriggerEvent(self.index, self.segment_start, self._mean())
        return None


def run_trigger(embeddings: np.ndarray, cfg: OnlineTriggerConfig) -> list[TriggerEvent]:
    """All decode events of a ``(T, D)`` stream, fed causally one window at a time."""
    trigger = OnlineTrigger(cfg)
    events = [trigger.update(e) for e in np.asarray(embeddings)]
    out = [e for e in events if e is not None]
    if not out and len(embeddings):  # a stream shorter than min_len still gets one decode
        out.append(TriggerEvent(len(embeddings) - 1, 0, np.asarray(embeddings, dtype=np.float64).mean(0)))
    return out
