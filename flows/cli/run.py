"""``vljepa run``: the main job in this process, without Prefect (``flows.pipeline.run_pipeline``)."""

from __future__ import annotations

import argparse
import json

from flows.cli.common import add_config_arguments, add_length_arguments, add_state_arguments, emit, run_config
from flows.resolve import ENGINES, LAUNCHERS

HELP = ("run the pretraining pipeline in this process (no Prefect needed): generate the corpus (or import "
        "--data DIR), cache frozen x-encoder tokens, train both stage-1 phases, evaluate on the held-out test split, "
        "register in MLflow")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    add_length_arguments(p)
    p.add_argument("--phase", choices=["image", "video"], default=None, help="one stage-1 phase alone (default: both)")
    p.add_argument("--launcher", default="local", choices=LAUNCHERS,
                   help="inline: train in this process; local: a submitit subprocess (default); slurm: a Slurm job")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="preprocessing engine: local threads, or a Ray Data pipeline (RAY_ADDRESS for a cluster)")
    add_state_arguments(p)
    p.add_argument("--nproc", type=int, default=1, help="ranks of each local submitit training job (gloo on CPU)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="train and evaluate on your own dataset instead of the generated corpus: a folder of "
                        "videos/images with one CSV or JSONL of annotations (path, caption[, split, label, question, "
                        "answer]), video2dataset tars, an MSR-VTT-style JSON (videos + sentences), or a corpus in "
                        "the generator's layout. Rows without a split go 80/10/10 by a hash of their clip id; "
                        "tasks the annotations cannot support are skipped with the reason")
    p.add_argument("--annotations", default=None, metavar="FILE",
                   help="with --data: the annotation file, when the folder holds several")
    p.add_argument("--allow-outside-root", action="store_true",
                   help="with --data: let rows name files outside DIR (by default a recorded failure, never opened)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def main(args: argparse.Namespace) -> int:
    from flows.pipeline import format_report, run_pipeline

    result = run_pipeline(run_config(args, launcher=args.launcher, engine=args.engine, phase=args.phase, nproc=args.nproc,
                                     data=args.data, annotations=args.annotations,
                                     allow_outside_root=args.allow_outside_root))
    emit(json.dumps(result.to_dict(), indent=2) if args.json else format_report(result))
    return 0
