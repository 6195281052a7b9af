"""Temporally constrained Ward segmentation of an embedding stream (the paper's Sec. 4.3).

Agglomerative clustering with Ward linkage, restricted by a chain connectivity graph so only
temporally adjacent clusters can merge: every cluster is a contiguous run of windows, and the
merge order minimises the within-segment variance ("monosemanticity").
"""

from __future__ import annotations

import numpy as np


def chain_connectivity(length: int):
    """Sparse ``(T, T)`` adjacency of a path graph: window t touches t-1 and t+1."""
    from scipy.sparse import diags

    if length < 1:
        raise ValueError("need at least one window")
    ones = np.ones(max(length - 1, 0))
    return diags([ones, ones], [-1, 1], shape=(length, length), format="csr")


def ward_segments(embeddings: np.ndarray, n_segments: int) -> np.ndarray:
    """Split a ``(T, D)`` embedding stream into ``n_segments`` contiguous segments.

    Returns labels ``(T,)`` int, numbered 0..n-1 in temporal order (each segment contiguous).
    ``n_segments`` is clipped to ``[1, T]``.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be (T, D), got shape {embeddings.shape}")
    length = embeddings.shape[0]
    n_segments = int(min(max(n_segments, 1), length))
    if n_segments == 1:
        return np.zeros(length, dtype=np.int64)
    if n_segments == length:
        return np.arange(length, dtype=np.int64)
    from sklearn.cluster import AgglomerativeClustering

    raw = AgglomerativeClustering(n_clusters=n_segments, linkage="ward",
                                  connectivity=chain_connectivity(length)).fit_predict(embeddings)
    return relabel_in_time(raw)


def relabel_in_time(labels: np.ndarray) -> np.ndarray:
    """Renumber cluster ids by first appearance, so label k is the k-th segment in time."""
    labels = np.asarray(labels)
    order: dict[int, int] = {}
    out = np.empty(len(labels), dtype=np.int64)
    for i, label in enumerate(labels.tolist()):
        out[i] = order.setdefault(label, len(order))
    return out


def segment_bounds(labels: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` index ranges of contiguous runs of equal labels."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(labels)]])
    return [(int(a), int(b)) for a, b in zip(starts, stops)]
