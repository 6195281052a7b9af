"""One tiny-preset pipeline run + evaluation shared by the evaluation tests (once per process).

The evaluation tests need a checkpoint, a manifest, token caches and an MLflow run; building
them takes ~20 s on the tiny preset, so every test module re-uses the same one.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path


@functools.cache
def tiny_run() -> dict:
    """The pipeline's stages inline in a temp state dir; returns paths and the MLflow run id."""
    from flows.data import prepare_data
    from flows.env import StateLayout
    from flows.job import run_training
    from flows.pipeline import evaluate_checkpoint
    from flows.tracking import log_and_register
    from flows.user_data import generated_data
    from vljepa.config import get_preset

    cfg = get_preset("tiny")
    state = Path(tempfile.mkdtemp(prefix="vljepa-eval-tests-"))
    data = prepare_data(cfg, StateLayout.resolve(state), progress=False)
    db_path, corpus_dir = data.db_path, data.corpus_dir
    caches = {s: c.path for s, c in data.caches.items()}
    summary = run_training(cfg.to_json(), data.spec(), str(state / "checkpoint"), progress=False)
    evaluation = vars(evaluate_checkpoint(summary.checkpoint_dir, db_path, caches["test"],
                                           generated_data(corpus_dir, data.counts, None)))
    tracking_uri = f"sqlite:///{state}/mlflow.db"
    tracked = log_and_register(tracking_uri=tracking_uri, experiment="vljepa-tests", registered_model="vljepa",
                               run_name="tiny", cfg=cfg, history=summary.history, evaluation=evaluation,
                               checkpoint_dir=summary.checkpoint_dir, extra_params={}, tags={},
                               artifact_root=state / "artifacts")
    return {"state": state, "db_path": db_path, "corpus_dir": corpus_dir, "test_cache": caches["test"],
            "train_cache": caches["train"], "checkpoint_dir": summary.checkpoint_dir,
            "tracking_uri": tracking_uri, "run_id": tracked["run_id"]}


@functools.cache
def tiny_evaluation() -> dict:
    """``run_evaluation`` on the tiny run, logged into its MLflow run (registers + promotes)."""
    from flows.evaluate import run_evaluation

    run = tiny_run()
    return run_evaluation(run["checkpoint_dir"], run["db_path"], run["test_cache"], run["corpus_dir"], run["run_id"],
                          tracking_uri=run["tracking_uri"], out_dir=run["state"] / "eval", train_cache=run["train_cache"])
