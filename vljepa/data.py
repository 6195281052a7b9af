"""In-memory training data over cached frozen tokens, and a seeded batch sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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


def epoch_batches(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One shuffled pass, full batches only (InfoNCE wants a constant number of negatives)."""
    if n < batch_size:
        raise ValueError(f"dataset of {n} samples is smaller than one batch of {batch_size}")
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]
