"""One stage of the two-stage recipe, launched inline, locally or on Slurm (``vljepa train``, ``sft/full``).

``run_train(job)``: resolve the stage's config (``flows.resolve``), build the stage's streamed data
mix (``flows.phase_data``: mix, cached tokens, plan; idempotent, content-addressed) and the val
split's cache, launch ``TrainJob`` and wait.
``sbatch_script(job)`` is the script Slurm would get, touching nothing.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from flows.env import StateLayout
from flows.job import TrainDataSpec, TrainSummary
from flows.resolve import RunConfig
from vljepa.config import Phase, Stage, VLJepaConfig

EXPERIMENT = "vljepa-train"


@dataclass(frozen=True, kw_only=True)
class TrainJobConfig:
    """One ``vljepa train`` invocation: what to run (``run``) and this stage's own settings."""

    run: RunConfig = field(default_factory=RunConfig)
    stage: Stage = "pretrain"
    phase: Phase | None = None  # stage 1 only; default "video"
    local_tasks: int = 1  # ranks of a local submitit job (gloo on CPU)
    init_from: str | None = None  # checkpoint dir: stage-1 model for SFT, phase 1A for phase 1B
    out_dir: str | None = None  # run directory (resumed if it has checkpoints); default under the state dir
    mix: str | None = None  # a DuckDB data mix already in the manifest; default: the stage's preset (sft-paper, ...)
    validate: bool = True  # cache the val split and keep the best checkpoint by val t2v_r1
    sweep: str | None = None  # runs of one sweep share an experiment and a `sweep` tag

    def model_config(self) -> VLJepaConfig:
        return self.run.stage_config(self.stage, self.phase, init_from=self.init_from)


@dataclass
class PreparedTraining:
    cfg: VLJepaConfig
    spec: TrainDataSpec
    out_dir: Path
    submitit_dir: Path
    tracking: object  # flows.train_tracker.TrackingSpec


def run_name(cfg: VLJepaConfig) -> str:
    return f"{cfg.train.stage}-{cfg.train.phase if cfg.train.stage == 'pretrain' else 'mix'}-{cfg.preset}"


def prepare_training(job: TrainJobConfig) -> PreparedTraining:
    """Resolve the config; build the stage's streamed data mix and cache the val split (idempotent).

    The mix is the stage / phase's preset (``flows.phase_data``), or ``job.mix`` when given (SFT).
    Everything the ranks need is written here, before the launch: they never open the manifest
    read-write (several ranks would fight for its lock).
    """
    from flows.data import cache_split_tokens, import_manifest, prepare_corpus
    from flows.phase_data import phase_plan, prepare_stills

    from flows.resolve import check_model_snapshots

    cfg = job.model_config()
    check_model_snapshots(cfg)  # a config that does not fit its LM snapshot fails now, not in the training job
    layout = job.run.layout().ensure()
    progress, engine = job.run.progress, job.run.engine
    corpus_dir = prepare_corpus(cfg, layout, progress=progress)
    import_manifest(layout.manifest, corpus_dir, generated=cfg.data.generate)
    stills = prepare_stills(layout, corpus_dir, progress=progress) if cfg.data.generate else None
    data = phase_plan(cfg, layout, mix=job.mix, preset=job.mix is None, stills_dataset=stills, progress=progress,
                      engine=engine)
    val = cache_split_tokens(cfg, layout, "val", progress=progress, engine=engine) if job.validate else None
    plan = data.plan
    if cfg.train.mode == "live":
        from flows.phase_data import live_plan

        plan = live_plan(cfg, layout, data)
    spec = TrainDataSpec(db_path=str(layout.manifest), plan=plan, val_cache=val.path if val else None,
                         corpus_dir=str(corpus_dir))
    name = run_name(cfg)
    return PreparedTraining(cfg=cfg, spec=spec, out_dir=Path(job.out_dir) if job.out_dir else layout.runs / name,
                            submitit_dir=layout.submitit, tracking=_tracking(job, layout, name))


def start_training(job: TrainJobConfig, prepared: PreparedTraining):
    """Launch ``TrainJob``; returns a ``flows.launch.Launched`` (``.wait()`` / ``.result()``)."""
    from flows.launch import launch

    return launch(prepared.cfg, prepared.spec, prepared.out_dir, launcher=job.run.launcher,
                  folder=prepared.submitit_dir, progress=job.run.progress, tracking=prepared.tracking,  # type: ignore[arg-type]
                  local_tasks=job.local_tasks)


def sbatch_script(job: TrainJobConfig) -> str:
    """The sbatch script this job would submit on Slurm."""
    from flows.launch import render_sbatch

    return render_sbatch(job.model_config(), job.run.layout().submitit)


def run_train(job: TrainJobConfig) -> TrainSummary:
    """Prepare data, launch, wait; returns the ``TrainSummary``."""
    return start_training(job, prepare_training(job)).result()


def _tracking(job: TrainJobConfig, layout: StateLayout, name: str):
    from flows.train_tracker import TrackingSpec, sweep_tracking

    base = TrackingSpec(tracking_uri=layout.tracking_uri, experiment=job.run.experiment or EXPERIMENT,
                        run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags={"launcher": job.run.launcher},
                        artifact_root=str(layout.mlflow_artifacts))
    return sweep_tracking(base, job.sweep, base.run_name or name) if job.sweep else base


def latest_base_model(layout: StateLayout) -> Path:
    """The newest stage-1 model (VL-JEPA_BASE) the main job trained (``<state>/models/pretrain-video-*``)."""
    found = sorted(glob.glob(str(layout.models / "pretrain-video-*" / "model.safetensors")), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"no stage-1 model under {layout.models}: run the main job first "
                                "(`vljepa run` or `prefect deployment run pretrain/full`), or pass a checkpoint")
    return Path(found[-1]).parent


def summary_report(summary: TrainSummary, job_id: str | None = None) -> dict:
    """The JSON that ``vljepa train`` prints and ``sft/full`` returns."""
    report = {"checkpoint_dir": summary.checkpoint_dir, "steps": summary.steps, "resumed_from": summary.resumed_from,
              "final_loss": summary.final_loss, "validation": summary.validation[-1] if summary.validation else None,
              "mlflow_run_id": summary.mlflow_run_id, "seconds": round(summary.seconds, 1)}
    if job_id is not None:
        report["job_id"] = job_id
    return report

