"""Embedding-space analysis of predicted vs target embeddings, and the evaluation plots.

Asked for by the ICLR reviewers (paper 002): how the predictor's space relates to the
y-encoder's. Metrics (all on unit-norm embeddings, row i of ``predicted`` pairs with row i of
``target``):
  alignment       E ||p_i - t_i||^2                           (Wang & Isola 2020; lower is better)
  uniformity      log E_{i<j} exp(-2 ||x_i - x_j||^2), per space (lower = more uniform)
  nn_agreement    mean overlap of the k nearest neighbours of i in the two spaces (chance k/(n-1))
  modality_gap    || mean(p) - mean(t) ||                     (Liang et al. 2022)
Plots are matplotlib PNGs with the Agg backend (no display).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def alignment(predicted: torch.Tensor, target: torch.Tensor, alpha: float = 2.0) -> float:
    """E ||p_i - t_i||^alpha over matched pairs ``(N, D)``."""
    return float((F.normalize(predicted, dim=-1) - F.normalize(target, dim=-1)).norm(dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2.0) -> float:
    """log E_{i<j} exp(-t ||x_i - x_j||^2) of ``(N, D)`` unit-norm rows."""
    x = F.normalize(x, dim=-1)
    sq = torch.pdist(x).pow(2)  # (N(N-1)/2,)
    return float(torch.logsumexp(-t * sq, dim=0) - np.log(len(sq)))


def nn_agreement(predicted: torch.Tensor, target: torch.Tensor, k: int = 10) -> float:
    """Mean |kNN_p(i) ∩ kNN_t(i)| / k, neighbours by cosine similarity, self excluded."""
    k = min(k, len(predicted) - 1)

    def knn(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=-1)
        sim = x @ x.T
        sim.fill_diagonal_(float("-inf"))
        return sim.topk(k, dim=1).indices  # (N, k)

    a, b = knn(predicted), knn(target)
    overlap = [len(set(a[i].tolist()) & set(b[i].tolist())) for i in range(len(a))]
    return float(np.mean(overlap) / k)


def modality_gap(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Distance between the centroids of the two unit-norm clouds."""
    return float((F.normalize(predicted, dim=-1).mean(0) - F.normalize(target, dim=-1).mean(0)).norm())


def analyse(predicted: torch.Tensor, target: torch.Tensor, *, k: int = 10) -> tuple[dict[str, float], dict[str, float]]:
    """All metrics and their reference levels (chance for agreement, a shuffled pairing for alignment)."""
    p, t = F.normalize(predicted.float(), dim=-1), F.normalize(target.float(), dim=-1)
    n = len(p)
    shuffled = t[torch.roll(torch.arange(n), 1)]
    metrics = {
        "alignment": alignment(p, t), "uniformity_predicted": uniformity(p), "uniformity_target": uniformity(t),
        "nn_agreement": nn_agreement(p, t, k), "modality_gap": modality_gap(p, t),
        "matched_cosine": float((p * t).sum(1).mean()), "unmatched_cosine": float((p * shuffled).sum(1).mean()),
    }
    reference = {"alignment": alignment(p, shuffled), "nn_agreement": min(k, n - 1) / (n - 1),
                 "matched_cosine": metrics["unmatched_cosine"]}
    return metrics, reference


# ---------------------------------------------------------------------------------------------
# Plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def embedding_map_png(predicted: torch.Tensor, target: torch.Tensor, labels: list[str], path: str | Path,
                      title: str = "predicted (o) and target (x) embeddings, PCA") -> Path:
    """2-D PCA (fitted on both clouds together) coloured by class; lines join matched pairs."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    p, t = F.normalize(predicted.float(), dim=-1).numpy(), F.normalize(target.float(), dim=-1).numpy()
    xy = PCA(n_components=2, random_state=0).fit_transform(np.concatenate([p, t]))
    xp, xt = xy[: len(p)], xy[len(p) :]
    classes = sorted(set(labels))
    cmap = plt.get_cmap("tab20", max(len(classes), 1))
    colour = np.array([cmap(classes.index(lbl)) for lbl in labels])
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=110)
    for i in range(len(p)):
        ax.plot([xp[i, 0], xt[i, 0]], [xp[i, 1], xt[i, 1]], color=colour[i], alpha=0.15, lw=0.6)
    ax.scatter(xp[:, 0], xp[:, 1], c=colour, marker="o", s=18, label="predicted")
    ax.scatter(xt[:, 0], xt[:, 1], c=colour, marker="x", s=22, label="target (y-encoder)")
    if len(classes) <= 12:
        for c in classes:
            ax.scatter([], [], color=cmap(classes.index(c)), label=c)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title + f" — {len(classes)} classes")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def confusion_png(confusion: list[list[int]], labels: list[str], path: str | Path, title: str) -> Path:
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=float)
    size = max(5.0, 0.22 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def rank_histogram_png(ranks_by_direction: dict[str, list[int]], path: str | Path, title: str) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    top = max(max(r) for r in ranks_by_direction.values())
    bins = np.arange(0.5, min(top, 60) + 1.5)
    for name, ranks in ranks_by_direction.items():
        ax.hist(np.clip(ranks, 1, bins[-1] - 0.5), bins=bins, alpha=0.55, label=name)
    ax.set_xlabel("rank of the true match (clipped at 60)")
    ax.set_ylabel("queries")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def examples_table_png(rows: list[tuple[str, ...]], header: tuple[str, ...], path: str | Path, title: str) -> Path:
    """A table of text (e.g. reference vs decoded captions) as an image."""
    import textwrap

    plt = _pyplot()
    wrapped = [[textwrap.fill(str(cell), 48) for cell in row] for row in rows]
    height = 1.0 + sum(0.28 * max(c.count("\n") + 1 for c in row) for row in wrapped)
    fig, ax = plt.subplots(figsize=(4.2 * len(header), height), dpi=110)
    ax.axis("off")
    table = ax.table(cellText=wrapped, colLabels=list(header), loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (r, _), cell in table.get_celld().items():
        lines = max([wrapped[r - 1][c].count("\n") + 1 for c in range(len(header))]) if r > 0 else 1
        cell.set_height(0.28 * lines / height)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
