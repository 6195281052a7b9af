"""Text→video and video→text retrieval: R@1/5/10 and median rank (paper Sec. 4.1, Table 1)."""

from __future__ import annotations

import numpy as np

from vljepa.evaluate import ranks, recall_metrics, text_embeddings
from vljepa.tasks.common import TaskData, TaskResult, predict, training_query


def run(model, data: TaskData) -> TaskResult:
    """Each clip's predicted embedding against every caption's y-encoder embedding of the split."""
    query = training_query(model)
    video = predict(model, data.dataset().visual(np.arange(len(data))), [query] * len(data) if query else None)
    text = text_embeddings(model, data.captions)  # (S, D)
    similarity = text @ video.T  # (S texts, S videos)
    t2v, v2t = ranks(similarity), ranks(similarity.T)
    metrics = {**recall_metrics(t2v, "t2v"), **recall_metrics(v2t, "v2t")}
    n = len(data)
    chance = {}
    for prefix in ("t2v", "v2t"):
        chance.update({f"{prefix}_r{k}": min(k / n, 1.0) for k in (1, 5, 10)})
        chance[f"{prefix}_median_rank"] = (n + 1) / 2
    return TaskResult(task="retrieval", metrics=metrics, chance=chance, n=n,
                      protocol=f"Zero-shot retrieval among the {n} clips of the split by cosine similarity "
                               "(predicted embedding vs y-encoder caption embedding); ties count for the query.",
                      details={"t2v_ranks": t2v.tolist(), "v2t_ranks": v2t.tolist()})
