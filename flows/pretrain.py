"""Prefect flow ``pretrain`` (deployment ``full``): the pretraining pipeline, one task per stage."""

from __future__ import annotations

from typing import Any, Callable

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.pipeline import format_report, run_pipeline
from flows.stages import RunConfig


def as_task(name: str, fn: Callable[..., Any], io: bool) -> Callable[..., Any]:
    # Stages are content-addressed themselves, so Prefect's input-hash caching is off; I/O
    # stages (ffmpeg, files, MLflow) get retries.
    return task(fn, name=name, retries=2 if io else 0, retry_delay_seconds=5, cache_policy=NO_CACHE)


@flow(name="pretrain", log_prints=True)
def pretrain(preset: str = "small", config_path: str | None = None, n_videos: int | None = None, epochs: float | None = None,
             max_steps: int | None = None, launcher: str = "local", engine: str = "local", phase: str | None = None,
             state_dir: str | None = None) -> dict:
    """Stage-1 pretraining of VL-JEPA on the embedded default (or another preset)."""
    from prefect.runtime import flow_run

    run = RunConfig(preset=preset, config_path=config_path, n_videos=n_videos, epochs=epochs, max_steps=max_steps,
                    launcher=launcher, engine=engine, phase=phase, state_dir=state_dir, progress=False)  # type: ignore[arg-type]
    result = run_pipeline(run, stage=as_task, flow_run_id=flow_run.get_id())
    print(format_report(result))
    return result
