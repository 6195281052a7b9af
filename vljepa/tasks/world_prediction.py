"""WorldPrediction-style inverse dynamics (paper Sec. 4.3, WorldPrediction-WM).

Given only the first and the last frame of a clip (the state before and after), pick the
caption of the action that happened among 4 candidates: the true caption and 3 captions in
which every event's motion is replaced by a different motion (same objects, other actions).
The predictor sees the visual tokens of those two frames only. Chance: 1/4.
"""

from __future__ import annotations

import numpy as np

from vljepa.evaluate import text_embeddings
from vljepa.tasks.common import Event, TaskData, TaskResult, predict, training_query
from vljepa.tasks.hard_negatives import THEN, Vocabulary, replace_word

N_CANDIDATES = 4


def _verb_forms(motion: str) -> tuple[str, str]:
    """('moves left', 'move left'), ('grows', 'grow'): singular and plural forms of a motion."""
    verb, *rest = motion.split()
    plural = verb[:-1] if verb.endswith("s") else verb
    return motion, " ".join([plural, *rest])


def with_motion(event: Event, motion: str) -> str:
    old = event.attributes["motion"]
    for old_form, new_form in zip(_verb_forms(old), _verb_forms(motion)):
        if old_form in event.text:
            return replace_word(event.text, old_form, new_form)
    raise ValueError(f"motion {old!r} not found in event caption {event.text!r}")


def candidates(events: list[Event], vocab: Vocabulary, rng: np.random.Generator) -> list[str]:
    """The true caption first, then ``N_CANDIDATES - 1`` distinct alternatives."""
    truth = THEN.join(e.text for e in events)
    out, tries = [truth], 0
    while len(out) < N_CANDIDATES and tries < 100:
        tries += 1
        alt = THEN.join(with_motion(e, str(rng.choice([m for m in vocab.motions if m != e.attributes["motion"]])))
                        for e in events)
        if alt not in out:
            out.append(alt)
    return out


def run(model, data: TaskData, vocab: Vocabulary, *, seed: int = 0) -> TaskResult:
    rng = np.random.default_rng(seed)
    keep, options = [], []
    for i, events in enumerate(data.events):
        if events and all(e.attributes.get("motion") for e in events) and THEN.join(e.text for e in events) == data.captions[i]:
            cands = candidates(events, vocab, rng)
            if len(cands) == N_CANDIDATES:
                keep.append(i)
                options.append(cands)
    if not keep:
        raise ValueError("no clips with motion annotations for the world-prediction task")
    index = np.array(keep)
    query = training_query(model)
    visual = data.frames(index, [0, data.num_frames - 1])  # (b, 2*N/F, D): before and after
    predicted = predict(model, visual, [query] * len(index) if query else None)  # (b, S)
    texts = text_embeddings(model, [c for cands in options for c in cands]).view(len(keep), N_CANDIDATES, -1)
    choice = (texts @ predicted[:, :, None]).squeeze(-1).argmax(1)  # (b,)
    # The same protocol with all frames (an upper reference: the action is visible).
    full = predict(model, data.dataset().visual(index), [query] * len(index) if query else None)
    choice_full = (texts @ full[:, :, None]).squeeze(-1).argmax(1)
    return TaskResult(task="world_prediction",
                      metrics={"accuracy": float((choice == 0).float().mean()),
                               "accuracy_all_frames": float((choice_full == 0).float().mean())},
                      chance={"accuracy": 1 / N_CANDIDATES, "accuracy_all_frames": 1 / N_CANDIDATES},
                      n=len(keep), protocol=__doc__.split("\n\n", 1)[1].strip(),
                      details={"examples": [{"candidates": c, "chosen": int(k)} for c, k in zip(options[:8], choice[:8].tolist())]})
