"""The latest pretraining run's metrics from MLflow and where to look (UI URLs): ``vljepa report``."""

from __future__ import annotations


def latest_run_report(tracking_uri: str, experiment: str = "vljepa-pretrain", *, prefect_ui: str | None = None) -> str:
    import mlflow
    from mlflow.tracking import MlflowClient

    from flows.tracking_store import use_tracking
    use_tracking(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {tracking_uri}: has pretrain/full run?")
    runs = MlflowClient().search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise LookupError(f"experiment {experiment!r} has no runs yet")
    run = runs[0]
    m = run.data.metrics
    lines = [f"Latest run: {run.info.run_name} ({run.info.run_id}), status {run.info.status}",
             f"  preset {run.data.params.get('preset')}, mix {run.data.params.get('data.mix')} of "
             f"{run.data.params.get('data.n_train')} samples, "
             f"{run.data.params.get('train.steps_run')} steps in {run.data.params.get('train.seconds')} s"]
    drawn = {k.removeprefix("data.drawn."): v for k, v in run.data.params.items() if k.startswith("data.drawn.")}
    if drawn:
        lines.append("  drawn in the last phase: " + ", ".join(f"{k} {v}" for k, v in sorted(drawn.items())))
    for key in ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "cls_top1", "cls_top5"):
        if f"test/{key}" in m:
            chance = m.get(f"chance/{key}")
            extra = f"   (chance {chance:.4f}, {m[f'test/{key}'] / chance:.1f}× chance)" if chance else ""
            lines.append(f"  test/{key:<9} {m[f'test/{key}']:.4f}{extra}")
    for key in ("captioning/cider", "vqa/accuracy", "world_prediction/accuracy", "hard_negatives/video_accuracy"):
        if f"eval/{key}" in m:
            chance = m.get(f"eval_chance/{key}")
            extra = f"   (chance {chance:.4f})" if chance is not None else ""
            lines.append(f"  eval/{key:<28} {m[f'eval/{key}']:.4f}{extra}")
    for alias in ("candidate", "champion"):
        try:
            version = MlflowClient().get_model_version_by_alias("vljepa", alias)
            lines.append(f"  models:/vljepa@{alias} = version {version.version} (run {version.run_id[:8]})")
        except Exception:  # noqa: BLE001 - alias not set yet
            pass
    if tracking_uri.startswith("http"):
        lines.append(f"MLflow UI:  {tracking_uri}/#/experiments/{exp.experiment_id}/runs/{run.info.run_id}")
    if prefect_ui:
        lines.append(f"Prefect UI: {prefect_ui}/runs")
    return "\n".join(lines)
