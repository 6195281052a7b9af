"""``vljepa train``: one stage of the two-stage recipe, launched inline, locally or on Slurm.

``run_train(job)`` is the in-process entry point (the Prefect ``sft`` flow calls it too):
resolve the stage's config (``vljepa.config.stage_config``), make sure the frozen tokens of the
train and val splits are cached (idempotent, content-addressed), launch ``TrainJob`` and wait.
``--dry-run`` prints the resolved config and the sbatch script, and touches nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vljepa.config import VLJepaConfig, get_preset, replace, stage_config


@dataclass(frozen=True, kw_only=True)
class TrainJobConfig:
    """One ``vljepa train`` invocation."""

    stage: Literal["pretrain", "sft"] = "pretrain"
    phase: Literal["image", "video"] | None = None  # stage 1 only; default "video"
    preset: str = "small"
    config_path: str | None = None  # a VLJepaConfig JSON; overrides preset
    overrides: tuple[tuple[str, str], ...] = ()  # ("train.lr", "1e-4"): values parsed as JSON, else strings
    launcher: Literal["slurm", "local", "inline"] = "local"
    local_tasks: int = 1  # ranks of a local submitit job (gloo on CPU)
    init_from: str | None = None  # checkpoint dir: stage-1 model for SFT, phase 1A for phase 1B
    out_dir: str | None = None  # run directory (resumed if it has checkpoints); default under state_dir
    state_dir: str | None = None
    mix: str | None = None  # SFT: named DuckDB data mix (preprocessing.mix); default: all SFT annotations
    n_draws: int | None = None
    validate: bool = True  # cache the val split and keep the best checkpoint by val t2v_r1
    tracking_uri: str | None = None
    experiment: str = "vljepa-train"
    sweep: str | None = None  # runs of one sweep share an experiment and a `sweep` tag
    progress: bool = True
    dry_run: bool = False


def resolve_config(job: TrainJobConfig) -> VLJepaConfig:
    cfg = VLJepaConfig.from_json(Path(job.config_path).read_text()) if job.config_path else get_preset(job.preset)
    cfg = stage_config(cfg, job.stage, job.phase, init_from=job.init_from)
    if job.overrides:
        cfg = replace(cfg, **{key: _parse_value(value) for key, value in job.overrides})
    return VLJepaConfig.from_dict(cfg.to_dict())  # re-validates the overridden keys


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@dataclass
class PreparedTraining:
    cfg: VLJepaConfig
    spec: "TrainDataSpec"  # noqa: F821 (flows.stages)
    out_dir: Path
    submitit_dir: Path
    tracking: object


def run_name(cfg: VLJepaConfig) -> str:
    return f"{cfg.train.stage}-{cfg.train.phase if cfg.train.stage == 'pretrain' else 'mix'}-{cfg.preset}"


def prepare_training(job: TrainJobConfig) -> PreparedTraining:
    """Resolve the config; cache the train (and val) split's frozen tokens (idempotent)."""
    from flows.stages import RunConfig, TrainDataSpec, cache_split_tokens, import_manifest, prepare_corpus

    cfg = resolve_config(job)
    run = RunConfig(preset=cfg.preset, state_dir=job.state_dir, tracking_uri=job.tracking_uri, progress=job.progress)
    state = run.state_path()
    name = run_name(cfg)
    state.mkdir(parents=True, exist_ok=True)
    db_path = state / "manifest.duckdb"
    corpus_dir = prepare_corpus(cfg, state, progress=job.progress)
    import_manifest(db_path, corpus_dir)
    train_cache = cache_split_tokens(cfg, db_path, state, "train", progress=job.progress)
    val_cache = cache_split_tokens(cfg, db_path, state, "val", progress=job.progress) if job.validate else None
    spec = TrainDataSpec(db_path=str(db_path), train_cache=train_cache.path,
                         val_cache=val_cache.path if val_cache else None, corpus_dir=str(corpus_dir),
                         mix=job.mix, n_draws=job.n_draws)
    return PreparedTraining(cfg=cfg, spec=spec, out_dir=Path(job.out_dir) if job.out_dir else state / "runs" / name,
                            submitit_dir=state / "submitit", tracking=_tracking(job, run, name))


def start_training(job: TrainJobConfig, prepared: PreparedTraining):
    """Launch ``TrainJob``; returns a ``flows.launch.Launched`` (``.wait()`` / ``.result()``)."""
    from flows.launch import launch

    return launch(prepared.cfg, prepared.spec, prepared.out_dir, launcher=job.launcher, folder=prepared.submitit_dir,
                  progress=job.progress, tracking=prepared.tracking, local_tasks=job.local_tasks)


def dry_run(job: TrainJobConfig) -> str:
    """The sbatch script this job would submit on Slurm."""
    from flows.launch import render_sbatch
    from flows.stages import RunConfig

    return render_sbatch(resolve_config(job), RunConfig(state_dir=job.state_dir).state_path() / "submitit")


def run_train(job: TrainJobConfig):
    """Prepare data, launch, wait; returns the ``TrainSummary``."""
    return start_training(job, prepare_training(job)).result()


def _tracking(job: TrainJobConfig, run, name: str):
    from flows.train_tracker import TrackingSpec, sweep_tracking

    base = TrackingSpec(tracking_uri=run.resolved_tracking_uri(), experiment=job.experiment,
                        run_name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}", tags={"launcher": job.launcher},
                        artifact_root=str(run.state_path() / "mlflow" / "artifacts"))
    return sweep_tracking(base, job.sweep, base.run_name or name) if job.sweep else base


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vljepa train", description=(
        "Train one stage of the VL-JEPA recipe (stage 1 pretraining: phase image then video; stage 2 SFT) "
        "on cached frozen tokens, inline, as a local submitit job or on Slurm; resumes from the run "
        "directory's last checkpoint."))
    p.add_argument("--stage", choices=["pretrain", "sft"], default="pretrain")
    p.add_argument("--phase", choices=["image", "video"], default=None, help="stage-1 phase (default: video)")
    p.add_argument("--preset", default="small", choices=["paper", "small", "tiny"])
    p.add_argument("--config", default=None, help="a VLJepaConfig JSON (`vljepa config`); overrides --preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=100 --set slurm.partition=h200")
    p.add_argument("--launcher", choices=["slurm", "local", "inline"], default="local")
    p.add_argument("--nproc", type=int, default=1, help="ranks of a local submitit job (gloo on CPU)")
    p.add_argument("--init-from", default=None, help="checkpoint dir to start from (SFT: the stage-1 model)")
    p.add_argument("--out", default=None, help="run directory (default: <state>/runs/<stage>-<phase>-<preset>)")
    p.add_argument("--state-dir", default=None)
    p.add_argument("--mix", default=None, help="SFT: a named DuckDB data mix (default: all VQA/caption/label pairs)")
    p.add_argument("--n-draws", type=int, default=None)
    p.add_argument("--no-validate", action="store_true", help="skip the val split (no best-checkpoint tracking)")
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--experiment", default="vljepa-train")
    p.add_argument("--sweep", default=None)
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the sbatch script; run nothing")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    overrides = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides.append((key, value))
    job = TrainJobConfig(stage=args.stage, phase=args.phase, preset=args.preset, config_path=args.config,
                         overrides=tuple(overrides), launcher=args.launcher, local_tasks=args.nproc,
                         init_from=args.init_from, out_dir=args.out, state_dir=args.state_dir, mix=args.mix,
                         n_draws=args.n_draws, validate=not args.no_validate, tracking_uri=args.tracking_uri,
                         experiment=args.experiment, sweep=args.sweep, dry_run=args.dry_run)
    if args.dry_run:
        print(f"# resolved config\n{resolve_config(job).to_json()}\n# sbatch script ({args.launcher} would run the same job)")
        print(dry_run(job))
        return 0
    summary = run_train(job)
    report = {"checkpoint_dir": summary.checkpoint_dir, "steps": summary.steps, "resumed_from": summary.resumed_from,
              "final_loss": summary.history[-1]["loss"] if summary.history else None,
              "validation": summary.validation[-1] if summary.validation else None,
              "mlflow_run_id": summary.mlflow_run_id, "seconds": round(summary.seconds, 1)}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
