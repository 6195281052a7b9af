"""Flow ``sft`` (deployment ``full``): stage-2 supervised finetuning through the launcher (``flows.train``).

Data preparation is a task (retries: files, ffmpeg, DuckDB); training is launched through
submitit (local subprocess here, Slurm on a cluster) and the flow waits for the job, streaming
its log lines into the flow run's logs and failing with the job's stderr if it fails.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.resolve import Launcher, Preset, RunConfig, length_overrides
from flows.train import PreparedTraining, TrainJobConfig, latest_base_model, prepare_training, start_training, summary_report


@task(name="prepare-sft-data", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def prepare(job: TrainJobConfig) -> PreparedTraining:
    return prepare_training(job)


@task(name="train-sft", cache_policy=NO_CACHE)
def train_and_wait(job: TrainJobConfig, prepared: PreparedTraining) -> dict:
    logger = get_run_logger()
    launched = start_training(job, prepared)
    logger.info("training job %s (%s) started; run directory %s", launched.job_id, job.run.launcher, prepared.out_dir)
    return summary_report(launched.wait(emit=logger.info, poll_s=5.0), job_id=launched.job_id)


@flow(name="sft", log_prints=True)
def sft(preset: Preset = "small", init_from: str | None = "base",
        config_path: str | None = None, overrides: list[str] | None = None,
        launcher: Launcher = "local", max_steps: int | None = None,
        mix: str | None = None, state_dir: str | None = None,
        sweep: str | None = None) -> dict:
    """Stage 2 (SFT, paper Sec. 3.2): query-conditioned finetuning from a stage-1 checkpoint.

    init_from: the stage-1 model directory (``model.safetensors`` + ``config.json``); "base" (the
        default) is the newest VL-JEPA_BASE that ``pretrain/full`` trained in the state dir; None
        starts from the pretrained LM / text-encoder parts only.
    overrides: ``KEY=VALUE`` items, as ``vljepa train --set``.
    mix: a named DuckDB data mix; None uses the ``sft-paper`` preset (the paper's VQA : caption :
        classification : pretraining proportions, scaled to what the manifest holds).
    """
    run = RunConfig(preset=preset, config_path=config_path, launcher=launcher, state_dir=state_dir, progress=False,
                    overrides=length_overrides(max_steps=max_steps) + tuple(overrides or ()))
    if init_from == "base":
        init_from = str(latest_base_model(run.layout()))
        print(f"continuing from VL-JEPA_BASE {init_from}")
    elif init_from is None:
        print("init_from not given: SFT starts from the pretrained parts, not from a stage-1 VL-JEPA model")
    job = TrainJobConfig(run=run, stage="sft", init_from=init_from, mix=mix, sweep=sweep)
    return train_and_wait(job, prepare(job))
