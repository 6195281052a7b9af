"""Tokenizers behind one call signature: texts in, padded ids and mask out."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch


class Tokenizer(Protocol):
    pad_id: int

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``input_ids`` ``(B, L)`` int64 and ``attention_mask`` ``(B, L)`` int64 (1 = real)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes → ids in ``[1, vocab)``; 0 is padding. For the random ``tiny`` models."""

    def __init__(self, vocab_size: int) -> None:
        if vocab_size < 2:
            raise ValueError("vocab_size must be at least 2")
        self.vocab_size = vocab_size
        self.pad_id = 0

    def lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text before truncation."""
        return [len(t.encode()) for t in texts]

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = [[1 + b % (self.vocab_size - 1) for b in t.encode()][:max_length] for t in texts]
        length = max((len(e) for e in encoded), default=0)
        ids = torch.full((len(texts), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(texts), length), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask


class HFTokenizer:
    """A local Hugging Face tokenizer directory (never downloads)."""

    def __init__(self, path: str | Path, *, pad_id: int | None = None) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if self.tokenizer.pad_token_id is None:
            if pad_id is None:
                raise ValueError(f"tokenizer at {path} has no pad token; pass pad_id")
            self.tokenizer.pad_token_id = pad_id
        self.pad_id = int(self.tokenizer.pad_token_id)

    def lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text before truncation (special tokens included, as the model reads them)."""
        return [len(ids) for ids in self.tokenizer(list(texts), truncation=False)["input_ids"]]

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(list(texts), padding="longest", truncation=True, max_length=max_length,
                             return_tensors="pt")
        return out["input_ids"].long(), out["attention_mask"].long()
