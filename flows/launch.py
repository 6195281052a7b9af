"""Launch a training job: inline, as a local submitit subprocess, or as a Slurm job.

The same function runs in all three (``flows.job.run_training``), wrapped in ``TrainJob``, a
``submitit.helpers.Checkpointable``: on preemption or timeout Slurm signals the job, submitit
calls ``TrainJob.checkpoint`` and requeues it; the requeued job finds the run directory's last
checkpoint and resumes from it (``vljepa.train.train`` always resumes what it finds).

Slurm resources come from ``cfg.slurm``; ``render_sbatch`` shows the exact sbatch script
submitit would submit, without Slurm (``vljepa train --dry-run``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import submitit
from submitit.slurm.slurm import SlurmExecutor

from flows.job import TrainDataSpec, TrainSummary, run_training
from flows.train_tracker import TrackingSpec
from vljepa.config import VLJepaConfig

LauncherName = Literal["slurm", "local", "inline"]


def job_name(cfg: VLJepaConfig) -> str:
    return f"vljepa-{cfg.train.stage}-{cfg.train.phase if cfg.train.stage == 'pretrain' else 'mix'}-{cfg.preset}"


def signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit at which Slurm is asked to send USR2, so that submitit requeues the job
    and the next allocation resumes from its last checkpoint: 120 s (submitit's 90 plus margin), at most a
    quarter of the limit. slurmctld checks for it every 30 s and sends it when at most delay + 30 s remain,
    so it comes 0-30 s early: with half a 1-minute limit, every allocation got it at its first check, 5 s
    after starting (tests/test_slurm); a quarter leaves each allocation 15-45 s."""
    return max(1, min(120, int(time_min) * 15))


def executor_parameters(cfg: VLJepaConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(submitit's generic parameters, Slurm-only parameters without the ``slurm_`` prefix)."""
    s = cfg.slurm
    generic: dict[str, Any] = {
        "name": job_name(cfg),
        "timeout_min": int(s.time_min),  # submitit wants an int; LocalExecutor's default kills at ~2 min
        "nodes": s.nodes,
        "tasks_per_node": s.tasks_per_node or max(s.gpus_per_node, 1),  # one rank per GPU
        "cpus_per_task": s.cpus_per_task,
    }
    if s.gpus_per_node:
        generic["gpus_per_node"] = s.gpus_per_node
    if s.mem_gb is not None:
        generic["mem_gb"] = s.mem_gb
    specific: dict[str, Any] = {"signal_delay_s": signal_delay_s(s.time_min)}
    for key in ("partition", "account", "constraint", "qos"):
        if getattr(s, key) is not None:
            specific[key] = getattr(s, key)
    return generic, specific


class _RenderOnlySlurmExecutor(SlurmExecutor):
    """submitit's Slurm executor with the ``srun`` check off: renders sbatch scripts, never submits."""

    @classmethod
    def affinity(cls) -> int:
        return 1


def render_sbatch(cfg: VLJepaConfig, folder: str | Path) -> str:
    """The sbatch script submitit would submit for ``cfg`` (parameters converted by submitit itself)."""
    generic, specific = executor_parameters(cfg)
    executor = _RenderOnlySlurmExecutor(folder=str(Path(folder) / "%j"), max_num_timeout=cfg.slurm.max_requeues)
    # What AutoExecutor(cluster="slurm").update_parameters does: generic names converted by the
    # Slurm executor (timeout_min -> time, mem_gb -> "NGB", ...), then the Slurm-only ones.
    parameters = executor._convert_parameters(generic)
    parameters.update(specific)
    executor._internal_update_parameters(**parameters)
    return executor._make_submission_file_text(executor._submitit_command_str, uid="dry-run")


class TrainJob(submitit.helpers.Checkpointable):
    """The submitit job: run (or resume) training; requeued from its last checkpoint on timeout."""

    def __call__(self, cfg_json: str, spec: TrainDataSpec, out_dir: str, progress: bool = True,
                 tracking: TrackingSpec | None = None) -> TrainSummary:
        return run_training(cfg_json, spec, out_dir, progress=progress, tracking=tracking)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # Nothing to save here: training checkpoints every `train.checkpoint_every` steps and the
        # requeued job resumes from the newest complete one in `out_dir/checkpoints`.
        return submitit.helpers.DelayedSubmission(TrainJob(), *args, **kwargs)


@dataclass
class Launched:
    """A running (or finished inline) training job."""

    launcher: str
    job: submitit.Job | None = None  # None: ran inline, ``summary`` is set
    summary: TrainSummary | None = None

    @property
    def job_id(self) -> str:
        return str(self.job.job_id) if self.job is not None else "inline"

    def logs(self) -> tuple[str, str]:
        """(stdout, stderr) of the job so far ("" inline)."""
        if self.job is None:
            return "", ""
        return self.job.stdout() or "", self.job.stderr() or ""

    def wait(self, emit: Callable[[str], None] = print, poll_s: float = 5.0) -> TrainSummary:
        """Wait for the job, passing each new line of its stdout and stderr to ``emit``."""
        if self.job is not None:
            seen = [0, 0]
            while True:
                finished = self.job.done()
                for i, text in enumerate(self.logs()):
                    new, seen[i] = text[seen[i]:], len(text)
                    for line in new.splitlines():
                        if line.strip():
                            emit(f"[job {self.job_id}{' stderr' if i else ''}] {line}")
                if finished:
                    break
                time.sleep(poll_s)
        return self.result()

    def result(self) -> TrainSummary:
        """Wait for the job; its failure is raised with the tail of its stderr."""
        if self.summary is not None:
            return self.summary
        assert self.job is not None
        try:
            # A job of several tasks (ranks) has a result per task: rank 0's is the run's.
            self.summary = self.job.results()[0]
        except Exception as exc:
            stderr = self.logs()[1][-4000:]
            raise RuntimeError(f"training job {self.job_id} ({self.launcher}) failed: {exc}\n"
                               f"--- job stderr (tail), {self.job.paths.stderr} ---\n{stderr}") from exc
        return self.summary


def make_executor(cfg: VLJepaConfig, launcher: Literal["slurm", "local"], folder: str | Path, *,
                  local_tasks: int = 1) -> submitit.AutoExecutor:
    """A submitit AutoExecutor for Slurm (``cfg.slurm``) or a local subprocess (``local_tasks`` ranks)."""
    generic, specific = executor_parameters(cfg)
    if launcher == "slurm":
        executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster="slurm",
                                         slurm_max_num_timeout=cfg.slurm.max_requeues)
        executor.update_parameters(**generic, **{f"slurm_{k}": v for k, v in specific.items()})
    else:
        executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster="local",
                                         local_max_num_timeout=cfg.slurm.max_requeues)
        executor.update_parameters(name=generic["name"], timeout_min=generic["timeout_min"], nodes=1,
                                   tasks_per_node=local_tasks)
    return executor


def launch(cfg: VLJepaConfig, spec: TrainDataSpec, out_dir: str | Path, *, launcher: LauncherName,
           folder: str | Path, progress: bool = True, tracking: TrackingSpec | None = None, local_tasks: int = 1) -> Launched:
    """Start training; ``.result()`` waits for it. Inline runs in this process and returns finished."""
    args = (cfg.to_json(), spec, str(out_dir), progress, tracking)
    if launcher == "inline":
        return Launched(launcher="inline", summary=TrainJob()(*args))
    if launcher not in ("slurm", "local"):
        raise ValueError(f"unknown launcher {launcher!r}; choose slurm | local | inline")
    executor = make_executor(cfg, launcher, folder, local_tasks=local_tasks)
    job = executor.submit(TrainJob(), *args)
    print(f"submitted {launcher} job {job.job_id}: logs in {job.paths.stdout.parent}", file=sys.stderr, flush=True)
    return Launched(launcher=launcher, job=job)


def launch_array(jobs: list[tuple[VLJepaConfig, TrainDataSpec, str | Path]], *, folder: str | Path,
                 progress: bool = False) -> list[Launched]:
    """Submit several training jobs at once as one Slurm job array (an ablation sweep).

    Resources come from the first config's ``slurm`` section (a sweep's variants share them).
    """
    if not jobs:
        return []
    executor = make_executor(jobs[0][0], "slurm", folder)
    with executor.batch():
        submitted = [executor.submit(TrainJob(), cfg.to_json(), spec, str(out), progress, None) for cfg, spec, out in jobs]
    print(f"submitted a Slurm array of {len(submitted)} jobs ({submitted[0].job_id} ...)", file=sys.stderr, flush=True)
    return [Launched(launcher="slurm", job=job) for job in submitted]
