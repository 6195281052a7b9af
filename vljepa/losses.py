"""Embedding-space losses: bidirectional InfoNCE (the paper's default) and its ablations.

Paper (final version, Sec. 3 and Table 5c): InfoNCE decomposes into an alignment term and a
uniformity (anti-collapse) term; it is applied in both directions (predicted → target and
target → predicted) so predictor and y-encoder learn from each other. L2, L1 and cosine are
the ablations (they have no anti-collapse term and need a frozen y-encoder).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vljepa.config import LossName


def info_nce(predicted: torch.Tensor, target: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Bidirectional InfoNCE over a batch.

    Args:
        predicted: ``(B, D)`` predictor outputs.
        target: ``(B, D)`` y-encoder outputs; row i is the positive of ``predicted[i]``, every
            other row a negative.
        temperature: softmax temperature τ (logits are cosine similarities / τ).
    Returns:
        Scalar: mean of the predicted→target and target→predicted cross-entropies.
    """
    if predicted.shape != target.shape or predicted.ndim != 2:
        raise ValueError(f"expected two (B, D) tensors, got {tuple(predicted.shape)} and {tuple(target.shape)}")
    predicted = F.normalize(predicted, dim=-1)
    target = F.normalize(target, dim=-1)
    logits = predicted @ target.T / temperature  # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def l2_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between embeddings (the submission's loss with a frozen SONAR encoder)."""
    return F.mse_loss(predicted, target)


def l1_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(predicted, target)


def cosine_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over the batch."""
    return (1.0 - F.cosine_similarity(predicted, target, dim=-1)).mean()


def embedding_loss(name: LossName, predicted: torch.Tensor, target: torch.Tensor, *,
                   temperature: float = 0.07) -> torch.Tensor:
    """Dispatch on the configured loss name."""
    if name == "infonce":
        return info_nce(predicted, target, temperature)
    if name == "l2":
        return l2_loss(predicted, target)
    if name == "l1":
        return l1_loss(predicted, target)
    if name == "cosine":
        return cosine_loss(predicted, target)
    raise ValueError(f"unknown loss {name!r}; choose infonce | l2 | l1 | cosine")
