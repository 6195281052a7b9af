"""Flow ``pretrain`` (deployments ``full``, ``image-only``): the main job, one task per stage (``flows.pipeline``).

The flow run gets a markdown artifact linking its MLflow run; the MLflow run carries the flow run
id as a tag.
"""

from __future__ import annotations

from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.pipeline import PipelineResult, format_report, run_pipeline
from flows.prefect_flows.tasks import as_task
from flows.resolve import Engine, Launcher, Preset, RunConfig, length_overrides


def result_markdown(result: PipelineResult) -> str:
    """The flow run's summary artifact: metrics, what was reused, and where the MLflow run is."""
    tracked = result.mlflow
    link = (f"[{tracked.run_id}]({tracked.ui_url})" if tracked.ui_url
            else f"`{tracked.run_id}` (local SQLite store: `mlflow ui --backend-store-uri <state>/mlflow/mlflow.db`)")
    lines = [f"# VL-JEPA pretrain ({result.preset})", "", f"MLflow run: {link}",
             f"Registered: `{tracked.model_uri}` (version {tracked.model_version})", "",
             "| metric | value | chance |", "|---|---|---|"]
    for key, value in result.metrics.items():
        chance = result.chance.get(key)
        lines.append(f"| test/{key} | {value:.4f} | {'' if chance is None else f'{chance:.4f}'} |")
    for key in ("captioning/cider", "vqa/accuracy", "world_prediction/accuracy"):
        if key in result.suite_metrics:
            lines.append(f"| eval/{key} | {result.suite_metrics[key]:.4f} | "
                         f"{result.suite_chance.get(key, float('nan')):.4f} |")
    lines += ["", f"Stages reused (content-addressed outputs found): {', '.join(result.reused_stages) or 'none'}",
              "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {name} | {seconds} |" for name, seconds in result.stage_seconds.items()]
    return "\n".join(lines)


@flow(name="pretrain", log_prints=True)
def pretrain(preset: Preset = "small", config_path: str | None = None, overrides: list[str] | None = None,
             n_videos: int | None = None, epochs: float | None = None, max_steps: int | None = None,
             launcher: Launcher = "local", engine: Engine = "local",
             phase: Literal["image", "video"] | None = None, state_dir: str | None = None,
             tracking_uri: str | None = None, data: str | None = None, annotations: str | None = None) -> dict:
    """Stage-1 pretraining of VL-JEPA on the embedded default (or another preset), end to end.

    Args:
        preset: named config (``vljepa config --preset NAME`` prints it); ``config_path`` replaces it.
        overrides: ``KEY=VALUE`` items, as ``vljepa run --set`` (e.g. ``train.lr=1e-4``).
        n_videos / epochs / max_steps: shortcuts for the corpus size and training length overrides.
        launcher: where training runs: ``local`` (a submitit subprocess), ``inline``, ``slurm``.
        engine: preprocessing engine: local threads or Ray Data (``RAY_ADDRESS`` for a cluster).
        phase: one stage-1 phase alone; default both, image then image + video.
        data: a dataset of your own instead of the generated corpus (``vljepa run --data``: a folder
            with a CSV / JSONL of annotations, video2dataset tars, an MSR-VTT-style JSON);
            ``annotations`` names its annotation file when the folder holds several.
    """
    run = RunConfig(preset=preset, config_path=config_path, launcher=launcher, engine=engine, phase=phase,
                    overrides=length_overrides(n_videos=n_videos, epochs=epochs, max_steps=max_steps)
                    + tuple(overrides or ()), state_dir=state_dir, tracking_uri=tracking_uri, progress=False,
                    data=data, annotations=annotations)
    result = run_pipeline(run, stage=as_task, flow_run_id=flow_run.get_id())
    create_markdown_artifact(key="pretrain-summary", markdown=result_markdown(result),
                             description="metrics and the MLflow run of this flow run")
    print(format_report(result))
    return result.to_dict()
