"""Flow ``evaluate`` (deployment ``full``): every task of the paper on a checkpoint (``flows.evaluate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.evaluate import EvalConfig, run_evaluation


@flow(name="evaluate", log_prints=True)
def evaluate(checkpoint_dir: str, db_path: str, test_cache: str, corpus_dir: str, run_id: str | None = None,
             val_cache: str | None = None, tracking_uri: str | None = None, out_dir: str | None = None,
             register: bool = True, train_cache: str | None = None,
             decoder_train: Literal["text+predicted", "text"] = "text+predicted") -> dict:
    """Every task of the paper on a checkpoint; logs into the training run and registers the model.

    The y-decoder trains on the texts and the predictor's outputs for ``train_cache``'s clips (the
    train split's token cache; required unless ``decoder_train`` is "text").
    """
    step = task(run_evaluation, name="run_evaluation", retries=0, cache_policy=NO_CACHE)
    summary = step(checkpoint_dir, db_path, test_cache, corpus_dir, run_id, val_cache=val_cache,
                   tracking_uri=tracking_uri, out_dir=out_dir, train_cache=train_cache,
                   cfg=EvalConfig(register=register, decoder_train=decoder_train))
    print((Path(summary["out_dir"]) / "summary.md").read_text())
    return summary
