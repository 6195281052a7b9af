"""Caption metrics with pycocoevalcap's own scorers (BLEU-4, CIDEr, ROUGE-L).

pycocoevalcap's ``PTBTokenizer`` runs Stanford CoreNLP (Java), which this stack does not have;
``normalise`` does the part of it that matters for our text (lower case, punctuation removed,
whitespace split) and the scorers' ``compute_score`` is called directly. CIDEr here is CIDEr-D
as pycocoevalcap computes it, with document frequencies from the evaluated references.
"""

from __future__ import annotations

import re

_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise(text: str) -> str:
    """Lower case, punctuation stripped, single spaces (PTBTokenizer's effect on our captions)."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def caption_scores(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus-level BLEU-1..4, CIDEr and ROUGE-L of ``predictions`` against ``references``."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference sets")
    # An empty hypothesis breaks BLEU's and ROUGE's assertions; score it as one unknown word.
    res = {i: [normalise(p) or "<empty>"] for i, p in enumerate(predictions)}
    gts = {i: [normalise(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"bleu1": float(bleu[0]), "bleu4": float(bleu[3]), "cider": float(cider), "rouge_l": float(rouge)}
