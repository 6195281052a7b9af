"""Captioning and classification of the token VLM baseline, with the protocols of ``vljepa.tasks``.

Captioning: greedy generation scored against each clip's caption as its one reference, with the
same scorers as ``vljepa.tasks.captioning`` (``caption_scores``). Classification: the label texts
``LABEL_TEMPLATE.format(label)`` ranked by the lowest mean per-token NLL after the visual prefix
(the paper's perplexity protocol for its VLM, Sec. 4.2). Cost: decoder forward passes and seconds
per caption, to set beside VL-JEPA's one predictor pass (+ y-decoder) per caption.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from vljepa.baselines.token_vlm import TokenVLM
from vljepa.evaluate import LABEL_TEMPLATE
from vljepa.tasks.common import TaskData, training_query
from vljepa.tasks.scoring import caption_scores


@torch.no_grad()
def caption(model: TokenVLM, visual: torch.Tensor, query: str = "", *, batch_size: int = 64,
            max_new_tokens: int | None = None) -> tuple[list[str], list[int], float]:
    """Greedy captions for visual tokens ``(S, N, D)``: texts, passes per caption, wall seconds."""
    model.eval()
    texts: list[str] = []
    passes: list[int] = []
    start = time.perf_counter()
    for begin in range(0, len(visual), batch_size):
        part = visual[begin : begin + batch_size]
        result = model.generate(part, [query] * len(part) if query else None, max_new_tokens=max_new_tokens)
        texts += result.texts
        passes += result.passes_per_text
    return texts, passes, time.perf_counter() - start


def evaluate_token_vlm(model: TokenVLM, data: TaskData, label_set: list[str], *, batch_size: int = 64,
                       max_new_tokens: int | None = None) -> dict[str, float]:
    """``captioning/*`` (CIDEr, BLEU, ROUGE-L), ``classification/top1|top5`` and ``cost/*`` on one split.

    Args:
        data: the split (cached tokens ``(S, N, D)``, captions, labels).
        label_set: class names; candidates are ``LABEL_TEMPLATE.format(label)``. Labels whose text
            has a token outside a "cut" vocabulary score ``inf`` NLL and are counted in
            ``classification/labels_out_of_vocab``.
    """
    query = training_query(model)
    visual = data.dataset().visual(np.arange(len(data)))  # (S, N, D)
    texts, passes, seconds = caption(model, visual, query, batch_size=batch_size, max_new_tokens=max_new_tokens)
    metrics = {f"captioning/{k}": v for k, v in caption_scores(texts, [[c] for c in data.captions]).items()}
    metrics["cost/forward_passes_per_caption"] = float(np.mean(passes))
    metrics["cost/seconds_per_caption"] = seconds / len(data)

    keep = np.array([i for i, label in enumerate(data.labels) if label is not None], dtype=np.int64)
    unknown = sorted({data.labels[i] for i in keep} - set(label_set))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} of the split are not in the label set")
    if len(keep):
        candidates = [LABEL_TEMPLATE.format(label) for label in label_set]
        nll = model.candidate_nll(visual[keep], candidates, [query] * len(keep) if query else None)  # (S, C)
        truth = torch.tensor([label_set.index(data.labels[i]) for i in keep])
        top5 = (-nll).topk(min(5, len(label_set)), dim=1).indices  # lowest NLL first
        metrics["classification/top1"] = float((top5[:, 0] == truth).float().mean())
        metrics["classification/top5"] = float((top5 == truth[:, None]).any(1).float().mean())
        metrics["classification/labels_out_of_vocab"] = float(torch.isinf(nll[0]).sum())
    return metrics
