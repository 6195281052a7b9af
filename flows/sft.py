"""Prefect flow ``sft`` (deployment ``full``): stage-2 supervised finetuning through the launcher.

Data preparation is a task (retries: files, ffmpeg, DuckDB); training is launched through
submitit (local subprocess here, Slurm on a cluster) and the flow waits for the job, streaming
its log lines into the flow run's logs and failing with the job's stderr if it fails.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.stages import REPO_ROOT
from flows.train_cli import TrainJobConfig, prepare_training, start_training


@task(name="prepare-sft-data", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def prepare(job: TrainJobConfig):
    return prepare_training(job)


@task(name="train-sft", cache_policy=NO_CACHE)
def train_and_wait(job: TrainJobConfig, prepared) -> dict:
    logger = get_run_logger()
    launched = start_training(job, prepared)
    logger.info("training job %s (%s) started; run directory %s", launched.job_id, job.launcher, prepared.out_dir)
    summary = launched.wait(emit=logger.info, poll_s=5.0)
    return {"checkpoint_dir": summary.checkpoint_dir, "steps": summary.steps, "resumed_from": summary.resumed_from,
            "final_loss": summary.history[-1]["loss"] if summary.history else None,
            "validation": summary.validation[-1] if summary.validation else None,
            "mlflow_run_id": summary.mlflow_run_id, "job_id": launched.job_id}


@flow(name="sft", log_prints=True)
def sft(preset: str = "small", init_from: str | None = "base", config_path: str | None = None,
        launcher: str = "local", max_steps: int | None = None, mix: str | None = None, n_draws: int | None = None,
        state_dir: str | None = None, sweep: str | None = None) -> dict:
    """Stage 2 (SFT, paper Sec. 3.2): query-conditioned finetuning from a stage-1 checkpoint.

    init_from: the stage-1 model directory (``model.safetensors`` + ``config.json``); "base" (the
        default) is the newest VL-JEPA_BASE that ``pretrain/full`` trained in the state dir; None
        starts from the pretrained LM / text-encoder parts only.
    mix: a named DuckDB data mix; None uses every VQA pair, caption and class label of the split.
    """
    if init_from == "base":
        from pathlib import Path

        from flows.stages import RunConfig
        from flows.stream_cli import latest_checkpoint

        init_from = str(latest_checkpoint(RunConfig(state_dir=state_dir).state_path()))
        print(f"continuing from VL-JEPA_BASE {Path(init_from).name}")
    overrides = (("train.max_steps", str(max_steps)),) if max_steps is not None else ()
    job = TrainJobConfig(stage="sft", preset=preset, config_path=config_path, init_from=init_from,
                         launcher=launcher, overrides=overrides, mix=mix, n_draws=n_draws, state_dir=state_dir,
                         sweep=sweep, progress=False)  # type: ignore[arg-type]
    if init_from is None:
        print("init_from not given: SFT starts from the pretrained parts, not from a stage-1 VL-JEPA model")
    return train_and_wait(job, prepare(job))


def deploy_sft(work_pool: str = "local-pool") -> str:
    """Register ``sft/full`` on ``work_pool`` with the server named by ``PREFECT_API_URL``."""
    source = sft.from_source(source=str(REPO_ROOT), entrypoint="flows/sft.py:sft")
    source.deploy(name="full", work_pool_name=work_pool, parameters={"preset": "small", "launcher": "local"},
                  description="Stage-2 SFT (VQA + captions + labels) through the submitit launcher.",
                  print_next_steps=False)
    return "sft/full"
