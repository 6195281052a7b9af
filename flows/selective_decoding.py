"""Prefect flow ``selective-decoding`` (deployment ``sweep``): the decode-rate vs CIDEr sweep for a
registered model, logged into that model's MLflow training run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.selective import SelectiveConfig, run_selective
from flows.stages import REPO_ROOT


def resolve_model(registered_model: str, alias: str, tracking_uri: str):
    """The VLJepa module behind ``models:/NAME@ALIAS`` and the MLflow run that produced it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    version = MlflowClient().get_model_version_by_alias(registered_model, alias)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{registered_model}@{alias}").unwrap_python_model()
    return pyfunc.model, getattr(pyfunc, "decoder", None), version.run_id, str(version.version)


class YDecoderCallable:
    """The y-decoder as the sweep's ``decode``: (K, D) embeddings → K texts (greedy)."""

    def __init__(self, decoder, batch_size: int = 64) -> None:
        self.decoder, self.batch_size = decoder, batch_size

    def __call__(self, embeddings):
        import torch

        out = []
        for i in range(0, len(embeddings), self.batch_size):
            batch = torch.as_tensor(embeddings[i : i + self.batch_size], dtype=torch.float32)
            out += self.decoder.generate(batch, num_beams=1)
        return out


def sweep_registered_model(registered_model: str = "vljepa", alias: str = "candidate", state_dir: str | None = None,
                           tracking_uri: str | None = None, max_clips: int | None = None, split: str = "test") -> dict:
    """Run the sweep on the test streams for a registered model and log it to its run."""
    import mlflow

    from flows.stream_cli import caption_bank
    from vljepa.encoders import build_x_encoder

    state = Path(state_dir or os.environ.get("VLJEPA_STATE_DIR") or REPO_ROOT / ".vljepa")
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state}/mlflow/mlflow.db"
    model, decoder, run_id, version = resolve_model(registered_model, alias, tracking_uri)
    db = state / "manifest.duckdb"
    cfg = SelectiveConfig(max_clips=max_clips, split=split)
    with tempfile.TemporaryDirectory() as tmp:
        result = run_selective(model, build_x_encoder(model.cfg.x_encoder), db, caption_bank(db), cfg, Path(tmp),
                               decoder=YDecoderCallable(decoder) if decoder is not None else None)
        with mlflow.start_run(run_id=run_id):
            for method, factor in result["savings_vs_uniform_1hz"].items():
                if factor is not None:
                    mlflow.log_metric(f"selective/savings_{method}", factor)
            mlflow.log_metric("selective/compute_per_window_over_stride", result["compute_per_window_over_stride"])
            if result["online_mean_latency_windows"] is not None:
                mlflow.log_metric("selective/online_mean_latency_windows", result["online_mean_latency_windows"])
            for name in ("pareto.png", "selective_decoding.md", "selective_decoding.json"):
                mlflow.log_artifact(str(Path(tmp) / name), artifact_path="selective_decoding")
    result["model"] = f"models:/{registered_model}@{alias} (version {version}, run {run_id})"
    return result


@flow(name="selective-decoding", log_prints=True)
def selective_decoding(registered_model: str = "vljepa", alias: str = "candidate", state_dir: str | None = None,
                       max_clips: int | None = None, split: str = "test") -> dict:
    """Uniform vs Ward vs online selective decoding on the corpus's multi-event test streams."""
    from flows.selective import format_table

    run = task(sweep_registered_model, name="sweep", retries=1, cache_policy=NO_CACHE)
    result = run(registered_model, alias, state_dir, None, max_clips, split)
    print(result["model"])
    print(format_table(result))
    return result


def deploy_selective_decoding(work_pool: str = "local-pool") -> str:
    selective_decoding.from_source(source=str(REPO_ROOT), entrypoint="flows/selective_decoding.py:selective_decoding").deploy(
        name="sweep", work_pool_name=work_pool, print_next_steps=False,
        description="Decode-rate vs CIDEr Pareto (uniform, Ward, online) for models:/vljepa@candidate.")
    return "selective-decoding/sweep"
