"""WorldPrediction-WM-style inverse dynamics (submission Sec. 4.6, final version Sec. 4.3).

Two images, the initial and the final state of a clip (its first and last sampled frames), and
four candidate video clips: the clip itself and 3 other clips of the split whose motion sequence
differs; pick the clip whose action explains the transition. As in the paper, each state image
is duplicated (so it fills one V-JEPA 2 tubelet; for per-frame x-encoders, two copies of the
frame's tokens) and the two are concatenated, [first, first, last, last]; the predictor turns
that into the state embedding. Each candidate clip's full visual tokens give its action
embedding (the same query, the training one). The candidate whose action embedding has the
highest cosine similarity to the state embedding is chosen. Chance: 1/4. Reference
(``motion_caption_accuracy``): the same state embedding against the y-encoder embeddings of the
clip's caption and 3 captions with every event's motion replaced (same objects, other actions).
"""

from __future__ import annotations

import numpy as np
import torch

from vljepa.evaluate import text_embeddings
from vljepa.tasks.common import Event, TaskData, TaskResult, frames_per_token_group, predict, training_query
from vljepa.tasks.hard_negatives import THEN, Vocabulary, replace_word

N_CANDIDATES = 4
STATE_COPIES = 2  # paper: "we duplicate and concatenate the initial and final state images"


# ---------------------------------------------------------------------------------------------
# The state input: [first, first, last, last]


def state_copies(tubelet_size: int) -> int:
    """Copies of each state image: duplicated, rounded up to whole tubelets (2 for 1- or 2-frame groups)."""
    return tubelet_size * -(-STATE_COPIES // tubelet_size)


def state_pixels(frames: torch.Tensor, tubelet_size: int) -> torch.Tensor:
    """A clip's state input for the x-encoder: frames ``(T, 3, H, W)`` -> ``(2c, 3, H, W)``,
    the first frame ``c`` times then the last ``c`` times (``c = state_copies(tubelet_size)``)."""
    copies = state_copies(tubelet_size)
    return torch.cat([frames[:1].expand(copies, -1, -1, -1), frames[-1:].expand(copies, -1, -1, -1)])


def state_tokens(data: TaskData, index: np.ndarray) -> torch.Tensor:
    """Float32 state tokens ``(b, N_state, D)`` of the samples ``index``.

    ``data.state_tokens`` where given (encoded from decoded frames); otherwise, for per-frame
    tokens, the cached tokens of frames [0, 0, F-1, F-1] (a duplicated frame encodes to the same
    tokens). Tubelet tokens without ``state_tokens`` are an error: they cannot be split by frame.
    """
    index = np.asarray(index)
    if data.state_tokens is not None:
        return torch.from_numpy(data.state_tokens[index].astype(np.float32))
    _require_state_input(data)
    copies = state_copies(1)
    return data.frames(index, [0] * copies + [data.num_frames - 1] * copies)


def _require_state_input(data: TaskData) -> None:
    if data.state_tokens is None and data.tubelet_size > 1:
        raise ValueError(f"world prediction needs state tokens for a {data.tubelet_size}-frame tubelet x-encoder: its "
                         "cached tokens mix frames, so the first and last frames cannot be cut out of them. Encode "
                         "them with flows.loaders.load_state_tokens and pass TaskData(state_tokens=...)")


# ---------------------------------------------------------------------------------------------
# Candidates


def motion_sequence(events: list[Event]) -> tuple[str, ...] | None:
    """The clip's action: its events' motions in order (None where an event has no motion)."""
    motions = tuple(e.attributes.get("motion") or "" for e in events)
    return motions if motions and all(motions) else None


def clip_candidates(events: list[list[Event]], rng: np.random.Generator) -> dict[int, list[int]]:
    """For every clip that can be asked: ``N_CANDIDATES`` clip indices in random order, the clip
    itself among them, the others drawn from the clips whose motion sequence differs from its own."""
    action = {i: m for i, m in enumerate(motion_sequence(ev) for ev in events) if m is not None}
    out = {}
    for i in action:  # in clip order
        pool = [j for j in action if action[j] != action[i]]
        if len(pool) < N_CANDIDATES - 1:
            continue
        candidates = [i, *rng.choice(pool, N_CANDIDATES - 1, replace=False).tolist()]
        rng.shuffle(candidates)  # the true clip's position is random: a tie cannot favour it
        out[i] = candidates
    return out


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


def caption_candidates(events: list[Event], vocab: Vocabulary, rng: np.random.Generator) -> list[str]:
    """The reference's texts: the true caption first, then up to ``N_CANDIDATES - 1`` distinct
    captions with every event's motion replaced by another one."""
    truth = THEN.join(e.text for e in events)
    out, tries = [truth], 0
    while len(out) < N_CANDIDATES and tries < 100:
        tries += 1
        alt = THEN.join(with_motion(e, str(rng.choice([m for m in vocab.motions if m != e.attributes["motion"]])))
                        for e in events)
        if alt not in out:
            out.append(alt)
    return out


def motion_caption_accuracy(model, data: TaskData, index: np.ndarray, state: torch.Tensor, vocab: Vocabulary,
                            rng: np.random.Generator) -> tuple[float, int]:
    """The reference: how often the state embeddings ``(b, S)`` of clips ``index`` are closest to the
    clip's own caption among ``caption_candidates``. Returns (accuracy, questions asked)."""
    rows, texts = [], []
    for k, i in enumerate(index.tolist()):
        try:
            cands = caption_candidates(data.events[i], vocab, rng)
        except ValueError:  # an event caption that does not name its motion: no reference question
            continue
        if len(cands) == N_CANDIDATES:
            rows.append(k)
            texts += cands
    if not rows:
        return float("nan"), 0
    target = text_embeddings(model, texts).view(len(rows), N_CANDIDATES, -1)  # (r, 4, S)
    chosen = (target @ state[rows][:, :, None]).squeeze(-1).argmax(1)  # (r,) 0 = the true caption
    return float((chosen == 0).float().mean()), len(rows)


# ---------------------------------------------------------------------------------------------
# The task


def run(model, data: TaskData, vocab: Vocabulary, *, seed: int = 0) -> TaskResult:
    """Accuracy of choosing, from the state embedding, the candidate clip whose action it is.

    Args:
        model: a VL-JEPA model (``predict``; ``cfg.x_encoder`` says the token layout).
        data: the split (``state_tokens`` required for tubelet x-encoders).
        vocab: the corpus's motions, for the caption reference.
    """
    tubelet = frames_per_token_group(model.cfg.x_encoder)
    if data.tubelet_size != tubelet:
        raise ValueError(f"task data built for {data.tubelet_size}-frame token groups, but the model's x-encoder "
                         f"{model.cfg.x_encoder.name!r} makes {tubelet}-frame groups")
    _require_state_input(data)
    protocol = __doc__.split("\n\n", 1)[1].strip()
    options = clip_candidates(data.events, np.random.default_rng([seed, 0]))
    if not options:
        n_annotated = sum(motion_sequence(ev) is not None for ev in data.events)
        if not n_annotated:
            raise ValueError("no clips with motion annotations for the world-prediction task")
        # A split too small to ask anything (the tiny preset's 2 test clips): recorded, not a crash.
        nan = float("nan")
        return TaskResult(task="world_prediction", metrics={"accuracy": nan, "motion_caption_accuracy": nan},
                          chance={"accuracy": 1 / N_CANDIDATES, "motion_caption_accuracy": 1 / N_CANDIDATES},
                          n=0, protocol=protocol,
                          details={"skipped": f"none of the {n_annotated} clips with motion annotations has "
                                              f"{N_CANDIDATES - 1} other clips of a different motion sequence"})
    index = np.array(sorted(options))  # (b,) the asked clips
    candidates = np.array([options[i] for i in index])  # (b, 4) clip indices
    truth = (candidates == index[:, None]).argmax(1)  # (b,) the true clip's position
    query = training_query(model)
    state = predict(model, state_tokens(data, index), [query] * len(index) if query else None)  # (b, S)
    clips, position = np.unique(candidates, return_inverse=True)  # each candidate clip is predicted once
    action = predict(model, data.dataset().visual(clips), [query] * len(clips) if query else None)  # (c, S)
    action = action[torch.from_numpy(position.reshape(candidates.shape))]  # (b, 4, S)
    similarity = (action @ state[:, :, None]).squeeze(-1)  # (b, 4) cosines: both are unit-norm
    choice = similarity.argmax(1)  # (b,)
    metrics = {"accuracy": float((choice.numpy() == truth).mean())}

    reference, n_reference = motion_caption_accuracy(model, data, index, state, vocab, np.random.default_rng([seed, 1]))
    if n_reference:
        metrics["motion_caption_accuracy"] = reference
    return TaskResult(task="world_prediction", metrics=metrics, chance={k: 1 / N_CANDIDATES for k in metrics},
                      n=len(index), protocol=protocol,
                      details={"n_motion_caption": n_reference,
                               "examples": [{"clip": data.sample_ids[i],
                                             "candidates": [data.sample_ids[c] for c in cands],
                                             "truth": int(t), "chosen": int(k)}
                                            for i, cands, t, k in zip(index[:8].tolist(), candidates[:8].tolist(),
                                                                      truth[:8].tolist(), choice[:8].tolist())]})
