"""``vljepa train``: one stage of the recipe through the launcher (``flows.train.run_train``)."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import add_config_arguments, add_state_arguments, run_config
from flows.resolve import LAUNCHERS

HELP = ("train one stage of the VL-JEPA recipe (stage 1 pretraining: phase image then video; stage 2 SFT) on "
        "cached frozen tokens, inline, as a local submitit job or on Slurm; resumes from the run directory's "
        "last checkpoint")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", choices=["pretrain", "sft"], default="pretrain")
    p.add_argument("--phase", choices=["image", "video"], default=None, help="stage-1 phase (default: video)")
    add_config_arguments(p)
    p.add_argument("--launcher", choices=LAUNCHERS, default="local")
    p.add_argument("--nproc", type=int, default=1, help="ranks of a local submitit job (gloo on CPU)")
    p.add_argument("--init-from", default=None, help="checkpoint dir to start from (SFT: the stage-1 model)")
    p.add_argument("--out", default=None, help="run directory (default: <state>/runs/<stage>-<phase>-<preset>)")
    add_state_arguments(p)
    p.add_argument("--mix", default=None,
                   help="a named DuckDB data mix in the manifest (`vljepa data mix create`); default: the stage's "
                        "preset: pretrain-image / pretrain-video for stage 1, sft-paper (the paper's proportions) for SFT")
    p.add_argument("--no-validate", action="store_true", help="skip the val split (no best-checkpoint tracking)")
    p.add_argument("--experiment", default="vljepa-train", help="MLflow experiment")
    p.add_argument("--sweep", default=None, help="runs of one sweep share an experiment and a `sweep` tag")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the sbatch script; run nothing")


def main(args: argparse.Namespace) -> int:
    from flows.train import TrainJobConfig, prepare_training, sbatch_script, start_training, summary_report

    job = TrainJobConfig(run=run_config(args, launcher=args.launcher, experiment=args.experiment), stage=args.stage,
                         phase=args.phase, local_tasks=args.nproc, init_from=args.init_from, out_dir=args.out,
                         mix=args.mix, validate=not args.no_validate, sweep=args.sweep)
    if args.dry_run:
        from vljepa.train import effective_batch_size

        cfg = job.model_config()
        per_node = cfg.slurm.tasks_per_node or max(cfg.slurm.gpus_per_node, 1)
        ranks = cfg.slurm.nodes * per_node
        effective = effective_batch_size(cfg, ranks)
        print(f"# resolved config\n{cfg.to_json()}")
        print(f"# on Slurm: {cfg.slurm.nodes} nodes × {per_node} tasks = {ranks} ranks, global batch {effective}" + (
            "" if effective == cfg.train.batch_size else
            f" (train.batch_size={cfg.train.batch_size} does not split evenly; the per-rank batch is rounded down)"))
        print(f"# sbatch script ({args.launcher} would run the same job)")
        print(sbatch_script(job))
        return 0
    launched = start_training(job, prepare_training(job))
    summary = launched.result()
    print(json.dumps(summary_report(summary, None if launched.job is None else launched.job_id), indent=2))
    return 0
