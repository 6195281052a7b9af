"""MLflow tracking and model registration for a pretraining run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from vljepa.config import VLJepaConfig



def flatten(prefix: str, value: Any, out: dict[str, str]) -> dict[str, str]:
    """Nested config -> ``{"train.lr": "0.0003", ...}`` for ``log_params``."""
    if isinstance(value, dict):
        for key, sub in value.items():
            flatten(f"{prefix}.{key}" if prefix else key, sub, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return out


def loss_curve_png(history: list[dict[str, float]], path: Path, title: str) -> Path:
    """Training loss (and lr) per step as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(len(history)))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [h["loss"] for h in history], color="tab:blue", label="InfoNCE loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [h["lr"] for h in history], color="tab:orange", alpha=0.6, label="lr")
    lr_ax.set_ylabel("learning rate")
    handles = ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def ensure_experiment(name: str, artifact_root: Path | None) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_root.as_uri() if artifact_root is not None else None
    return mlflow.create_experiment(name, artifact_location=location)


def log_and_register(*, tracking_uri: str, experiment: str, registered_model: str, run_name: str,
                     cfg: VLJepaConfig, history: list[dict[str, float]], evaluation: dict,
                     checkpoint_dir: str, extra_params: dict[str, Any], tags: dict[str, str],
                     artifact_root: Path | None, decoder_dir: str | None = None,
                     register: bool = True) -> dict[str, str]:
    """Log params, per-step and final metrics, the config and a loss curve; register the model
    as a new version of ``registered_model`` with alias ``candidate`` (once per run: see
    ``flows.registry``).

    decoder_dir: a trained y-decoder to ship inside the pyfunc (``decode=True`` then works).
    register: False logs the run only; ``flows.evaluate.run_evaluation`` then registers the
        model with its y-decoder into the same run.
    """
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from flows.mlflow_model import log_pyfunc_model
    from flows.registry import CANDIDATE_ALIAS, register_run_model

    from flows.tracking_store import use_tracking
    use_tracking(tracking_uri)
    # A local SQLite store has no server-side artifact root: keep artifacts beside the DB.
    experiment_id = ensure_experiment(experiment, artifact_root if tracking_uri.startswith("sqlite") else None)
    client = MlflowClient()
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags) as active:
        run_id = active.info.run_id
        params = flatten("", cfg.to_dict(), {})
        params.update({k: str(v) for k, v in extra_params.items()})
        mlflow.log_params(params)
        import time

        now = int(time.time() * 1000)
        metrics = [Metric(key=f"train/{name}", value=float(value), timestamp=now, step=step)
                   for step, row in enumerate(history) for name, value in row.items()]
        for start in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[start : start + 900])
        mlflow.log_metrics({f"test/{k}": v for k, v in evaluation["metrics"].items()})
        mlflow.log_metrics({f"chance/{k}": v for k, v in evaluation["chance"].items()})
        mlflow.log_dict(cfg.to_dict(), "config.json")
        mlflow.log_dict(evaluation, "evaluation.json")
        with tempfile.TemporaryDirectory() as tmp:
            png = loss_curve_png(history, Path(tmp) / "loss_curve.png", f"VL-JEPA {cfg.preset}: pretraining loss")
            mlflow.log_artifact(str(png))
        out = {"run_id": run_id, "experiment_id": experiment_id}
        if register:
            registration = register_run_model(
                client, name=registered_model, run_id=run_id,
                kind="embedding+decoder" if decoder_dir else "embedding",
                log_model=lambda: log_pyfunc_model(checkpoint_dir, decoder_dir))
            out.update(model_version=registration.version, model_uri=f"models:/{registered_model}@{CANDIDATE_ALIAS}")
    return out
