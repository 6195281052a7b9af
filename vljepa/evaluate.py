"""Zero-shot evaluation in embedding space: retrieval and open-vocabulary classification.

Protocols follow the paper (Sec. 4): for text→video retrieval each video is mapped to its
predicted embedding and ranked by cosine similarity to the y-encoder embedding of the query
text; for classification the class names go through the y-encoder (with a prompt template) and
the nearest one to the predicted embedding wins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vljepa.data import TokenTextDataset
from vljepa.decoder import YDecoder, decode_embeddings
from vljepa.model import VLJepa

LABEL_TEMPLATE = "a {}"  # class name -> text for the y-encoder ("a red circle")


@torch.no_grad()
def predict_embeddings(model: VLJepa, data: TokenTextDataset, *, query: str = "", batch_size: int = 64) -> torch.Tensor:
    """Predicted, L2-normalised embeddings ``(S, D)`` for every sample of ``data``."""
    model.eval()
    device = model.predictor.out_proj.weight.device
    out = []
    for start in range(0, len(data), batch_size):
        index = np.arange(start, min(start + batch_size, len(data)))
        queries = [query] * len(index) if query else None
        out.append(model.predict(data.visual(index).to(device), queries).float().cpu())
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def text_embeddings(model: VLJepa, texts: list[str], *, batch_size: int = 128) -> torch.Tensor:
    """Y-encoder embeddings ``(len(texts), D)``, L2-normalised."""
    model.eval()
    out = [model.encode_text(texts[i : i + batch_size]).float().cpu() for i in range(0, len(texts), batch_size)]
    return F.normalize(torch.cat(out), dim=-1)


def ranks(similarity: torch.Tensor) -> torch.Tensor:
    """1-based rank of the diagonal entry in each row of a ``(Q, C)`` similarity matrix (Q == C)."""
    positive = similarity.diagonal().unsqueeze(1)  # (Q, 1)
    return (similarity > positive).sum(dim=1) + 1  # ties count in the query's favour


def recall_metrics(rank: torch.Tensor, prefix: str, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    metrics = {f"{prefix}_r{k}": float((rank <= k).float().mean()) for k in ks}
    metrics[f"{prefix}_median_rank"] = float(rank.float().median())
    return metrics


@dataclass(frozen=True)
class EvalResult:
    metrics: dict[str, float]
    chance: dict[str, float]
    n_samples: int


def evaluate(model: VLJepa, data: TokenTextDataset, *, label_set: list[str] | None = None,
             query: str = "") -> EvalResult:
    """Retrieval (text→video, video→text) and, if labels are given, classification top-1/top-5."""
    video = predict_embeddings(model, data, query=query)  # (S, D)
    text = text_embeddings(model, data.texts)  # (S, D)
    similarity = text @ video.T  # (S texts, S videos)
    metrics = {}
    metrics.update(recall_metrics(ranks(similarity), "t2v"))
    metrics.update(recall_metrics(ranks(similarity.T), "v2t"))
    n = len(data)
    chance = {"t2v_r1": 1.0 / n, "v2t_r1": 1.0 / n, "t2v_r5": min(5.0 / n, 1.0)}
    if data.labels is not None and label_set:
        classes = text_embeddings(model, [LABEL_TEMPLATE.format(c) for c in label_set])  # (C, D)
        scores = video @ classes.T  # (S, C)
        truth = torch.tensor([label_set.index(label) for label in data.labels])
        top5 = scores.topk(min(5, len(label_set)), dim=1).indices
        metrics["cls_top1"] = float((top5[:, 0] == truth).float().mean())
        metrics["cls_top5"] = float((top5 == truth[:, None]).any(dim=1).float().mean())
        chance["cls_top1"] = 1.0 / len(label_set)
        chance["cls_top5"] = min(5.0 / len(label_set), 1.0)
    return EvalResult(metrics=metrics, chance=chance, n_samples=n)


def round_trip(model: VLJepa, decoder: YDecoder, texts: list[str], *, num_beams: int = 1) -> dict:
    """text -> y-encoder -> y-decoder -> text on held-out ``texts``: BLEU-4, CIDEr, ROUGE-L, exact match."""
    from vljepa.tasks.scoring import caption_scores

    embeddings = text_embeddings(model, texts)  # (N, S)
    decoded = decode_embeddings(decoder, embeddings, num_beams=num_beams)
    scores = caption_scores(decoded, [[t] for t in texts])
    scores["exact_match"] = sum(d.strip().lower() == t.strip().lower() for d, t in zip(decoded, texts)) / len(texts)
    return {"metrics": scores, "examples": list(zip(texts, decoded))[:20], "n": len(texts)}
