"""Y-encoder hard negatives, SugarCrepe++ / VISLA style, built from our captions (paper Sec. 4.6).

Negatives of a caption, each differing from it in one compositional way:
  replace_attribute  one event's colour replaced by another colour
  swap_attribute     the colours of two events exchanged (multi-event captions)
  replace_object     one event's shape replaced by another shape
  reorder_events     the events in reverse order (multi-event captions)
Two scores per kind:
  text-only (SugarCrepe++'s TOT): for the triplet (caption, paraphrase, negative), correct when
    the two positives are closer to each other than either is to the negative; chance 1/3.
  video-anchored (SugarCrepe's ITT): the clip's predicted embedding is closer to the caption
    than to the negative; chance 1/2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from vljepa.evaluate import text_embeddings
from vljepa.tasks.common import Event, TaskData, TaskResult, predict, training_query

THEN = ", then "


@dataclass(frozen=True)
class Vocabulary:
    """The corpus' closed vocabulary (``corpus.json``)."""

    colours: tuple[str, ...]
    shapes: tuple[str, ...]
    motions: tuple[str, ...]


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith(("s", "sh", "ch", "x")) else "s")


def replace_shape(text: str, old: str, new: str) -> str:
    text = re.sub(rf"\b{re.escape(_plural(old))}\b", _plural(new), text)
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


def replace_word(text: str, old: str, new: str) -> str:
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


def paraphrase(caption: str) -> str:
    """A meaning-preserving rewrite (the second positive of SugarCrepe++'s triplets)."""
    return "in this video " + caption.replace(THEN, " and after that ")


def negatives(events: list[Event], vocab: Vocabulary, rng: np.random.Generator) -> dict[str, str]:
    """One negative caption per applicable kind, built from the clip's events."""
    texts = [e.text for e in events]
    out: dict[str, str] = {}
    k = int(rng.integers(len(events)))
    colour = events[k].attributes.get("colour")
    if colour:
        new = str(rng.choice([c for c in vocab.colours if c != colour]))
        out["replace_attribute"] = THEN.join(texts[:k] + [replace_word(texts[k], colour, new)] + texts[k + 1 :])
    shape = events[k].attributes.get("shape")
    if shape:
        new = str(rng.choice([s for s in vocab.shapes if s != shape]))
        out["replace_object"] = THEN.join(texts[:k] + [replace_shape(texts[k], shape, new)] + texts[k + 1 :])
    pairs = [(a, b) for a in range(len(events)) for b in range(a + 1, len(events))
             if events[a].attributes.get("colour") != events[b].attributes.get("colour")]
    if pairs:
        a, b = pairs[int(rng.integers(len(pairs)))]
        ca, cb = events[a].attributes["colour"], events[b].attributes["colour"]
        swapped = list(texts)
        swapped[a], swapped[b] = replace_word(texts[a], ca, cb), replace_word(texts[b], cb, ca)
        out["swap_attribute"] = THEN.join(swapped)
    if len(events) > 1 and texts != texts[::-1]:
        out["reorder_events"] = THEN.join(texts[::-1])
    return out


def run(model, data: TaskData, vocab: Vocabulary, *, seed: int = 0) -> TaskResult:
    rng = np.random.default_rng(seed)
    rows = []  # (sample index, kind, positive, paraphrase, negative)
    for i, events in enumerate(data.events):
        if not events or THEN.join(e.text for e in events) != data.captions[i]:
            continue  # the caption must be exactly its events joined, or edits would not be minimal
        for kind, negative in negatives(events, vocab, rng).items():
            if negative != data.captions[i]:
                rows.append((i, kind, data.captions[i], paraphrase(data.captions[i]), negative))
    if not rows:
        raise ValueError("no captions to build hard negatives from (events missing?)")
    pos = text_embeddings(model, [r[2] for r in rows])
    para = text_embeddings(model, [r[3] for r in rows])
    neg = text_embeddings(model, [r[4] for r in rows])
    s_pp, s_pn, s_qn = (pos * para).sum(1), (pos * neg).sum(1), (para * neg).sum(1)
    text_ok = ((s_pp > s_pn) & (s_pp > s_qn)).numpy()
    index = np.array([r[0] for r in rows])
    query = training_query(model)
    video = predict(model, data.dataset().visual(index), [query] * len(index) if query else None)
    video_ok = ((video * pos).sum(1) > (video * neg).sum(1)).numpy()
    kinds = np.array([r[1] for r in rows])
    metrics = {"text_accuracy": float(text_ok.mean()), "video_accuracy": float(video_ok.mean())}
    chance = {"text_accuracy": 1 / 3, "video_accuracy": 1 / 2}
    counts = {}
    for kind in sorted(set(kinds)):
        sel = kinds == kind
        metrics[f"text_{kind}"], chance[f"text_{kind}"] = float(text_ok[sel].mean()), 1 / 3
        metrics[f"video_{kind}"], chance[f"video_{kind}"] = float(video_ok[sel].mean()), 1 / 2
        counts[kind] = int(sel.sum())
    examples = [{"kind": r[1], "positive": r[2], "paraphrase": r[3], "negative": r[4]} for r in rows[:8]]
    return TaskResult(task="hard_negatives", metrics=metrics, chance=chance, n=len(rows),
                      protocol=__doc__.split("\n\n", 1)[1].strip(), details={"counts": counts, "examples": examples})
