"""Flow ``compare`` (deployment ``vlm-vs-jepa``): VL-JEPA vs a token VLM trained alike (``flows.compare``,
paper §4.2, Fig. 3). Its steps become tasks; the flow run gets a markdown artifact with the table."""

from __future__ import annotations

import dataclasses
from typing import Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.compare import run_compare
from flows.prefect_flows.tasks import as_task
from flows.resolve import Launcher, Preset, RunConfig, length_overrides


@flow(name="compare", log_prints=True)
def compare(preset: Preset = "small", points: int = 5, seeds: list[int] | None = None,
            vlm_layers: int | None = None,
            vlm_vocab: Literal["cut", "full"] = "cut", launcher: Launcher = "local",
            overrides: list[str] | None = None, n_videos: int | None = None, epochs: float | None = None,
            max_steps: int | None = None, state_dir: str | None = None, tracking_uri: str | None = None) -> dict:
    """Train VL-JEPA and a token-generating VLM on the same tokens, data, batch size and schedule,
    the VLM with twice the predictor's LM layers (the paper's ratio), once per seed; evaluate both
    at ``points`` log-spaced numbers of samples seen; plot with bands and log to MLflow.

    Args:
        seeds: default [0, 1, 2] (data order, head init).
        vlm_layers: the VLM's LM layers (default twice the predictor's).
        vlm_vocab: the VLM's output vocabulary: the training texts' tokens (as the y-decoder's) or all.
        overrides: ``KEY=VALUE`` items, as ``vljepa compare --set``.
    """
    run = RunConfig(preset=preset, launcher=launcher, state_dir=state_dir, tracking_uri=tracking_uri, progress=False,
                    overrides=length_overrides(n_videos=n_videos, epochs=epochs, max_steps=max_steps)
                    + tuple(overrides or ()))
    result = run_compare(run, points=points, vlm_vocab=vlm_vocab, seeds=tuple(seeds or (0, 1, 2)),
                         vlm_layers=vlm_layers, flow_run_id=flow_run.get_id(), stage=as_task)
    create_markdown_artifact(key="vlm-vs-jepa", markdown=f"{result.markdown}\n\nFigure: `{result.out_dir}/compare.png`; "
                             f"MLflow experiment `vljepa-compare`, runs {result.mlflow_run_ids}",
                             description="VL-JEPA vs token VLM: sample efficiency and inference cost")
    print(result.markdown)
    return {k: v for k, v in dataclasses.asdict(result).items() if k != "markdown"}
