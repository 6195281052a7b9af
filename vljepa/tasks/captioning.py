"""Captioning: predicted embedding → y-decoder → text; CIDEr, BLEU-4, ROUGE-L (paper Sec. 4.4).

Chance level: each clip scored with the reference caption of another clip of the split (a
random derangement): what a decoder that ignores the video but speaks the domain gets.
"""

from __future__ import annotations

import numpy as np

from vljepa.decoder import decode_embeddings
from vljepa.tasks.common import TaskData, TaskResult, predict, training_query
from vljepa.tasks.scoring import caption_scores


def run(model, decoder, data: TaskData, *, num_beams: int = 3, seed: int = 0) -> TaskResult:
    query = training_query(model)
    predicted = predict(model, data.dataset().visual(np.arange(len(data))), [query] * len(data) if query else None)
    decoded = decode_embeddings(decoder, predicted, num_beams=num_beams)
    references = [[c] for c in data.captions]
    metrics = caption_scores(decoded, references)
    rng = np.random.default_rng(seed)
    shift = rng.permutation(len(data))
    shift = np.where(shift == np.arange(len(data)), (shift + 1) % len(data), shift)  # no clip gets its own
    chance = caption_scores([data.captions[j] for j in shift], references)
    examples = [{"sample_id": s, "reference": r, "decoded": d}
                for s, r, d in zip(data.sample_ids[:12], data.captions[:12], decoded[:12])]
    return TaskResult(task="captioning", metrics=metrics, chance=chance, n=len(data),
                      protocol=f"Predicted embedding decoded by the y-decoder (beam {num_beams}); pycocoevalcap "
                               "scorers on lower-cased, punctuation-free text. Chance: another clip's caption.",
                      details={"examples": examples, "decoded": decoded})
