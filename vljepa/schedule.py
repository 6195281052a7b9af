"""Learning-rate schedules (per optimiser step) and the run length."""

from __future__ import annotations

import math
from typing import Callable

from vljepa.config import VLJepaConfig


def lr_lambda(cfg: VLJepaConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warmup, then constant (stage-1 pretraining) or cosine to zero (SFT, paper Sec. 3.2)."""
    warmup = max(cfg.train.warmup_steps, 0)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.train.schedule == "cosine":
            progress = (step - warmup) / max(total_steps - warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


def total_steps(cfg: VLJepaConfig, n_samples: int) -> int:
    """Optimiser steps of the run: ``max_steps``, else ``epochs`` full global batches."""
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    per_epoch = n_samples // cfg.train.batch_size
    return max(1, int(round(cfg.train.epochs * per_epoch)))
