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


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """All ranks' ``(b, D)`` features as one ``(world_size * b, D)`` tensor, with gradient.

    As open_clip's ``gather_features(gather_with_grad=True)``: the backward of
    ``torch.distributed.nn.all_gather`` sums, on each rank, the gradients that every rank's loss
    sends to that rank's features, so averaging parameter gradients over ranks (DDP) gives
    exactly the gradient of the global-batch loss. Ranks must hold equal batch sizes.
    """
    if world_size == 1:
        return features
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(features), dim=0)


def info_nce(predicted: torch.Tensor, target: torch.Tensor, temperature: float = 0.07, *,
             rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Bidirectional InfoNCE over a batch whose negatives span all ranks.

    Args:
        predicted: ``(b, D)`` predictor outputs of this rank.
        target: ``(b, D)`` y-encoder outputs; row i is the positive of ``predicted[i]``, every
            other row of every rank a negative.
        temperature: softmax temperature τ (logits are cosine similarities / τ).
        rank, world_size: this process's place in the data-parallel group (1 process: 0, 1).
    Returns:
        Scalar: mean of the predicted→target and target→predicted cross-entropies over this
        rank's rows (the "local loss" of open_clip); its mean over ranks is the global-batch loss.
    """
    if predicted.shape != target.shape or predicted.ndim != 2:
        raise ValueError(f"expected two (B, D) tensors, got {tuple(predicted.shape)} and {tuple(target.shape)}")
    predicted = F.normalize(predicted, dim=-1)
    target = F.normalize(target, dim=-1)
    if world_size == 1:  # one (B, B) matrix and its transpose
        logits = predicted @ target.T / temperature  # (B, B)
        labels = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    all_predicted = gather_features(predicted, rank, world_size)  # (W*b, D)
    all_target = gather_features(target, rank, world_size)  # (W*b, D)
    labels = torch.arange(predicted.shape[0], device=predicted.device) + rank * predicted.shape[0]
    logits_p2t = predicted @ all_target.T / temperature  # (b, W*b)
    logits_t2p = target @ all_predicted.T / temperature  # (b, W*b)
    return 0.5 * (F.cross_entropy(logits_p2t, labels) + F.cross_entropy(logits_t2p, labels))


def l2_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between embeddings (the submission's loss with a frozen SONAR encoder)."""
    return F.mse_loss(predicted, target)


def l1_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(predicted, target)


def cosine_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged over the batch."""
    return (1.0 - F.cosine_similarity(predicted, target, dim=-1)).mean()


def embedding_loss(name: LossName, predicted: torch.Tensor, target: torch.Tensor, *,
                   temperature: float = 0.07, rank: int = 0, world_size: int = 1) -> torch.Tensor:
    """Dispatch on the configured loss name; only InfoNCE couples samples across ranks."""
    if name == "infonce":
        return info_nce(predicted, target, temperature, rank=rank, world_size=world_size)
    if name == "l2":
        return l2_loss(predicted, target)
    if name == "l1":
        return l1_loss(predicted, target)
    if name == "cosine":
        return cosine_loss(predicted, target)
    raise ValueError(f"unknown loss {name!r}; choose infonce | l2 | l1 | cosine")
