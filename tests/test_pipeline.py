"""A short end-to-end run of the pretraining slice on the tiny preset, and its idempotence."""

import json

import pytest

from flows.pipeline import format_report, run_pipeline
from flows.stages import RunConfig


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    run = RunConfig(preset="tiny", launcher="inline", state_dir=str(state),
                    tracking_uri=f"sqlite:///{state}/mlflow.db", progress=False)
    return run, run_pipeline(run)


def test_slice_produces_metrics_checkpoint_and_registered_model(first_run):
    run, result = first_run
    for key in ("t2v_r1", "t2v_r5", "v2t_r1", "cls_top1", "cls_top5"):
        assert 0.0 <= result["metrics"][key] <= 1.0
    assert result["n_train"] > 0 and result["n_test"] > 0
    assert result["train_steps"] >= 1 and result["final_loss"] > 0
    assert "t2v_r1" in format_report(result)

    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(run.resolved_tracking_uri())
    client = MlflowClient()
    version = client.get_model_version_by_alias("vljepa", "candidate")
    assert str(version.version) == result["mlflow"]["model_version"]
    logged = client.get_run(result["mlflow"]["run_id"])
    assert logged.data.metrics["test/t2v_r1"] == pytest.approx(result["metrics"]["t2v_r1"])
    assert logged.data.params["preset"] == "tiny"
    history = client.get_metric_history(result["mlflow"]["run_id"], "train/loss")
    assert len(history) == result["train_steps"]
    artifacts = {a.path for a in client.list_artifacts(result["mlflow"]["run_id"])}
    assert {"loss_curve.png", "config.json", "evaluation.json"} <= artifacts

    # The registered pyfunc loads and embeds text, unit-normalised.
    model = mlflow.pyfunc.load_model("models:/vljepa@candidate")
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": ["a small red circle moves left", "two blue squares"]}))
    assert len(out) == 2 and abs(float((out["embedding"][0] ** 2).sum()) - 1.0) < 1e-4


def test_rerun_reuses_corpus_and_token_caches(first_run):
    run, result = first_run
    again = run_pipeline(run)
    assert sorted(again["reused_caches"]) == ["test", "train"]
    assert again["mlflow"]["model_version"] != result["mlflow"]["model_version"]


def test_submitit_local_launcher_trains_in_a_subprocess(first_run, tmp_path):
    import os

    from flows.stages import launch_training

    run, _ = first_run
    local = RunConfig(**{**run.__dict__, "launcher": "local"})
    cfg = local.model_config()
    state = local.state_path()
    caches = sorted((state / "cache" / "tokens").rglob("*.parquet"))
    from preprocessing.cache import read_token_cache

    train_cache = max(caches, key=lambda p: len(read_token_cache(p).sample_ids))
    summary = launch_training(cfg, local, state / "manifest.duckdb", str(train_cache), tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["preset"] == "tiny"
    assert summary.steps >= 1
    job_dirs = list((state / "submitit").iterdir())
    assert job_dirs, "submitit wrote no job folder"
    assert os.getpid() not in {int(p.name) for p in job_dirs if p.name.isdigit()}
