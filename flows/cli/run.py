"""``vljepa run``: the main job in this process, without Prefect (``flows.pipeline.run_pipeline``)."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import add_config_arguments, add_length_arguments, add_state_arguments, emit, run_config

HELP = ("run the pretraining pipeline in this process (no Prefect needed): generate the corpus, cache frozen "
        "x-encoder tokens, train both stage-1 phases, evaluate on the held-out test split, register in MLflow")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_length_arguments(p)
    p.add_argument("--phase", choices=["image", "video"], default=None, help="one stage-1 phase alone (default: both)")
    p.add_argument("--launcher", default="local", choices=["inline", "local", "slurm"],
                   help="inline: train in this process; local: a submitit subprocess (default); slurm: a Slurm job")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="preprocessing engine: local threads, or a Ray Data pipeline (RAY_ADDRESS for a cluster)")
    add_state_arguments(p)
    p.add_argument("--nproc", type=int, default=1, help="ranks of each local submitit training job (gloo on CPU)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    from flows.pipeline import format_report, run_pipeline

    result = run_pipeline(run_config(args, launcher=args.launcher, engine=args.engine, phase=args.phase, nproc=args.nproc))
    emit(json.dumps(result.to_dict(), indent=2) if args.json else format_report(result))
    return 0
