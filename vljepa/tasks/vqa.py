"""VQA by candidate answers (paper Sec. 4.2): the question is the predictor's query; the
candidate answer whose y-encoder embedding is nearest the prediction wins. Also decodes the
prediction with the y-decoder and reports exact-match accuracy of the decoded answer.

Candidates of a question: every answer given in the split to questions of the same kind (the
first two words: "what colour", "how many", ...), so chance is 1 / #candidates per question.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from vljepa.evaluate import text_embeddings
from vljepa.tasks.common import TaskData, TaskResult, predict
from vljepa.tasks.scoring import normalise


def question_kind(question: str) -> str:
    return " ".join(normalise(question).split()[:2])


def run(model, data: TaskData, decoder=None, *, max_questions: int | None = None) -> TaskResult:
    rows = [(i, q, a) for i, pairs in enumerate(data.qa) for q, a in pairs]
    if max_questions is not None:
        rows = rows[:max_questions]
    if not rows:
        raise ValueError("the split has no VQA pairs")
    answers_of_kind: dict[str, set[str]] = defaultdict(set)
    for _, q, a in rows:
        answers_of_kind[question_kind(q)].add(a)
    candidates = {kind: sorted(answers) for kind, answers in answers_of_kind.items()}
    answer_set = sorted({a for v in candidates.values() for a in v})
    answers = text_embeddings(model, answer_set)  # (A, D)
    index = np.array([i for i, _, _ in rows])
    predicted = predict(model, data.dataset().visual(index), [q for _, q, _ in rows])  # (Q, D)
    correct, chance, per_kind = [], [], defaultdict(list)
    for row, (_, q, a) in enumerate(rows):
        kind = question_kind(q)
        cand = candidates[kind]
        scores = predicted[row] @ answers[[answer_set.index(c) for c in cand]].T
        ok = cand[int(scores.argmax())] == a
        correct.append(ok)
        chance.append(1 / len(cand))
        per_kind[kind].append(ok)
    metrics = {"accuracy": float(np.mean(correct))}
    chances = {"accuracy": float(np.mean(chance))}
    for kind, oks in per_kind.items():
        key = "acc_" + kind.replace(" ", "_")
        metrics[key] = float(np.mean(oks))
        chances[key] = 1 / len(candidates[kind])
    details: dict = {"candidates": candidates}
    if decoder is not None:
        from vljepa.decoder import decode_embeddings

        decoded = decode_embeddings(decoder, predicted, num_beams=1)
        metrics["decoded_exact_match"] = float(np.mean([normalise(d) == normalise(a) for d, (_, _, a) in zip(decoded, rows)]))
        chances["decoded_exact_match"] = chances["accuracy"]
        details["examples"] = [{"question": q, "answer": a, "decoded": d} for (_, q, a), d in zip(rows[:12], decoded[:12])]
    return TaskResult(task="vqa", metrics=metrics, chance=chances, n=len(rows),
                      protocol="Question as predictor query; nearest candidate answer (same question kind) by "
                               "cosine similarity of y-encoder embeddings. Decoded: y-decoder greedy, exact match.",
                      details=details)



