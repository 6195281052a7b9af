"""MLflow registration: once per run, ``candidate`` alias, champion only when better, and the
registered pyfunc served from ``models:/vljepa@champion`` in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flows.registry import CANDIDATE_ALIAS, CHAMPION_ALIAS, promote_if_better, register_run_model

ROOT = Path(__file__).resolve().parents[1]


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def _log_constant() -> str:
    return mlflow.pyfunc.log_model(name="m", python_model=_Constant()).model_uri


@pytest.fixture
def client(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.create_experiment("reg", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment("reg")
    yield MlflowClient()
    mlflow.set_tracking_uri(None)


def _run_with(metric: float) -> str:
    with mlflow.start_run() as run:
        mlflow.log_metric("eval/retrieval/t2v_r1", metric)
    return run.info.run_id


def test_registration_is_idempotent_per_run_and_kind(client):
    run_id = _run_with(0.5)
    calls = []

    def log():
        calls.append(1)
        return _log_constant()

    first = register_run_model(client, name="m", run_id=run_id, kind="embedding", log_model=log)
    again = register_run_model(client, name="m", run_id=run_id, kind="embedding", log_model=log)
    assert first.created and not again.created and first.version == again.version
    assert len(calls) == 1  # the model is not even logged twice
    assert len(client.search_model_versions("name = 'm'")) == 1
    assert str(client.get_model_version_by_alias("m", CANDIDATE_ALIAS).version) == first.version
    other = register_run_model(client, name="m", run_id=run_id, kind="embedding+decoder", log_model=_log_constant)
    assert other.created and other.version != first.version


def test_champion_moves_only_to_a_better_run(client):
    versions = {}
    for value in (0.5, 0.4, 0.7):
        run_id = _run_with(value)
        versions[value] = register_run_model(client, name="m", run_id=run_id, kind="e", log_model=_log_constant).version
        promote_if_better(client, name="m", version=versions[value], metric="eval/retrieval/t2v_r1")
        if value == 0.4:
            assert str(client.get_model_version_by_alias("m", CHAMPION_ALIAS).version) == versions[0.5]
            assert str(client.get_model_version_by_alias("m", CANDIDATE_ALIAS).version) == versions[0.4]
    assert str(client.get_model_version_by_alias("m", CHAMPION_ALIAS).version) == versions[0.7]
    lower = promote_if_better(client, name="m", version=versions[0.4], metric="eval/retrieval/t2v_r1",
                              greater_is_better=False)
    assert lower.promoted  # with "lower is better" the 0.4 run wins
    with pytest.raises(KeyError, match="no metric"):
        promote_if_better(client, name="m", version=versions[0.7], metric="eval/missing")


def test_evaluation_registers_once_and_the_champion_serves_in_a_fresh_process():
    from flows.evaluate import run_evaluation
    from tests.tiny_run import tiny_evaluation, tiny_run

    summary = tiny_evaluation()
    run = tiny_run()
    assert summary["mlflow"]["created"] and summary["mlflow"]["promoted"]
    again = run_evaluation(run["checkpoint_dir"], run["db_path"], run["test_cache"], run["corpus_dir"], run["run_id"],
                           tracking_uri=run["tracking_uri"], out_dir=run["state"] / "eval", train_cache=run["train_cache"])
    assert again["mlflow"]["version"] == summary["mlflow"]["version"] and not again["mlflow"]["created"]
    assert again["decoder"]["reused"]

    mlflow.set_tracking_uri(run["tracking_uri"])
    client = MlflowClient()
    logged = client.get_run(run["run_id"])
    assert logged.data.metrics["eval/retrieval/t2v_r1"] == pytest.approx(summary["metrics"]["retrieval/t2v_r1"])
    assert "eval_chance/world_prediction/accuracy" in logged.data.metrics
    plots = {a.path for a in client.list_artifacts(run["run_id"], "evaluation/plots")}
    assert {"evaluation/plots/confusion_matrix.png", "evaluation/plots/embedding_map.png",
            "evaluation/plots/retrieval_ranks.png", "evaluation/plots/decoded_examples.png"} <= plots

    from preprocessing.shards import read_cache

    tokens = read_cache(run["test_cache"]).tokens[:2].reshape(2, -1).astype("float32")
    script = f"""
import json, sys
import mlflow, numpy as np, pandas as pd
mlflow.set_tracking_uri({run['tracking_uri']!r})
model = mlflow.pyfunc.load_model("models:/vljepa@champion")
tokens = np.load(sys.argv[1])
out = model.predict(pd.DataFrame({{"tokens": [list(map(float, t)) for t in tokens], "query": ["", ""]}}),
                    params={{"decode": True, "num_beams": 2}})
text = model.predict(pd.DataFrame({{"text": ["a small red circle moves left"]}}))
print(json.dumps({{"embedding": [list(map(float, e)) for e in out["embedding"]], "text": list(out["text"]),
                  "text_norm": float((np.asarray(text["embedding"][0]) ** 2).sum()),
                  "inputs": [c.name for c in model.metadata.get_input_schema().inputs]}}))
"""
    path = run["state"] / "tokens.npy"
    import numpy as np

    np.save(path, tokens)
    proc = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    assert served["text_norm"] == pytest.approx(1.0, abs=1e-4)
    assert {"video", "tokens", "text", "query"} == set(served["inputs"])

    import torch

    from vljepa.checkpoint import load_checkpoint

    model = load_checkpoint(run["checkpoint_dir"])
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.predict(torch.from_numpy(tokens.reshape(2, -1, model.predictor.visual_proj.in_features))), dim=-1)
    assert np.allclose(np.asarray(served["embedding"]), expected.numpy(), atol=1e-4)
    # The served captions are the evaluation's own y-decoder (beam 2) on the in-process predictions.
    from vljepa.decoder import load_decoder

    decoder = load_decoder(run["state"] / "eval" / "decoder")
    assert served["text"] == decoder.generate(expected, num_beams=2)
    assert len(served["text"]) == 2 and all(served["text"])

    # The environment a server builds for it names what loading imports, at the versions that logged it.
    from importlib.metadata import version

    pins = Path(mlflow.pyfunc.get_model_dependencies("models:/vljepa@champion")).read_text().split()
    assert {"torch==" + version("torch").split("+")[0], "transformers==" + version("transformers"),
            "vljepa-pipeline==" + version("vljepa-pipeline"), "mlflow==" + version("mlflow")} <= set(pins), pins


def test_a_model_evaluated_on_another_test_set_moves_no_alias(client):
    """A tiny model scoring 1.0 on its own 4-clip test split beside a small model: it is
    registered, but neither ``candidate`` nor ``champion`` leaves the small model; a better small
    model on the small model's test set still takes both."""
    def register(metric: float, eval_key: str):
        run_id = _run_with(metric)
        registration = register_run_model(client, name="m", run_id=run_id, kind="embedding", log_model=_log_constant,
                                          eval_key=eval_key)
        return registration, promote_if_better(client, name="m", version=registration.version,
                                               metric="eval/retrieval/t2v_r1")

    def aliases() -> tuple[str, str]:
        return tuple(str(client.get_model_version_by_alias("m", a).version) for a in (CANDIDATE_ALIAS, CHAMPION_ALIAS))

    small, promoted = register(0.58, "small-test-key")
    assert small.candidate and promoted.promoted and aliases() == (small.version, small.version)
    tiny, promoted = register(1.0, "tiny-test-key")
    assert tiny.created and not tiny.candidate and "another test set" in tiny.note
    assert not promoted.promoted and promoted.reason.startswith("not compared") and "another test set" in promoted.reason
    assert aliases() == (small.version, small.version)
    assert client.get_model_version("m", tiny.version).tags["vljepa.eval_key"] == "tiny-test-key"
    better, promoted = register(0.61, "small-test-key")
    assert better.candidate and promoted.promoted and aliases() == (better.version, better.version)


def test_champion_through_the_evaluation_path_moves_for_better_not_for_tied_or_worse(tmp_path):
    """Four evaluations of real checkpoints on one test set, each in its own MLflow run: a degraded
    copy of the tiny model first (champion: none yet), then the trained model (better: promoted), the
    trained model again (tied: stays), the degraded one again (worse: stays). The log line says which
    version and aliases moved, with both values."""
    import torch

    from flows.evaluate import EvalConfig, run_evaluation
    from tests.tiny_run import tiny_run
    from vljepa.checkpoint import load_checkpoint, save_checkpoint

    run = tiny_run()
    degraded = load_checkpoint(run["checkpoint_dir"])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in degraded.predictor.parameters():
            p.add_(torch.randn_like(p) * 2.0)
    save_checkpoint(degraded, tmp_path / "degraded")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("ranked", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg = EvalConfig(tasks=("retrieval",), decoder_steps=2, registered_model="ranked", decoder_train="text")
    logs, values = [], []
    for n, checkpoint in enumerate([tmp_path / "degraded", run["checkpoint_dir"], run["checkpoint_dir"],
                                    tmp_path / "degraded"]):
        with mlflow.start_run(experiment_id=experiment) as mlflow_run:
            pass
        summary = run_evaluation(checkpoint, run["db_path"], run["test_cache"], run["corpus_dir"],
                                 mlflow_run.info.run_id, tracking_uri=uri, out_dir=tmp_path / f"eval{n}", cfg=cfg)
        logs.append(summary["mlflow"]["registry_log"])
        values.append(summary["metrics"]["retrieval/t2v_r1"])
    low, high = values[0], values[1]
    assert low < high and values == [low, high, high, low], values  # the premise: noise made it worse
    metric = "eval/retrieval/t2v_r1"
    assert logs == [
        "registered ranked version 1; candidate -> 1; champion -> 1 (no champion yet)",
        f"registered ranked version 2; candidate -> 2; champion -> 2 ({metric} {high:.4f} beats the champion's "
        f"{low:.4f})",
        f"registered ranked version 3; candidate -> 3; champion stays at version 2 ({metric} {high:.4f} ties the "
        f"champion's {high:.4f})",
        f"registered ranked version 4; candidate -> 4; champion stays at version 2 ({metric} {low:.4f} is worse "
        f"than the champion's {high:.4f})"]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("ranked", CHAMPION_ALIAS).version) == "2"
    assert str(client.get_model_version_by_alias("ranked", CANDIDATE_ALIAS).version) == "4"
    mlflow.set_tracking_uri(None)
