"""Open-vocabulary classification: nearest label embedding, top-1/top-5 (paper Sec. 4.1).

Label names go through the y-encoder with several prompt templates whose embeddings are
averaged (CLIP's prompt ensembling); the predicted embedding's nearest label wins.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vljepa.evaluate import text_embeddings
from vljepa.tasks.common import TaskData, TaskResult, predict, training_query

TEMPLATES = ("a {}", "a video of a {}", "a {} moves", "{}")


def label_embeddings(model, labels: list[str], templates: tuple[str, ...] = TEMPLATES) -> torch.Tensor:
    """``(C, S)`` unit-norm class embeddings, averaged over templates."""
    per_template = torch.stack([text_embeddings(model, [t.format(c) for c in labels]) for t in templates])  # (T, C, S)
    return F.normalize(per_template.mean(0), dim=-1)


def run(model, data: TaskData, label_set: list[str], *, templates: tuple[str, ...] = TEMPLATES) -> TaskResult:
    keep = np.array([i for i, lbl in enumerate(data.labels) if lbl is not None])
    unknown = sorted({data.labels[i] for i in keep} - set(label_set))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} of the split are not in the label set")
    query = training_query(model)
    video = predict(model, data.dataset().visual(keep), [query] * len(keep) if query else None)  # (S, D)
    classes = label_embeddings(model, label_set, templates)  # (C, D)
    scores = video @ classes.T  # (S, C)
    truth = torch.tensor([label_set.index(data.labels[i]) for i in keep])
    top5 = scores.topk(min(5, len(label_set)), dim=1).indices
    confusion = torch.zeros(len(label_set), len(label_set), dtype=torch.long)
    confusion.index_put_((truth, top5[:, 0]), torch.ones(len(keep), dtype=torch.long), accumulate=True)
    c = len(label_set)
    return TaskResult(
        task="classification",
        metrics={"top1": float((top5[:, 0] == truth).float().mean()),
                 "top5": float((top5 == truth[:, None]).any(1).float().mean())},
        chance={"top1": 1 / c, "top5": min(5 / c, 1.0)}, n=len(keep),
        protocol=f"Nearest of {c} label embeddings (y-encoder, templates {list(templates)} averaged).",
        details={"labels": label_set, "confusion": confusion.tolist()})
